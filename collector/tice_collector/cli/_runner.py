"""The served app's start and stop, shared by `serve` and `demo`: a stop event that SIGTERM and
SIGINT set, and an aiohttp AppRunner whose start-up failures become one line and exit code 1."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from tice_collector.cli._console import CliError
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import MigrationError
from tice_collector.settings import Settings

if TYPE_CHECKING:  # aiohttp is imported by the commands that serve, not by every command
    from aiohttp import web


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT on the running loop. A signal this process inherited as
    ignored stays ignored, as Python itself leaves an ignored SIGINT alone (`nohup`, `&` in a shell
    without job control)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            loop.add_signal_handler(sig, stop.set)
    return stop


async def started(app: web.Application, settings: Settings, access_log: logging.Logger | None) -> web.AppRunner:
    """`app` set up (migrations, database pool, writer) in a runner ready for its sites.

    Raises CliError (exit code 1) with one line when the database cannot be reached or its
    migrations cannot be applied; the caller owns `runner.cleanup()` once this returned.
    """
    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout_s, access_log=access_log,
                           handle_signals=False)
    try:
        await runner.setup()
    except MigrationError as e:
        raise CliError(f"cannot start: {e}", 1) from None
    except DB_ERRORS as e:
        raise CliError(f"cannot start: database: {type(e).__name__}: {e}", 1) from None
    return runner
