"""tice-collector report: write the evidence report to a file (or standard output).

`prepare` checks the arguments before the database is touched, the report is made on the database,
`finish` writes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.cli._console import CliError
from tice_collector.cli._db import database, run_db
from tice_collector.report.make import make_report, render_bytes
from tice_collector.report.model import UsageReport
from tice_collector.report.request import FORMATS, LANGS, ReportArgError, ReportRequest, check
from tice_collector.settings import Settings


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report", parents=[common], help="the evidence report: is the equipment used regularly? (HTML, CSV, JSON)",
        description="Figures by school and kind of device, judged on each school's school days inside teaching "
                    "hours, from the daily totals: devices used and used regularly, regular classes, minutes per "
                    "school day, the weekly trend, devices never used (the cupboard), silent devices, 3G data per "
                    "key, projector hours, the method and the data coverage. docs/report.md says what each "
                    "figure means.")
    p.add_argument("--from", dest="start", metavar="DATE", help="first day, YYYY-MM-DD (with --to; default: the "
                   "current school term up to yesterday, or the last term during a break)")
    p.add_argument("--to", dest="end", metavar="DATE", help="last day, YYYY-MM-DD, at the latest yesterday")
    p.add_argument("--school", metavar="UAI", help="one school's sheet (default: the whole city)")
    p.add_argument("--format", default="html", choices=FORMATS,
                   help="html (one self-contained page, prints on A4), csv or json (default html)")
    p.add_argument("--lang", default="fr", choices=LANGS, help="language of the HTML page (default fr)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write; - for standard output")
    p.set_defaults(func=cmd_report)


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    made: list[UsageReport] = []
    job = prepare(settings, args)

    async def work(conn: asyncpg.Connection) -> int:
        made.append(await job.make(conn))
        return 0

    with database(settings) as ready:
        run_db(ready, work)
    return finish(job, made[0])


@dataclass(frozen=True)
class Job:
    settings: Settings
    request: ReportRequest
    out: Path | None  # None: standard output
    now: datetime

    async def make(self, conn: asyncpg.Connection) -> UsageReport:
        try:
            return await make_report(conn, self.settings, self.request, today=self.now.date(), now=self.now,
                                     query_timeout_s=max(self.settings.db_timeout_s, 300.0))
        except ReportArgError as e:
            raise CliError(str(e)) from None


def prepare(settings: Settings, args: argparse.Namespace) -> Job:
    """The checked arguments, before the database is touched, or CliError."""
    now = datetime.now(ZoneInfo(settings.timezone))
    try:
        request = check(args.start, args.end, args.school, args.format, args.lang, today=now.date())
    except ReportArgError as e:
        raise CliError(str(e)) from None
    out = None if args.out == "-" else Path(args.out)
    if out is not None and not out.parent.is_dir():
        raise CliError(f"--out {args.out}: no directory {out.parent}; create it first")
    return Job(settings=settings, request=request, out=out, now=now)


def finish(job: Job, report: UsageReport) -> int:
    """Write the report where the job says, and say so (unless it went to standard output)."""
    request = job.request
    body = render_bytes(report, request.format, request.lang)
    if job.out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return 0
    write(job.out, body)
    devices = next(r.devices for r in report.rows if r.week is None and r.kind == "all"
                   and r.school == ("" if report.scope == "city" else report.scope))
    print(f"wrote {job.out} ({request.format}{', ' + request.lang if request.format == 'html' else ''}): "
          f"{'city' if report.scope == 'city' else 'school ' + report.scope}, {report.period.from_} to "
          f"{report.period.to}, {len(report.schools)} school{'s' if len(report.schools) != 1 else ''}, "
          f"{devices} device{'s' if devices != 1 else ''}")
    return 0


def write(path: Path, body: bytes) -> None:
    """Write whole or not at all: a temporary file beside it, renamed over it."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}", 1) from None
