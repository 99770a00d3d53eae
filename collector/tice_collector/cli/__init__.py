"""tice-collector: serve, migrate, the admin commands (schools, classes, secrets, devices) and the report.

One module per command group; each adds its subcommands to the parser with `add_commands(sub,
common)` and names the function that runs each one with `set_defaults(func=...)`, a `Command`
(`_db.py`): `func(settings, args) -> exit code`. `main` loads the settings and calls it.

Exit codes: 0 done, 1 the database or the network failed, 2 bad usage, settings or input,
141 (128 + SIGPIPE, as a shell reports a command a pipe stopped) when whoever read the output
stopped reading (`tice-collector devices list | head -2`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tice_collector import __version__
from tice_collector.cli import (
    calendar,
    demo,
    devices,
    enroll_secrets,
    google,
    jobs,
    migrate,
    report,
    schools,
    serve,
)
from tice_collector.cli._console import CliError
from tice_collector.settings import SettingsError, default_data_dir, load_settings

# In the order `tice-collector --help` lists them.
GROUPS = (serve, demo, migrate, jobs, calendar, schools, enroll_secrets, devices, report, google)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML settings file (see collector.example.toml)")
    common.add_argument("--data-dir", metavar="DIR",
                        help=f"embedded PostgreSQL data directory when no database_url is set "
                             f"(default: {default_data_dir()})")
    common.add_argument("--log-format", choices=["text", "json"], help="log line format (default: text)")

    p = argparse.ArgumentParser(prog="tice-collector", description=(
        "Tice Telemetry collector. With no database configured (TICE_DATABASE_URL or database_url "
        f"in --config) it runs an embedded PostgreSQL with its data in {default_data_dir()}/pgdata."))
    p.add_argument("--version", action="version", version=f"tice-collector {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command line; return its exit code (argparse exits 2 itself on bad usage)."""
    from tice_collector import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir, log_format=args.log_format,
                                 listen=getattr(args, "listen", None))
    except SettingsError as e:
        print(f"tice-collector: settings error: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format, settings.log_level)
    try:
        code: int = args.func(settings, args)
        return code
    except CliError as e:
        print(f"tice-collector: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away: stop quietly. Python's note on SIGPIPE
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at
        # /dev/null so the flush at exit does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (run in-process)
            pass
        return 128 + signal.SIGPIPE
