"""Read a py-spy raw profile (`py-spy record --format raw --threads --idle --nolineno`) and say
where the time goes: top functions by self and cumulative share, and the collector's areas.

A raw profile has one line per distinct stack: `thread (TID): NAME;frame;frame;... COUNT`, root
first, each frame `function (package/file.py)`, or `function (package/file.py:LINE)` when
py-spy keeps line numbers. Samples are taken at a fixed rate of wall
time; with `--idle`, the event loop waiting in `select` is sampled too, which is how the idle
share is known.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Frames = tuple[str, ...]
Stack = tuple[Frames, int]

_LINE = re.compile(r"^(?:(thread \([^)]*\)(?:: [^;]*)?);)?(.*) (\d+)$")


def parse(text: str) -> dict[str, list[Stack]]:
    """Stacks by thread ("" when the profile has no thread frames); blank lines are skipped,
    anything else that is not a stack line is a ValueError naming the line."""
    threads: dict[str, list[Stack]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"line {n} is not a py-spy raw stack: {line[:120]!r}")
        thread, frames, count = m[1] or "", m[2], int(m[3])
        threads.setdefault(thread, []).append((tuple(frames.split(";")), count))
    return threads


def loop_thread(threads: dict[str, list[Stack]]) -> str:
    """The thread that runs the asyncio event loop (the most samples under run_forever)."""
    def loop_samples(stacks: list[Stack]) -> int:
        return sum(c for frames, c in stacks if any("run_forever (asyncio/" in f for f in frames))
    if not threads:
        raise ValueError("empty profile")
    return max(threads, key=lambda t: loop_samples(threads[t]))


def is_idle(frames: Frames) -> bool:
    """The event loop waiting for I/O: the stack ends in a selector's select() (asyncio's loop),
    or in asyncio.Runner.run with no Python frame above it (uvloop: its wait for I/O, and its
    own socket work, are C code that py-spy does not show without --native)."""
    return bool(frames) and re.search(r"\b(select \(selectors|run \(asyncio[/.]runners)\.py(:\d+)?\)$",
                                      frames[-1]) is not None


def total(stacks: Iterable[Stack]) -> int:
    return sum(c for _, c in stacks)


def busy(stacks: Iterable[Stack]) -> list[Stack]:
    return [(f, c) for f, c in stacks if not is_idle(f)]


def top_self(stacks: Iterable[Stack], n: int) -> list[tuple[str, int]]:
    """Functions by samples where they were the innermost Python frame."""
    counts: Counter[str] = Counter()
    for frames, c in stacks:
        if frames:
            counts[frames[-1]] += c
    return counts.most_common(n)


# py-spy names a file by its path below the working directory or a sys.path entry: the
# collector's modules show as collector/tice_collector/... or tice_collector/...
_PKG = r"(?:collector/)?tice_collector/"
# The command line that started the server (cli/__main__.py, main, cmd_serve, _serve; cli.py in
# profiles taken before the cli package).
_CLI = _PKG + r"cli(?:\.py|/\w+\.py)[:)]"

# Frames under which everything runs (start-up and the event loop's dispatch): on every stack,
# so they say nothing in a cumulative ranking.
_ROOT = re.compile(r"\(<frozen runpy>[:)]|\(" + _CLI + r"|\(asyncio/runners\.py[:)]|"
                   r"^BaseEventLoop\.(run_forever|run_until_complete|_run_once) |^Handle\._run ")


def top_cumulative(stacks: Iterable[Stack], n: int) -> list[tuple[str, int]]:
    """Functions by samples where they were anywhere on the stack (once per stack), without
    the start-up and dispatch frames every stack has."""
    counts: Counter[str] = Counter()
    for frames, c in stacks:
        for frame in set(frames):
            if not _ROOT.search(frame):
                counts[frame] += c
    return counts.most_common(n)


def _any(pattern: str) -> Callable[[Frames], bool]:
    rx = re.compile(pattern)
    return lambda frames: any(rx.search(f) for f in frames)


# The collector's areas, most specific first: a busy sample counts for the first area with a
# matching frame. Function names follow the collector's code; a sample that matches none is
# "other", so a renamed function shows up there rather than vanishing.
AREAS: list[tuple[str, Callable[[Frames], bool]]] = [
    ("metrics: prometheus-client (labels, inc, observe)", _any(r"\(prometheus_client/")),
    # The flush as one statement (collector/tice_collector/writer.py Writer._write); the three
    # areas after it are the earlier writer's (COPY, then statements in a transaction), kept so
    # that profiles taken before still split as they did.
    ("writer: the flush statement (asyncpg fetch, one round trip)",
     lambda f: _any(r"^Writer\._write ")(f) and _any(r"\(asyncpg/")(f)),
    ("writer: COPY into staging (asyncpg copy_records_to_table)", _any(r"copy_records_to_table|_copy_in_records")),
    ("writer: INSERT ... ON CONFLICT ... RETURNING (fetch)",
     lambda f: _any(r"^Writer\._flush ")(f) and _any(r"Connection\.fetch |Connection\._execute ")(f)
     and not _any(r"_touch_devices")(f)),
    ("writer: devices_touch", _any(r"_touch_devices")),
    ("writer: BEGIN/COMMIT", lambda f: _any(r"^Writer\.")(f) and _any(r"Transaction\.")(f)),
    ("writer: its own Python (grouping, counting results, queue)", _any(r"\(" + _PKG + r"writer\.py[:)]")),
    ("ingest: decode + validate (msgspec)", _any(r"^decode \(" + _PKG + r"routes/ingest\.py[:)]")),
    ("ingest: token check", _any(r"^authenticate \(" + _PKG + r"routes/ingest\.py[:)]")),
    ("ingest: read body", _any(r"^read_body \(" + _PKG + r"routes/ingest\.py[:)]")),
    ("ingest: handler's own Python (clock rule, rows, answer)", _any(r"\(" + _PKG + r"routes/ingest\.py[:)]")),
    ("collector: middlewares, other collector code", _any(r"\(" + _PKG + r"(?!cli[./])")),
    ("HTTP: aiohttp (parse, respond, stream)", _any(r"\(aiohttp/")),
    ("asyncpg: other", _any(r"\(asyncpg/")),
    ("event loop and sockets (asyncio)", _any(r"\((asyncio|selectors)[/.]")),
]


def areas(stacks: Iterable[Stack]) -> list[tuple[str, int, int]]:
    """(area, busy samples, of which inside a socket send): every busy sample in exactly one
    area, in the order of AREAS, "other" last."""
    counts: Counter[str] = Counter()
    sends: Counter[str] = Counter()
    for frames, c in busy(stacks):
        name = next((name for name, match in AREAS if match(frames)), "other")
        counts[name] += c
        if _is_send(frames):
            sends[name] += c
    order = [name for name, _ in AREAS] + ["other"]
    return [(name, counts[name], sends[name]) for name in order if counts[name]]


_SEND = re.compile(r"^_SelectorSocketTransport\.write |^BaseSelectorEventLoop\.sock_sendall ")


def _is_send(frames: Frames) -> bool:
    return bool(frames) and _SEND.search(frames[-1]) is not None


def in_socket_send(stacks: Iterable[Stack]) -> int:
    """Busy samples inside a socket send (the syscall: on loopback it also delivers to the
    receiver, and a sender is often preempted there when it wakes the receiver)."""
    return sum(c for frames, c in busy(stacks) if _is_send(frames))


@dataclass(frozen=True)
class Summary:
    thread: str
    samples: int  # of the loop thread, idle included
    idle: int
    other_threads_busy: int  # busy samples of every other thread


def summarize(threads: dict[str, list[Stack]]) -> Summary:
    main = loop_thread(threads)
    others = sum(total(busy(s)) for t, s in threads.items() if t != main)
    stacks = threads[main]
    return Summary(main, total(stacks), total(stacks) - total(busy(stacks)), others)
