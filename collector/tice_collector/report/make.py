"""From a checked request to the report and its file: read (source), compute, render.

Shared by `tice-collector report` and `GET /api/v1/reports/usage`, so both give the same
figures and the same refusals (ReportArgError: exit 2, or a 400).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.fleet import policy_from
from tice_collector.report import compute, render, source, terms
from tice_collector.report.model import Method, UsageReport
from tice_collector.report.request import ReportArgError, ReportRequest

# How far around today the calendar is searched for the current term: a school year and the
# summer break on each side.
TERM_SEARCH_DAYS = 400


def method_of(settings: Any) -> Method:
    policy = policy_from(settings)
    return Method(used_threshold_s=policy.used_threshold_s, modem_used_bytes=policy.modem_used_bytes,
                  regular_share=policy.regular_share, min_judged_days=policy.min_judged_days,
                  class_regular_share=policy.class_regular_share, silent_school_days=settings.silent_school_days,
                  alert_window_school_days=policy.window_school_days, teaching_hours=settings.teaching_hours,
                  wednesday_hours=settings.wednesday_hours, timezone=settings.timezone, break_days=terms.BREAK_DAYS)


def default_period(schools: dict[str, source.School], today: date) -> tuple[date, date]:
    """The current school term of the schools reported on, up to yesterday (terms.current_term)."""
    days = {d for s in schools.values()
            for d in s.calendar.school_days(today - timedelta(days=TERM_SEARCH_DAYS), today)}
    # Days after today tell whether today is inside a term or in a break: the next school day.
    days |= {d for s in schools.values() for d in s.calendar.school_days(today, today + timedelta(days=30))}
    term = terms.current_term(days, today)
    if term is None:
        raise ReportArgError(f"no school day before today ({today}) to report on; give --from and --to",
                             code="empty_period")
    return term


async def make_report(conn: asyncpg.Connection, settings: Any, request: ReportRequest, *, today: date,
                      now: datetime, query_timeout_s: float) -> UsageReport:
    """The report the request asks for, or ReportArgError (unknown school, nothing to report on)."""
    schools = await source.load_schools(conn, request.school, query_timeout_s=query_timeout_s)
    if request.school is not None and not schools:
        raise ReportArgError(f"no school {request.school}; the schools are listed by: tice-collector school list",
                             code="unknown_school")
    if not schools:
        raise ReportArgError("no school yet: add one with tice-collector school add", code="empty_period")
    default = request.start is None or request.end is None
    if request.start is None or request.end is None:
        start, end = default_period(schools, today)
    else:
        start, end = request.start, request.end
    tz = ZoneInfo(settings.timezone)
    policy = policy_from(settings)
    where = f"school {request.school}" if request.school else "any school"
    if not any(s.calendar.school_days(start, end) for s in schools.values()):
        raise ReportArgError(f"no school day from {start} to {end} at {where}: the period falls in the holidays "
                             "or on days without class; choose dates inside a term "
                             "(tice-collector calendar days shows the school days)", code="empty_period")
    data = await source.load(conn, schools, request.school, start, end, policy, tz, query_timeout_s=query_timeout_s)
    return await asyncio.to_thread(
        compute.compute, data, start, end, policy, method_of(settings),
        scope=request.school or "city", default_term=default, now=now)


def file_name(report: UsageReport, fmt: str) -> str:
    return f"tice-usage-{report.scope}-{report.period.from_}-{report.period.to}.{fmt}"


def render_bytes(report: UsageReport, fmt: str, lang: str) -> bytes:
    if fmt == "json":
        return render.to_json(report)
    if fmt == "csv":
        return render.to_csv(report)
    return render.to_html(report, lang)
