"""Benchmarks of ``multi`` against the tools its users would otherwise pick.

``python -m benchmarks`` (``make bench``) runs every backend on every workload, each cell in
a fresh process, over several interleaved rounds, and writes ``docs/benchmarks.md`` and
``docs/benchmarks.png``; ``--quick`` is a one-minute check that writes under ``results/``.

Modules, one job each: ``tasks`` (what the workers run), ``workloads`` (the seven workloads and
their sizes), ``backends`` (how each tool runs a workload), ``child`` (one measured process),
``machine`` (what the figures were measured on), ``run`` (the harness), ``goals`` (the fabric
issues' targets) and ``report`` (Markdown and chart).
"""
