"""Where the time of a run went: a Chrome trace of every command, and a Gantt chart of it.

With the option ``timeline=FILE`` (launcher: ``--timeline FILE``) the engine notes, for every
batch, when it left the master and, from the slave's report, when each of its commands ran;
when results were delivered on the master; the retries and deaths of slaves, and the slaves
stopped by the timeout. The file is a Chrome trace (JSON ``traceEvents``), which Perfetto
(ui.perfetto.dev) and chrome://tracing open: one track per slave with a span (``"ph": "X"``)
per command, named by its class and number, and a track for the master's dispatch and
delivery, with retries, deaths and stops as instant events; each event says which run of the
program it belongs to (``args.run``, from 1). The processors of a program that name the same
file share its trace. The file is written at each run's end, by adding that run's events to
it, and when the slaves stop: a program that ran no command leaves an empty trace, not an
older program's.

The spans of a batch's commands are laid end to end from the time the batch started on its
slave, by the slave's clock (a slave on another host may disagree with the master's by its
clock's offset).

    python -m multi.timeline FILE --png OUT.png     # the trace as a Gantt chart (matplotlib)
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multi.statistics import kind

MASTER_TRACK = 0
PROCESS_ID = 1
#: How the chart marks each kind of instant, and what its legend calls it.
MARKS = {
    "death": ("x", "a slave died"),
    "retry": ("+", "a command runs again"),
    "timeout": ("v", "a slave stopped by the timeout"),
    "silent": ("^", "a slave stopped for its silence"),
}


#: How the file ends: new events are written over it, and it again after them, so that the file
#: is whole JSON after each write, and each run costs the writing of its own events only.
TAIL = b"\n]}\n"


class Timeline:
    """The events of a program's runs, kept until they are added to the file at ``path``."""

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> Timeline:
        """The program's timeline for the file ``path``: every processor that names it adds
        to it (an executor that joblib makes again after a failure, say)."""
        key = os.path.abspath(path)
        with _timelines_lock:
            timeline = _timelines.get(key)
            if timeline is None:
                timeline = _timelines[key] = cls(path)
        return timeline

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.events: list[dict[str, Any]] = []  # (not written yet)
        self._tracks: set[int] = set()
        #: The file as the last write left it (inode, size), once it holds the trace's head.
        self._file: tuple[int, int] | None = None
        self.run = 0  # the program's runs so far
        #: Processors of two threads may note and write at once (a nested Parallel's).
        self._lock = threading.RLock()

    def begin_run(self) -> None:
        """A run starts: the events from now on are its own."""
        with self._lock:
            self.run += 1

    # Notes from the engine -----------------------------------------------------------------

    def sent(self, rank: int, indices: Sequence[int], nbytes: int) -> None:
        """A batch left the master."""
        self._instant(MASTER_TRACK, f"batch of {len(indices)} to slave {rank}", "dispatch",
                      {"slave": rank, "first command": indices[0] if indices else None,
                       "bytes": nbytes})  # fmt: skip

    def ran(self, rank: int, indices: Sequence[int], commands: Sequence[Any], report: Any) -> None:
        """A slave's report: a span per command it finished, laid end to end from its start."""
        start = report.started
        with self._lock:
            self._track(rank)
            for position, seconds in enumerate(report.seconds):
                index = indices[position]
                command = commands[index]
                failed = report.failures is not None and position in report.failures
                self.events.append({
                    "name": f"{kind(command)} {index}",
                    "cat": "failed" if failed else "command",
                    "ph": "X", "ts": start * 1e6, "dur": seconds * 1e6,
                    "pid": PROCESS_ID, "tid": rank,
                    "args": {"command": index, "class": type(command).__qualname__,
                             "run": self.run},
                })  # fmt: skip
                start += seconds

    def stopped(self, rank: int, index: int, command: Any, seconds: float) -> None:
        """A command that its slave was stopped under, after ``seconds`` (a timeout): its span,
        up to now, and the stop of its slave (a stop by the engine, not a death)."""
        with self._lock:
            self._track(rank)
            self.events.append({
                "name": f"{kind(command)} {index}", "cat": "failed", "ph": "X",
                "ts": (time.time() - seconds) * 1e6, "dur": seconds * 1e6,
                "pid": PROCESS_ID, "tid": rank,
                "args": {"command": index, "class": type(command).__qualname__, "stopped": True,
                         "run": self.run},
            })  # fmt: skip
            self._instant(rank, f"slave {rank} stopped by the timeout", "timeout",
                          {"command": index, "seconds": seconds})  # fmt: skip

    def delivered(self, start: int, stop: int, began: float) -> None:
        """Results of commands ``start`` to ``stop`` ran on the master from ``began`` on."""
        now = time.time()
        with self._lock:
            self._track(MASTER_TRACK)
            self.events.append({
                "name": f"deliver {start}" if stop == start + 1 else f"deliver {start}-{stop - 1}",
                "cat": "deliver", "ph": "X", "ts": began * 1e6, "dur": (now - began) * 1e6,
                "pid": PROCESS_ID, "tid": MASTER_TRACK, "args": {"run": self.run},
            })  # fmt: skip

    def retried(self, rank: int, index: int, attempts: int) -> None:
        self._instant(rank, f"retry of command {index}", "retry", {"attempts": attempts})

    def lost(self, rank: int, reason: str) -> None:
        """A slave died (see ``stopped`` for one that the timeout stopped, ``silenced`` for one
        stopped by the liveness bound)."""
        self._instant(rank, f"slave {rank} lost", "death", {"reason": reason})

    def silenced(self, rank: int, seconds: float) -> None:
        """A slave that showed no sign of life for ``seconds`` was stopped (a stop by the
        engine, not a death)."""
        self._instant(rank, f"slave {rank} stopped for its silence", "silent",
                      {"seconds": seconds})  # fmt: skip

    def _instant(self, track: int, name: str, category: str, args: dict[str, Any]) -> None:
        with self._lock:
            self._track(track)
            self.events.append({
                "name": name, "cat": category, "ph": "i", "s": "t", "ts": time.time() * 1e6,
                "pid": PROCESS_ID, "tid": track, "args": {**args, "run": self.run},
            })  # fmt: skip

    def _track(self, track: int) -> None:
        if track in self._tracks:
            return
        self._tracks.add(track)
        name = "master" if track == MASTER_TRACK else f"slave {track}"
        self.events.append({"name": "thread_name", "ph": "M", "pid": PROCESS_ID, "tid": track,
                            "args": {"name": name}})  # fmt: skip
        self.events.append({"name": "thread_sort_index", "ph": "M", "pid": PROCESS_ID,
                            "tid": track, "args": {"sort_index": track}})  # fmt: skip

    # The file ------------------------------------------------------------------------------

    def write(self) -> None:
        """Add the events noted since the last write to the file (begun, the first time, with
        the trace's head, over whatever file was there; so too where the file is no longer
        the one this timeline wrote). The events stay to be written again if it fails."""
        with self._lock:
            if self._file is not None and not self.events:
                return
            events = json.dumps(self.events)[1:-1]  # (one call: the list, without its brackets)
            if self._file is None or not self._add(events):
                self._begin(events)
            self.events = []

    def _begin(self, events: str) -> None:
        head = {"name": "process_name", "ph": "M", "pid": PROCESS_ID, "args": {"name": "multi"}}
        text = f'{{"displayTimeUnit": "ms", "traceEvents": [\n{json.dumps(head)}'
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        temporary.write_bytes(f"{text}{', ' if events else ''}{events}".encode() + TAIL)
        temporary.replace(self.path)
        found = os.stat(self.path)
        self._file = found.st_ino, found.st_size

    def _add(self, events: str) -> bool:
        """Write ``events`` over the file's tail, and the tail after them; False where the file
        is gone, or is no longer as this timeline left it (another program wrote it)."""
        try:
            file = open(self.path, "r+b")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return False
        with file:
            found = os.fstat(file.fileno())
            if (found.st_ino, found.st_size) != self._file:
                return False
            file.seek(-len(TAIL), os.SEEK_END)
            file.write(f", {events}".encode() + TAIL)
            file.flush()
            found = os.fstat(file.fileno())
        self._file = found.st_ino, found.st_size
        return True


