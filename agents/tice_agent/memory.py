"""Keep the daemon's resident memory to what its steady state uses (glibc on Linux).

CPython gives an empty arena of small objects back to the system itself, but everything
larger, and every C library the agent stands on (SQLite, OpenSSL, psutil), allocates with
`malloc`, and glibc keeps freed memory inside its heap for the next `malloc`. The agent's start
(reading its config, compiling regular expressions, importing and compiling modules, the first
probe rounds) leaves about a megabyte free there that the steady state never needs again, and
RSS counts it. Two glibc calls, made by the daemon only (bench/agent_footprint.py measures the effect):

- `mallopt(M_ARENA_MAX, 1)` at start: glibc gives each thread that allocates while another does
  an arena of its own (up to 8 per core), each keeping its freed memory apart. The agent's
  threads (an HTTP request, psutil's reads, waiting for a probe's command) are short and seldom
  overlap; on one arena they wait for each other's `malloc` a few microseconds at most.
- `malloc_trim(0)` once a minute: gives the free pages inside the heap back to the system
  (glibc >= 2.8 releases whole free pages anywhere in the heap, not only at its top). It takes
  well under a millisecond on a heap of this size.

Elsewhere (Windows, macOS, musl) both are no-ops.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

M_ARENA_MAX = -8  # glibc malloc.h
TRIM_EVERY_S = 60.0


def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None)  # the symbols the process already has: glibc's malloc
        libc.malloc_trim.argtypes, libc.mallopt.argtypes = [ctypes.c_size_t], [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):  # not glibc (musl has neither call)
        return None


def one_arena() -> bool:
    """Every thread on malloc's main arena. True when glibc took the setting."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, 1))


def trim() -> bool:
    """Give malloc's free pages back to the system. True when glibc released some."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


async def trim_forever(every_s: float = TRIM_EVERY_S, first_s: float = 15.0) -> None:
    """`trim()` after `first_s` seconds (the first probe rounds are done by then: they start
    within 10 s) and then every `every_s` seconds, until cancelled."""
    await asyncio.sleep(first_s)
    while True:
        trim()
        await asyncio.sleep(every_s)
