"""The report: medians over rounds, the ratio of each backend to the best peer, the goals of the
fabric issues, as Markdown tables and a PNG chart (and a summary quoted in the README)."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.backends import BACKENDS
from benchmarks.goals import GOALS, Medians, Verdict
from benchmarks.workloads import BY_KEY, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
README_START = "<!-- benchmarks:start -->"
README_END = "<!-- benchmarks:end -->"
BACKEND_WORKLOADS = {backend.name: backend.workloads for backend in BACKENDS}
#: Above this round-to-round spread (see ``spread``), the report warns that it is noisy.
NOISY_SPREAD = 1.15
COLOURS = {"multi": "#1f77b4", "peer": "#ff7f0e", "limit": "#2ca02c"}

#: Per workload, the secondary figures shown beside the headline one: (metric, heading, format).
EXTRAS: dict[str, list[tuple[str, str, str]]] = {
    "noop": [("rate", "commands/s", "{:,.0f}")],
    "map": [("rate", "calls/s", "{:,.0f}")],
    "latency": [("p99", "p99 µs", "{:,.0f}")],
    "latency_wide": [("p99", "p99 µs", "{:,.0f}")],
    "arrays": [("mib_per_s", "MiB/s (both ways)", "{:,.0f}")],
    "arrays_after_tiny": [
        ("mib_per_s", "MiB/s (both ways)", "{:,.0f}"),
        ("slowdown", "÷ after arrays (paired)", "{:.2f}"),
    ],
    "balance": [("ideal", "ideal s", "{:.3f}"), ("efficiency", "efficiency", "{:.2f}")],
    "sleep": [("ideal", "ideal s", "{:.3f}"), ("efficiency", "efficiency", "{:.2f}")],
    "cpu": [
        ("speedup", "speed-up over multi uni", "{:.2f}"),
        ("parallelism", "work / wall", "{:.2f}"),
    ],
    "uneven": [("ideal", "ideal s", "{:.3f}"), ("over_ideal", "wall / ideal", "{:.2f}")],
    "example": [],
    "queue": [
        ("us_per_command", "µs/command", "{:.2f}"),
        ("bytes_per_command", "bytes/command", "{:,.0f}"),
    ],
    "master_cpu": [("wall", "wall s", "{:.2f}")],
    "million": [
        ("ratio", "run / create+queue", "{:.2f}"),
        ("master_us_per_command", "master's own µs/command", "{:.2f}"),
        ("bytes_per_command", "queue bytes/command", "{:,.0f}"),
        ("peak_over_queued", "peak / queued", "{:.2f}"),
        ("growth_mib", "growth over a run, MiB", "{:.2f}"),
    ],
}  # fmt: skip


# Figures ------------------------------------------------------------------------------------


def medians(results: dict[str, Any]) -> Medians:
    """The median of each metric over the rounds that measured it, per (workload, backend)."""
    series: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in results["runs"]:
        if "value" not in run:
            continue
        for metric, figure in run.items():
            if metric not in ("round", "backend", "workload") and isinstance(figure, int | float):
                series[(run["workload"], run["backend"])][metric].append(float(figure))
    found = {
        cell: {metric: statistics.median(values) for metric, values in metrics.items()}
        for cell, metrics in series.items()
    }
    uni = found.get(("cpu", "multi-uni"))
    for (workload, _), figures in found.items():
        if workload == "cpu" and uni:
            figures["speedup"] = uni["value"] / figures["value"]
        if workload == "cpu" and "work" in figures:
            figures["parallelism"] = figures["work"] / figures["value"]
    return found


def rounds_measured(results: dict[str, Any]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for run in results["runs"]:
        if "value" in run:
            counts[(run["workload"], run["backend"])] += 1
    return counts


def problems(results: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The last error or reason for absence of each cell that has one."""
    found = {}
    for run in results["runs"]:
        text = run.get("error") or run.get("unavailable")
        if text:
            found[(run["workload"], run["backend"])] = text
    return found


def best_peer(results: dict[str, Any], figures: Medians, workload: str) -> tuple[str, float] | None:
    """The peer with the lowest median on a workload (every headline figure: lower is better)."""
    peers = [
        (figures[(workload, name)]["value"], name)
        for name, about in results["backends"].items()
        if about["kind"] == "peer" and (workload, name) in figures
    ]
    if not peers:
        return None
    value, name = min(peers)
    return name, value


def verdicts(figures: Medians) -> list[tuple[Any, Verdict]]:
    return [(goal, goal.check(figures)) for goal in GOALS]