#: The program's timelines, by the absolute path of their files (``Timeline.of``).
_timelines: dict[str, Timeline] = {}
_timelines_lock = threading.Lock()


def draw(trace_path: str | os.PathLike[str], png: str | os.PathLike[str]) -> None:
    """Draw a trace as a Gantt chart: a row per track, a bar per span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = json.loads(Path(trace_path).read_text())
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    instants = [e for e in events if e.get("ph") == "i"]
    if not spans:
        raise ValueError(f"{trace_path} has no spans to draw")
    origin = min(e["ts"] for e in spans)
    tracks = sorted(names)
    row = {track: len(tracks) - 1 - i for i, track in enumerate(tracks)}
    colours = {"command": "#1f77b4", "failed": "#d62728", "deliver": "#2ca02c"}
    figure, axis = plt.subplots(figsize=(10, 1 + 0.4 * len(tracks)))
    for category, colour in colours.items():
        chosen = [e for e in spans if e["cat"] == category]
        for track in tracks:
            bars = [((e["ts"] - origin) / 1e6, e["dur"] / 1e6) for e in chosen if e["tid"] == track]
            if bars:
                axis.broken_barh(bars, (row[track] - 0.4, 0.8), facecolors=colour,
                                 edgecolor="white", linewidth=0.3)  # fmt: skip
    marked: dict[str, Any] = {}  # (a legend entry per kind of mark drawn)
    for event in instants:
        if event["cat"] in MARKS:
            marker, label = MARKS[event["cat"]]
            at = ((event["ts"] - origin) / 1e6, row.get(event["tid"], 0))
            marked[label] = axis.plot(*at, "k" + marker)[0]
    if marked:
        axis.legend(marked.values(), marked.keys(), loc="upper right", fontsize="small")
    axis.set_yticks([row[t] for t in tracks], [names[t] for t in tracks])
    axis.set_xlabel("seconds")
    axis.set_title(f"{len([e for e in spans if e['cat'] != 'deliver'])} commands")
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m multi.timeline", description="Draw a timeline written by multi."
    )
    parser.add_argument("trace", help="the trace file (the option timeline=FILE)")
    parser.add_argument("--png", required=True, help="where to write the Gantt chart")
    args = parser.parse_args(argv)
    try:
        draw(args.trace, args.png)
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"cannot draw {args.trace}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
