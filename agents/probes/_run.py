"""Shared probe plumbing: running a command with a timeout, and parse errors."""

from __future__ import annotations

import asyncio
import shutil


class ParseError(ValueError):
    """Output we cannot read; the message says what was expected and what came."""


class CommandError(RuntimeError):
    """A command that is missing, failed, or did not answer in time."""


async def run_cmd(argv: list[str], timeout_s: float = 5.0) -> str:
    """Run argv (no shell) and return its stdout as text; raise CommandError otherwise."""
    if shutil.which(argv[0]) is None:
        raise CommandError(f"{argv[0]}: not installed")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandError(f"{argv[0]}: no answer within {timeout_s:g} s") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[:1]
        raise CommandError(f"{argv[0]}: exit {proc.returncode}" + (f": {reason[0][:120]}" if reason else ""))
    return out.decode(errors="replace")