# Markdown -----------------------------------------------------------------------------------


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def goals_table(results: dict[str, Any], figures: Medians, details: str = "see below") -> list[str]:
    rows = []
    for goal, verdict in verdicts(figures):
        label = results["backends"].get(goal.backend, {}).get("label", goal.backend)
        unavailable = results["backends"].get(goal.backend, {}).get("unavailable")
        status = f"not available ({details})" if unavailable else verdict.status
        rows.append(
            [label, goal.text, verdict.figure, f"**{status}**" if status == "met" else status]
        )
    return _table(["fabric", "goal", "measured", "status"], rows)


def workload_section(results: dict[str, Any], figures: Medians, key: str) -> list[str]:
    workload = BY_KEY[key]
    best = best_peer(results, figures, key)
    counts = rounds_measured(results)
    troubles = problems(results)
    goal_notes: dict[str, list[str]] = defaultdict(list)
    for goal, verdict in verdicts(figures):
        if goal.workload == key:
            goal_notes[goal.backend].append(f"{goal.text}: {verdict.figure}, {verdict.status}")
    extras = EXTRAS[key]
    header = ["backend", "kind", f"median {workload.unit}"]
    header += [heading for _, heading, _ in extras]
    header += ["÷ best peer", "rounds", "goal"]
    rows = []
    measured = [
        (figures[(key, name)]["value"], name)
        for name in results["backends"]
        if (key, name) in figures
    ]
    for value, name in sorted(measured):
        about = results["backends"][name]
        cell = figures[(key, name)]
        row = [about["label"], about["kind"], _figure(value)]
        row += [fmt.format(cell[metric]) if metric in cell else "—" for metric, _, fmt in extras]
        ratio = "—" if best is None else _ratio(value / best[1])
        if best is not None and name == best[0]:
            ratio += " (best peer)"
        row += [ratio, str(counts[(key, name)]), "; ".join(goal_notes.get(name, []))]
        rows.append(row)
    for name, about in results["backends"].items():
        if (key, name) in figures or key not in BACKEND_WORKLOADS.get(name, ()):
            continue
        reason = "not available (see below)" if about["unavailable"] else troubles.get((key, name))
        if reason is None:
            continue
        blank = ["—"] * (len(extras) + 2)
        goal = "; ".join(goal_notes.get(name, []))
        rows.append([about["label"], about["kind"], reason, *blank, goal])
    heading = workload.heading(results["params"].get(key))
    lines = [
        f"## {heading}",
        "",
        f"Headline figure: {workload.metric}, in {workload.unit} (lower is better).",
    ]
    if workload.notes:
        lines.append(f"Note: {workload.notes}.")
    params = results["params"].get(key)
    if params:
        lines.append(
            "Parameters: " + ", ".join(f"{k} = {_param(v)}" for k, v in params.items()) + "."
        )
    lines.append("")
    if rows:
        lines += _table(header, rows)
    else:
        lines.append("Not run.")
    return lines


def _param(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, float) and value > 1000 else str(value)


def _spread_text(results: dict[str, Any]) -> str:
    disagreement = spread(results)
    return "— (one round)" if disagreement is None else f"{disagreement:.2f} (slowest / fastest)"


def machine_table(results: dict[str, Any]) -> list[str]:
    info = results["machine"]
    rows = [
        ["cores", f"{info['cores']} ({info['usable_cores']} usable)"],
        ["CPU", info["cpu"]],
        ["system", info["system"]],
        ["Python", info["python"]],
        ["multiprocessing start method (peers)", info["start_method"]],
        ["MPI library", info["mpi_library"]],
        ["load average at start / end", f"{info['load_average']} / {info.get('load_average_end')}"],
        ["spin calibration", f"{results['spin_rate']:,.0f} loop iterations/s"],
        ["round-to-round spread (median cell)", _spread_text(results)],
    ]
    rows += [[package, version] for package, version in info["versions"].items()]
    return _table(["", ""], rows)


