"""`serve` with `workers` > 1: further processes of the same collector on the same port.

The collector is stateless between requests (every record is committed before it is
answered; tokens, rate limits and the writer queue are per process), so N processes can serve
one port: each binds its own SO_REUSEPORT socket and the kernel spreads new connections over
them. The first process binds every worker's sockets before anything else starts (so a busy
port is refused at once), owns the embedded PostgreSQL and the data directory's serve.lock,
runs the scheduled jobs, and starts the others with their sockets inherited, the jobs off and
the database URL it resolved. Jobs would stay once per schedule anyway (advisory lock and a
claimed slot in job_runs, collector/jobs.py); running them in one process spares the others
the attempt.

A further worker that exits is started again; SIGTERM to the first is passed on to every
worker, and each drains its own writer. The kernel sends a worker SIGTERM when the first
process dies, however it dies (Linux), so none outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys

from collector.settings import Settings

log = logging.getLogger("tice.workers")

RESTART_DELAY_S = 1.0


def inherited(spec: str) -> list[socket.socket]:
    """The listening sockets a worker was started with: `spec` is "PARENT_PID:FD,FD"."""
    parent, _, fds = spec.partition(":")
    _die_with(int(parent))
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]


def _die_with(parent: int) -> None:
    """Ask the kernel for SIGTERM when the first process dies (Linux); exit if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


class Workers:
    """Starts and watches the further worker processes, one per group of inherited sockets."""

    def __init__(self, settings: Settings, groups: list[list[socket.socket]], config: str | None) -> None:
        self._settings = settings
        self._config = ["--config", config] if config else []
        self._groups = groups
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * len(groups)
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    def _spawn(self, i: int) -> None:
        fds = [sock.fileno() for sock in self._groups[i]]
        s = self._settings
        env = {**os.environ, "TICE_DATABASE_URL": s.database_url, "TICE_LISTEN": s.listen,
               "TICE_JOBS_ENABLED": "false", "TICE_WORKERS": "1", "TICE_EVENT_LOOP": s.event_loop,
               "TICE_LOG_FORMAT": s.log_format, "TICE_LOG_LEVEL": s.log_level}
        self._procs[i] = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve", *self._config,
             "--worker-fds", f"{os.getpid()}:{','.join(map(str, fds))}"],
            env=env, pass_fds=fds)
        log.info("worker %d started (pid %d)", i + 2, self._procs[i].pid)  # type: ignore[union-attr]

    def start(self) -> None:
        for i in range(len(self._groups)):
            self._spawn(i)
        self._watch = asyncio.create_task(self._supervise(), name="tice-workers")

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY_S)
            for i, proc in enumerate(self._procs):
                if self._stopping or proc is None or proc.poll() is None:
                    continue
                log.error("worker %d (pid %d) exited with code %s; starting it again", i + 2, proc.pid,
                          proc.returncode)
                self._spawn(i)

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker and wait for each to drain; SIGKILL what is left after `timeout_s`."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        live = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(asyncio.to_thread(p.wait) for p in live))
        for proc in live:
            if proc.poll() is None:
                log.error("worker pid %d did not stop within %g s; killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait()
            elif proc.returncode != 0:
                log.error("worker pid %d stopped with code %d", proc.pid, proc.returncode)
