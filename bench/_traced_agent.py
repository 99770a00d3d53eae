"""`tice-agent` under tracemalloc, for bench/agent_footprint.py --tracemalloc.

    python bench/_traced_agent.py OUT.txt --config agent.toml run

Starts tracemalloc before the agent imports anything, runs `tice-agent` with the remaining
arguments, and when the agent exits (SIGTERM ends `run` cleanly) writes to OUT.txt the Python
heap still allocated, by the file that allocated it (the modules' own code and data included),
largest first. tracemalloc's bookkeeping makes this process bigger than the agent: its RSS is
not a figure of the agent's.
"""

from __future__ import annotations

import atexit
import sys
import tracemalloc
from pathlib import Path

MiB = 1024 * 1024


def dump(out: Path, top: int = 25) -> None:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("filename")
    total = sum(s.size for s in stats)
    lines = [f"Python heap traced: {total / MiB:.2f} MiB in {sum(s.count for s in stats)} blocks", "",
             "| file | KiB | blocks |", "|---|---:|---:|"]
    for s in stats[:top]:
        name = s.traceback[0].filename
        for marker in ("site-packages/", "lib/python3"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        lines.append(f"| {name} | {s.size / 1024:.0f} | {s.count} |")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    tracemalloc.start(1)
    atexit.register(dump, out)
    from tice_agent.cli import main as agent

    sys.exit(agent(sys.argv[2:]))


if __name__ == "__main__":
    main()
