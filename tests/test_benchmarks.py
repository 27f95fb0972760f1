"""The benchmark machinery works: planning, a measurement in process, goals, and the report.

No timing is asserted here: the figures themselves belong to ``make bench``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import report, run
from benchmarks.backends import BY_NAME, Multi
from benchmarks.child import job
from benchmarks.goals import GOALS
from benchmarks.workloads import BY_KEY, uneven_iterations
from multi.mpi4py_processor import MPICH_MEMORY, named_mpi_memory


def synthetic_results() -> dict[str, Any]:
    """Two rounds of a small run: multi against two peers and a limit, one failure, and one
    backend not available."""
    names = [
        "multi-uni",
        "multi-multiprocessing",
        "multi-mpi4py",
        "pool-1",
        "ppe",
        "raw-pipe",
    ]
    figures = {
        ("noop", "multi-multiprocessing"): [0.10, 0.12],
        ("noop", "pool-1"): [0.40, 0.44],
        ("noop", "ppe"): [2.0, 2.2],
        ("latency", "multi-multiprocessing"): [60.0, 80.0],
        ("latency", "raw-pipe"): [30.0, 30.0],
        ("latency", "pool-1"): [200.0, 220.0],
        ("cpu", "multi-uni"): [3.2, 3.2],
        ("cpu", "multi-multiprocessing"): [1.65, 1.7],
        ("cpu", "pool-1"): [1.66, 1.7],
        ("master_cpu", "multi-multiprocessing"): [0.5, 0.7],
        ("master_cpu", "pool-1"): [0.4, 0.4],
    }
    runs: list[dict[str, Any]] = []
    for (workload, backend), values in figures.items():
        for round_number, value in enumerate(values, start=1):
            extra = {"p99": value * 2} if workload == "latency" else {}
            runs.append(
                {"round": round_number, "backend": backend, "workload": workload, "value": value}
                | extra
            )
    runs.append({"round": 1, "backend": "ppe", "workload": "cpu", "error": "timed out after 9 s"})
    runs.append(
        {"round": 1, "backend": "multi-multiprocessing", "workload": "example", "unavailable": "no"}
    )
    keys = ["noop", "latency", "cpu", "example", "master_cpu"]
    return {
        "mode": "full",
        "rounds": 2,
        "started": "2026-01-01 00:00:00 UTC",
        "seconds": 12.0,
        "machine": {
            "cores": 2,
            "usable_cores": 2,
            "cpu": "a test CPU",
            "system": "Linux",
            "python": "CPython 3.11",
            "start_method": "fork",
            "versions": {"multi-fabric": "0.1.0"},
            "mpi_library": "none",
            "load_average": [0.1, 0.1, 0.1],
            "load_average_end": [0.2, 0.1, 0.1],
        },
        "spin_rate": 2.5e7,
        "params": {key: BY_KEY[key].params(quick=False) for key in keys},
        "backends": {
            name: {
                "label": BY_NAME[name].label,
                "kind": BY_NAME[name].kind,
                "unavailable": "no MPI fabric yet" if name == "multi-mpi4py" else None,
            }
            for name in names
        },
        "runs": runs,
    }


def test_medians_best_peer_and_goals() -> None:
    results = synthetic_results()
    figures = report.medians(results)
    assert figures[("noop", "pool-1")]["value"] == pytest.approx(0.42)
    assert figures[("cpu", "multi-multiprocessing")]["speedup"] == pytest.approx(3.2 / 1.675)
    assert report.best_peer(results, figures, "noop") == ("pool-1", pytest.approx(0.42))
    verdicts = {(goal.backend, goal.workload): v for goal, v in report.verdicts(figures)}
    assert verdicts[("multi-multiprocessing", "noop")].status == "not met"  # 0.42 / 0.11 = 3.8
    assert verdicts[("multi-multiprocessing", "latency")].status == "not met"  # 70 / 30
    assert verdicts[("multi-multiprocessing", "cpu")].status == "met"
    assert verdicts[("multi-multiprocessing", "master_cpu")].figure == "0.60 %"
    assert verdicts[("multi-mpi4py", "noop")].status.startswith("not measured")
    assert {goal.backend for goal in GOALS} == {
        "multi-multiprocessing",
        "multi-mpi4py",
        "multi-thread",
        "multi-uni",
        "multi-executor",
    }
    assert report.spread(results) == pytest.approx(1.1)  # the median of 11 cells


def test_markdown_has_a_table_per_workload_and_the_goals() -> None:
    results = synthetic_results()
    text = report.markdown(results)
    for key, params in results["params"].items():
        assert f"## {BY_KEY[key].heading(params)}" in text
    assert "| multi multiprocessing | no-op rate ≥ 4" in text
    assert "1.00 (best peer)" in text
    assert "timed out after 9 s" in text
    assert "- multi mpi4py: no MPI fabric yet" in text
    assert "a test CPU" in text


def test_write_renders_the_chart_and_the_readme_summary(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nold\n{report.README_END}\n\nafter\n")
    output = tmp_path / "docs" / "benchmarks.md"
    report.write(synthetic_results(), output, readme)
    assert output.read_text().startswith("# Benchmarks")
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = readme.read_text()
    assert "old" not in summary and summary.endswith("after\n")
    assert "| workload | multi multiprocessing | multi mpi4py | multi pvm | best peer |" in summary


def test_plan_groups_cells_per_backend_in_quick_mode() -> None:
    backends = [BY_NAME["multi-uni"], BY_NAME["raw-pipe"]]
    keys = ["noop", "latency", "example"]
    full = run.plan(backends, keys, quick=False)
    quick = run.plan(backends, keys, quick=True)
    assert [(c.backend.name, c.workloads) for c in full] == [
        ("multi-uni", ("noop",)),
        ("multi-uni", ("latency",)),
        ("multi-uni", ("example",)),
        ("raw-pipe", ("latency",)),
    ]
    assert [(c.backend.name, c.workloads) for c in quick] == [
        ("multi-uni", ("noop", "latency")),
        ("multi-uni", ("example",)),
        ("raw-pipe", ("latency",)),
    ]


def test_child_jobs_measure_on_the_uni_fabric() -> None:
    """The in-process path of a child: a multi runner running tiny versions of the workloads."""
    spin = {"spin_rate": 1e5}
    jobs = [
        job("noop", {"count": 20}),
        job("latency", {"count": 5}),
        job("arrays", {"count": 2, "mib": 1}),
        job("uneven", {"count": 3, "mean": 0.001, "seed": 6, **spin}),
        job("queue", {"count": 50}),
    ]
    results = Multi(1, "uni").run(jobs)
    assert [r["workload"] for r in results] == ["noop", "latency", "arrays", "uneven", "queue"]
    for result in results:
        assert "error" not in result, result
        assert result["value"] >= 0
    assert results[4]["bytes_per_command"] > 0


def test_uneven_lengths_are_fixed_by_the_seed() -> None:
    params = {"count": 5, "mean": 0.05, "seed": 6, "spin_rate": 1e6}
    assert uneven_iterations(params) == uneven_iterations(dict(params))
    assert len(set(uneven_iterations(params))) == 5


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm")
def test_what_a_cell_leaves_of_mpi_memory_is_removed_unless_a_process_maps_it() -> None:
    import mmap
    import os

    before = named_mpi_memory()
    prefix = os.fsdecode(MPICH_MEMORY)
    left, mapped = Path(f"{prefix}test_left_{os.getpid()}"), Path(f"{prefix}test_{os.getpid()}")
    for path in (left, mapped):
        path.write_bytes(b"\0" * mmap.PAGESIZE)
    try:
        with mapped.open("r+b") as file, mmap.mmap(file.fileno(), 0):
            assert run.remove_left_mpi_memory(before) == [str(left)]
            assert mapped.exists() and not left.exists()
    finally:
        for path in (left, mapped):
            path.unlink(missing_ok=True)