METHOD = """\
- Every cell (one backend on one workload; in quick mode, one backend on all its workloads)
  runs in a fresh process, started by the harness,
  under `mpiexec` for the MPI backends. Inside it the backend starts its workers and warms
  them up (two short naps per worker; before the arrays, a few tiny arrays each, so that
  every worker has imported numpy), and only then is the workload timed: pool start-up,
  interpreter start-up and shutdown are **not** in the figures (except for the example
  application, which is timed as a whole program).
- Each round runs every cell once, in an order shuffled per round, so that a slow spell on a
  shared machine hits every backend alike; the tables give the median over the rounds.
- Every backend has 2 workers (multi: 2 slaves), the master or the caller being a third
  process, but on the workloads of sleeping commands and of round trips on 16 slaves, which
  run 16. MPI backends run as
  `mpiexec -n 3` (1 master + 2 workers; 17 ranks for 16), the raw ping-pong as `mpiexec -n 2`.
  With 3 MPI ranks on 2 cores, a rank that waits in a blocking MPI call polls the CPU
  (MPICH's default), which costs the tools that wait that way.
- "÷ best peer" is the backend's median over the best peer's on the same workload (below 1:
  faster than every peer). Peers are used as their documentation shows, with their defaults
  (`map` with its default chunk size, `submit(...).result()` for one call, mpi4py.futures
  with its default idle backoff of 1 ms); only
  `multiprocessing.Pool` also runs with a tuned chunk size (the one `Pool.map` picks). The raw
  pipe and raw MPI rows are the floors of their transports, not peers; the raw processes row
  (plain processes, each sent an equal share of the CPU-bound work at once) is what the
  machine itself gives for two processes, which bounds every speed-up over uni.
- CPU-bound work is a fixed number of loop iterations, calibrated once per run, so every
  backend does the same work; the ideal for unequal commands is the work the commands measured
  on their workers, divided by the number of workers.
- The master's CPU use is the CPU time of the master process (all its threads, not its
  children) over the wall time while the workers run long commands.
"""


