"""The database a command works on: the configured one or the embedded server's, migrated, and a
command run on one connection to it.

Every command that reads or writes the database goes through here, so they all resolve it, report
its failures and exit the same way (1: the database failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import msgspec

from tice_collector.cli._console import CliError
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import MigrationError
from tice_collector.settings import Settings

log = logging.getLogger("tice.cli")

Command = Callable[[Settings, argparse.Namespace], int]
"""What a parser's `set_defaults(func=...)` names: run with the settings and the parsed arguments,
return the exit code, or raise CliError."""

OnConnection = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[int]]
"""A command's work on one connection to a migrated database: `(conn, args, settings) -> exit code`."""


@contextlib.contextmanager
def database(settings: Settings, *, serving: bool = False) -> Iterator[Settings]:
    """Settings whose database_url is usable: the configured one, or the embedded server's.

    `serving` (serve) claims the data directory for this process, so a second serve on it is
    refused, and logs where the embedded data lives. Admin commands join the PostgreSQL of the
    collector serving there (or start one for their own run) and stay quiet, so their output
    is only their answer.
    """
    if settings.database_url:
        yield settings
        return
    from tice_collector import embedded

    data_dir = settings.resolved_data_dir
    level = logging.INFO if serving else logging.DEBUG
    with contextlib.ExitStack() as held:
        try:
            if serving:
                held.enter_context(embedded.serving(data_dir))
            url, server = embedded.start(data_dir)
        except OSError as e:  # not writable, a file in the way, ...
            raise CliError(f"cannot use data directory {data_dir}: {e}; choose another with --data-dir "
                           "or set TICE_DATABASE_URL", 1) from None
        except embedded.DataDirBusy as e:
            raise CliError(f"another tice-collector (pid {e.pid or 'unknown'}) is already serving from data "
                           f"directory {data_dir}; stop it, or give this one its own with --data-dir DIR",
                           1) from None
        log.log(level, "embedded PostgreSQL running, data in %s", data_dir / "pgdata")
        try:
            yield msgspec.structs.replace(settings, database_url=url)
        finally:
            server.cleanup()
            # The server is shared by every tice-collector process on this data directory and
            # stops with the last one; postmaster.pid disappears when it has stopped.
            if (data_dir / "pgdata" / "postmaster.pid").exists():
                log.log(level, "embedded PostgreSQL left running for the other collector processes")
            else:
                log.log(level, "embedded PostgreSQL stopped")


async def _connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_url, timeout=settings.db_timeout_s)
    except DB_ERRORS as e:
        raise CliError(f"cannot connect to the database: {type(e).__name__}: {e}", 1) from None


def run_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Migrate the database of `settings` (a usable database_url), then run `work` on one connection.

    Returns what `work` returns; the database failing is CliError with exit code 1.
    """
    from tice_collector.app import prepare_database

    async def main() -> int:
        await prepare_database(settings.database_url, settings.retention_months)
        conn = await _connect(settings)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except MigrationError as e:
        raise CliError(str(e), 1) from None
    except BrokenPipeError:  # stdout closed (`| head`): main's to handle, not the database's
        raise
    except DB_ERRORS as e:
        raise CliError(f"database: {type(e).__name__}: {e}", 1) from None


def on_connection(work: OnConnection) -> Command:
    """The parser's `func` for a command whose whole work is `work` on one connection."""

    def command(settings: Settings, args: argparse.Namespace) -> int:
        with database(settings) as ready:
            return run_db(ready, lambda conn: work(conn, args, ready))

    command.__name__ = command.__qualname__ = work.__name__
    command.__doc__ = work.__doc__
    return command
