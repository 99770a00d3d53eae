"""tice-collector migrate: apply the database migrations and exit."""

from __future__ import annotations

import argparse
import asyncio

from tice_collector.cli._console import CliError
from tice_collector.cli._db import database
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import MigrationError
from tice_collector.settings import Settings


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    mig = sub.add_parser("migrate", parents=[common], help="apply database migrations and exit")
    mig.set_defaults(func=cmd_migrate)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.app import prepare_database

    with database(settings) as ready:
        try:
            applied = asyncio.run(prepare_database(ready.database_url, ready.retention_months))
        except MigrationError as e:
            raise CliError(str(e), 1) from None
        except DB_ERRORS as e:
            raise CliError(f"cannot migrate: {type(e).__name__}: {e}", 1) from None
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0