def markdown(results: dict[str, Any], png_name: str = "benchmarks.png") -> str:
    figures = medians(results)
    quick = results["mode"] == "quick"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{'make bench-quick' if quick else 'make bench'}` on {results['started']}: "
        f"{results['mode']} mode, {results['rounds']} round(s), {len(results['runs'])} "
        f"measurements in {results['seconds']:.0f} s. Regenerate it rather than edit it.",
        "",
        "To reproduce: `make bench` (the full run, about 25 minutes on 2 cores, writes this "
        "file, `docs/benchmarks.png` and the README's summary) or `make bench-quick` (a check in "
        "about a minute with small sizes, written under `results/`). Raw figures of every round "
        "are kept in `results/benchmarks-<mode>.json`.",
        "",
    ]
    busy = busy_machine(results)
    if busy:
        lines += [f"**{busy}**", ""]
    if quick:
        lines += [
            "**Quick mode: small sizes and one round; the figures are a smoke test, not results.**",
            "",
        ]
    lines += ["## Goals of the fabric issues", "", *goals_table(results, figures), ""]
    lines += [f"![Benchmarks: each backend's median per workload]({png_name})", ""]
    for workload in WORKLOADS:
        if workload.key in results["params"]:
            lines += [*workload_section(results, figures, workload.key), ""]
    lines += not_available(results)
    lines += ["## Method", "", METHOD, "## Machine", "", *machine_table(results), ""]
    return "\n".join(lines)


def spread(results: dict[str, Any]) -> float | None:
    """How much the rounds disagree: the median over cells of (slowest / fastest round).

    On a quiet machine it stays near 1; other work sharing the cores pushes it up. It is
    measured rather than guessed from the load average, which the benchmark raises itself.
    """
    series: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in results["runs"]:
        if run.get("value", 0) > 0:
            series[(run["workload"], run["backend"])].append(run["value"])
    ratios = [max(values) / min(values) for values in series.values() if len(values) > 1]
    return statistics.median(ratios) if ratios else None


def busy_machine(results: dict[str, Any]) -> str | None:
    """A warning when the rounds disagree enough that the machine was evidently shared."""
    disagreement = spread(results)
    if disagreement is None or disagreement <= NOISY_SPREAD:
        return None
    return (
        f"The rounds of this run disagree (slowest / fastest round: {disagreement:.2f} in the "
        f"median cell), so the machine was shared: these figures are noisy; regenerate them "
        f"on a quiet machine."
    )


def not_available(results: dict[str, Any]) -> list[str]:
    """Backends that could not run here, and cells that failed, each with its reason."""
    lines = [
        f"- {about['label']}: {about['unavailable']}"
        for about in results["backends"].values()
        if about["unavailable"]
    ]
    figures = medians(results)
    for (key, name), reason in sorted(problems(results).items()):
        if (key, name) not in figures:
            lines.append(f"- {results['backends'][name]['label']}, {BY_KEY[key].short}: {reason}")
    return ["## Not available", "", *lines, ""] if lines else []


#: multi's fabrics whose slaves are processes, as the README's table shows them.
MULTI_PROCESS_FABRICS = ("multi-multiprocessing", "multi-mpi4py", "multi-pvm")


def readme_summary(results: dict[str, Any]) -> str:
    """The part of the report quoted in the README: the goals and, per workload, multi's
    process fabrics beside the best peer."""
    figures = medians(results)
    rows = []
    for workload in WORKLOADS:
        key = workload.key
        if key not in results["params"]:
            continue
        best = best_peer(results, figures, key)
        cells = []
        for name in MULTI_PROCESS_FABRICS:
            cell = figures.get((key, name))
            if cell is None:
                cells.append("—")
            elif best is None:
                cells.append(_figure(cell["value"]))
            else:
                cells.append(f"{_figure(cell['value'])} ({_ratio(cell['value'] / best[1])}×)")
        peer = (
            "—" if best is None else f"{_figure(best[1])} ({results['backends'][best[0]]['label']})"
        )
        heading = workload.heading(results["params"].get(key))
        rows.append([f"{heading} ({workload.unit})", *cells, peer])
    lines = [
        f"Medians of {results['rounds']} rounds, {results['machine']['cores']} cores "
        f"({results['machine']['cpu']}), {results['started']}; lower is better, and (n×) is the "
        "ratio to the best peer. Details, method and machine: "
        "[docs/benchmarks.md](docs/benchmarks.md).",
        "",
        *_table(
            ["workload", *(name.replace("-", " ") for name in MULTI_PROCESS_FABRICS), "best peer"],
            rows,
        ),
        "",
        *goals_table(results, figures, details="see docs/benchmarks.md"),
    ]
    busy = busy_machine(results)
    if busy:
        lines[1:1] = ["", f"**{busy}**"]
    return "\n".join(lines)


# Chart --------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """One panel per workload: each backend's median, coloured by kind (multi, peer, limit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    figures = medians(results)
    keys = [w.key for w in WORKLOADS if w.key in results["params"]]
    columns = 2
    rows = max(1, -(-len(keys) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(14, 3.2 * rows), squeeze=False)
    for axis, key in zip(axes.flat, keys, strict=False):
        bars = sorted(
            (figures[(key, name)]["value"], about["label"], about["kind"])
            for name, about in results["backends"].items()
            if (key, name) in figures
        )
        axis.set_title(BY_KEY[key].short, fontsize=10)
        if not bars:
            axis.text(0.5, 0.5, "not available", ha="center", va="center", transform=axis.transAxes)
            axis.set_axis_off()
            continue
        values = [value for value, _, _ in bars]
        axis.barh(range(len(bars)), values, color=[COLOURS[kind] for _, _, kind in bars])
        axis.set_yticks(range(len(bars)), [label for _, label, _ in bars], fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(f"{BY_KEY[key].unit} (lower is better)", fontsize=8)
        if min(values) > 0 and max(values) / min(values) > 50:
            axis.set_xscale("log")
        axis.tick_params(axis="x", labelsize=8)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_axis_off()
    figure.legend(
        handles=[Patch(color=colour, label=kind) for kind, colour in COLOURS.items()],
        loc="lower center",
        ncols=3,
    )
    figure.suptitle(
        f"multi and its peers: medians of {results['rounds']} round(s), {results['mode']} mode, "
        f"{results['machine']['cores']} cores",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0.03, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# Writing ------------------------------------------------------------------------------------


def write(results: dict[str, Any], output: Path, readme: Path | None = None) -> None:
    """Write the Markdown report and its chart beside it; refresh the README's summary."""
    output.parent.mkdir(parents=True, exist_ok=True)
    png = output.with_suffix(".png")
    output.write_text(markdown(results, png.name) + "\n")
    chart(results, png)
    if readme is not None and readme.exists():
        text = readme.read_text()
        block = f"{README_START}\n{readme_summary(results)}\n{README_END}"
        pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip("\n") + "\n\n## Performance\n\n" + block + "\n"
        readme.write_text(text)


def main(argv: list[str] | None = None) -> None:
    """Render the report again from saved raw results, without measuring anything."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="raw results, e.g. results/benchmarks-full.json")
    parser.add_argument(
        "--output", type=Path, default=DOC, help=f"default: {DOC.relative_to(ROOT)}"
    )
    parser.add_argument("--readme", type=Path, help="a README whose summary to refresh")
    args = parser.parse_args(argv)
    write(json.loads(args.results.read_text()), args.output, args.readme)


if __name__ == "__main__":
    main()
