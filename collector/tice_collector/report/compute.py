"""The evidence report's figures, as pure functions of what `source` read.

Every figure is judged on each school's own school days (its calendar) from `start` to `end`,
inside its teaching hours, with the regular-use policy in force (collector/tice_collector/usage.py):

- a device is *used* on a school day when its figure in class reaches `used_threshold_s`;
  a day without data is a day without use (and is counted in the coverage line);
- a device is *used regularly* over the period when it was used on at least `regular_share`
  of the period's school days since its enrolment; with fewer than `min_judged_days` of them
  it is *too new* and not judged (the alerts apply the same rule to a rolling window);
- a class is regular when at least `class_regular_share` of its judged devices are;
- a device is *silent* at the end of the period after `silent_school_days` school days
  without data while others in its school report; when none report, the school is silent.

Counted: devices not retired, in the inventory by the period's end; backup disks are watched
for health, not use, and left out. A device enrolled after the period's end counts as never
enrolled in it.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from tice_collector import calendar as cal
from tice_collector import usage
from tice_collector.report.model import (
    Coverage,
    CupboardDevice,
    CupboardReason,
    Method,
    ModemLine,
    Period,
    ProjectorLine,
    Row,
    SchoolInfo,
    SilentDevice,
    SilentSchool,
    UsageReport,
)
from tice_collector.report.source import Data, DayFigures, Device, WeekTotals, counted_on, monday

# Row order within a school: every kind together first, then computers, projectors, 3G keys.
KINDS = ("chromebook", "laptop", "desktop", "other", "projector", "modem")
LEFT_OUT_KINDS = frozenset({"disk"})
ALL = "all"
CITY = ""


class EmptyPeriod(ValueError):
    """The period holds no school day for any school reported on."""


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def kind_order(kind: str) -> int:
    return -1 if kind == ALL else (KINDS.index(kind) if kind in KINDS else len(KINDS))


@dataclass
class DeviceResult:
    """One device over the period."""

    device: Device
    days: list[date]  # school days it could be used on (since enrolment; none if never enrolled)
    used: set[date]
    with_data: set[date]
    verdict: usage.DeviceVerdict | None  # None: not enrolled in the period
    minutes: float | None  # in-class minutes per school day; None for 3G keys and without days
    modem_bytes: int  # every day
    modem_in_class_bytes: int
    projector_on_s: float  # every day
    projector_on_in_class_s: float


@dataclass
class Tally:
    """The sums behind one row."""

    devices: int = 0
    enrolled: int = 0
    used: int = 0
    judged: int = 0
    too_new: int = 0
    regular: int = 0
    minutes: list[float] = field(default_factory=list)
    device_days: int = 0
    device_days_used: int = 0
    device_days_no_data: int = 0
    cupboard: int = 0
    silent: int = 0
    modem_bytes: int = 0
    modem_in_class_bytes: int = 0
    projector_on_s: float = 0.0
    projector_on_in_class_s: float = 0.0


def in_scope(device: Device, end: date) -> bool:
    """Counted in a period ending on `end`: not retired, not a backup disk, in the inventory by
    then (created, or enrolled: an enrolment date is kept when a device is re-created)."""
    first = min(device.created, device.enrolled) if device.enrolled is not None else device.created
    return device.active and device.kind not in LEFT_OUT_KINDS and first <= end


def judge(device: Device, school_days: list[date], figures: dict[date, DayFigures],
          weeks: dict[date, tuple[int, float]], end: date, policy: usage.Policy) -> DeviceResult:
    """A device over the period's school days of its school (`school_days`, in order)."""
    enrolled = device.enrolled if device.enrolled is not None and device.enrolled <= end else None
    days = [d for d in school_days if d >= enrolled] if enrolled is not None else []
    threshold = policy.used_threshold_s
    used = {d for d in days if d in figures and figures[d].in_class >= threshold}
    with_data = {d for d in days if d in figures}
    verdict = None
    if enrolled is not None:
        # The whole period is the window: its school days since enrolment, all of them.
        whole = replace(policy, window_school_days=max(1, len(days)))
        verdict = usage.device_verdict({d: f.in_class for d, f in figures.items()}, days, whole)
    minutes = None
    if days and device.kind != "modem":
        minutes = sum(figures[d].in_class for d in days if d in figures) / len(days) / 60
    return DeviceResult(
        device=device, days=days, used=used, with_data=with_data, verdict=verdict, minutes=minutes,
        modem_bytes=sum(w[0] for w in weeks.values()),
        modem_in_class_bytes=sum(f.modem_bytes for f in figures.values()),
        projector_on_s=sum(w[1] for w in weeks.values()),
        projector_on_in_class_s=sum(f.projector_on_s for f in figures.values()))


def silent_states(results: list[DeviceResult], last_data: dict[uuid.UUID, date],
                  n: int) -> tuple[dict[uuid.UUID, int], set[str]]:
    """(school days missed at the end of the period by each silent device, silent schools).

    As the detect job: a device misses the school days after its last day with data (or
    before its enrolment day); at `n` or more it is silent, unless every enrolled device of its
    school is, and then the school is silent instead.
    """
    missed: dict[uuid.UUID, int] = {}
    quiet: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r.verdict is None:
            continue
        last = last_data.get(r.device.id, date.min)
        missed[r.device.id] = sum(1 for d in r.days if d > last)
        quiet[r.device.school].append(missed[r.device.id] >= n)
    silent_schools = {uai for uai, flags in quiet.items() if flags and all(flags)}
    silent = {i: m for i, m in missed.items() if m >= n}
    return silent, silent_schools


def compute(data: Data, start: date, end: date, policy: usage.Policy, method: Method, *, scope: str,
            default_term: bool, now: datetime) -> UsageReport:
    """The report over `start`..`end` for `data.schools` (scope "city", or one school's UAI).

    Raises EmptyPeriod when no school reported on has a school day in the period.
    """
    school_days = {uai: s.calendar.school_days(start, end) for uai, s in data.schools.items()}
    if not any(school_days.values()):
        raise EmptyPeriod(f"no school day from {start} to {end}")
    city = scope == "city"
    weeks_of: dict[str, dict[date, list[date]]] = {}
    for uai, days in school_days.items():
        by_week: dict[date, list[date]] = defaultdict(list)
        for d in days:
            by_week[monday(d)].append(d)
        weeks_of[uai] = dict(by_week)
    all_days = sorted({d for days in school_days.values() for d in days})
    city_weeks: dict[date, list[date]] = defaultdict(list)
    for d in all_days:
        city_weeks[monday(d)].append(d)

    devices = [d for d in data.devices if in_scope(d, end)]
    results = []
    for dev in devices:
        weeks = {w: (t.modem_bytes, t.projector_on_s) for w, t in data.weeks.get(dev.id, {}).items()}
        results.append(judge(dev, school_days[dev.school], data.days.get(dev.id, {}), weeks, end, policy))
    silent, silent_schools = silent_states(results, data.last_data, method.silent_school_days)

    # Each device adds to its school and kind; the "all" rows and the city's are sums of those.
    week_of = {d: monday(d) for d in (start + timedelta(days=i) for i in range((end - start).days + 1))}
    period: dict[tuple[str, str], Tally] = defaultdict(Tally)
    weekly: dict[tuple[str, str, date], Tally] = defaultdict(Tally)
    classes: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        dev = r.device
        t = period[(dev.school, dev.kind)]
        t.devices += 1
        t.enrolled += r.verdict is not None
        t.used += bool(r.used)
        if r.verdict is not None:
            t.judged += r.verdict.verdict != "too_new"
            t.too_new += r.verdict.verdict == "too_new"
            t.regular += r.verdict.verdict == "regular"
        if r.minutes is not None:
            t.minutes.append(r.minutes)
        t.device_days += len(r.days)
        t.device_days_used += len(r.used)
        t.device_days_no_data += len(r.days) - len(r.with_data)
        t.cupboard += not r.used
        t.silent += dev.id in silent and dev.school not in silent_schools
        t.modem_bytes += r.modem_bytes
        t.modem_in_class_bytes += r.modem_in_class_bytes
        t.projector_on_s += r.projector_on_s
        t.projector_on_in_class_s += r.projector_on_in_class_s
        if r.verdict is not None and r.verdict.verdict != "too_new" and dev.class_id is not None:
            classes[dev.school][dev.class_id].append(r.verdict.verdict == "regular")
        _add_weeks(r, weekly, data.days.get(dev.id, {}), data.weeks.get(dev.id, {}), week_of, policy)
    _roll_up(period, city)
    _roll_up(weekly, city)

    rows = _period_rows(data, school_days, all_days, period, classes, policy, city)
    rows += _week_rows(data, weeks_of, city_weeks, period, weekly, city, start, end)
    never_enrolled = sum(1 for r in results if r.verdict is None)
    total = period.get((CITY if city else scope, ALL), Tally())
    coverage = Coverage(device_days=total.device_days, with_data=total.device_days - total.device_days_no_data,
                        no_data=total.device_days_no_data, no_data_share=share(total.device_days_no_data,
                                                                                total.device_days),
                        never_enrolled=never_enrolled)
    return UsageReport(
        generated_at=now, scope=scope, period=Period(from_=start, to=end, default_term=default_term),
        method=method, coverage=coverage,
        schools=[_school_info(data, uai, school_days[uai], start, end,
                              period.get((uai, ALL), Tally()).devices) for uai in sorted(data.schools)],
        rows=rows,
        cupboard=_cupboard(results, data, policy),
        silent_devices=[SilentDevice(school=r.device.school, kind=r.device.kind, asset_tag=r.device.asset_tag,
                                     class_=r.device.class_code, last_data_day=data.last_data.get(r.device.id),
                                     missed_school_days=silent[r.device.id])
                        for r in _ordered(results)
                        if r.device.id in silent and r.device.school not in silent_schools],
        silent_schools=[SilentSchool(school=uai, school_name=data.schools[uai].name,
                                     devices=period[(uai, ALL)].enrolled) for uai in sorted(silent_schools)],
        modems=[ModemLine(school=r.device.school, kind=r.device.kind, asset_tag=r.device.asset_tag,
                          class_=r.device.class_code,
                          counted_on="key" if counted_on(r.device.kind) == "key" else "host",
                          bytes=r.modem_bytes, in_class_bytes=r.modem_in_class_bytes,
                          used_days=_modem_days(r, data, policy), school_days=len(r.days))
                for r in _ordered(results) if r.device.kind == "modem" or r.modem_bytes > 0],
        projectors=[ProjectorLine(school=r.device.school, kind=r.device.kind, asset_tag=r.device.asset_tag,
                                  class_=r.device.class_code,
                                  counted_on="projector" if counted_on(r.device.kind) == "projector" else "host",
                                  on_hours=hours(r.projector_on_s), on_in_class_hours=hours(r.projector_on_in_class_s),
                                  used_days=_projector_days(r, data, policy), school_days=len(r.days))
                    for r in _ordered(results) if r.device.kind == "projector" or r.projector_on_s > 0],
    )


def _add_weeks(r: DeviceResult, weekly: dict[tuple[str, str, date], Tally], figures: dict[date, DayFigures],
               totals: dict[date, WeekTotals], week_of: dict[date, date], policy: usage.Policy) -> None:
    """Add one device's weeks to its school and kind."""
    threshold = policy.used_threshold_s
    # week -> [school days, used, without data, in-class seconds, 3G bytes in class, lamp-on s in class]
    acc: dict[date, list[float]] = {}
    for d in r.days:
        a = acc.get(week_of[d])
        if a is None:
            a = acc[week_of[d]] = [0, 0, 0, 0.0, 0, 0.0]
        a[0] += 1
        f = figures.get(d)
        if f is None:
            a[2] += 1
        else:
            a[3] += f.in_class
            a[1] += f.in_class >= threshold
    for d, f in figures.items():
        if f.modem_bytes or f.projector_on_s:
            a = acc.setdefault(week_of[d], [0, 0, 0, 0.0, 0, 0.0])
            a[4] += f.modem_bytes
            a[5] += f.projector_on_s
    for week in totals:
        acc.setdefault(week, [0, 0, 0, 0.0, 0, 0.0])
    school, kind = r.device.school, r.device.kind
    for week, (days, used, no_data, seconds, modem_bytes, projector_s) in acc.items():
        t = weekly[(school, kind, week)]
        t.used += used > 0
        t.device_days += int(days)
        t.device_days_used += int(used)
        t.device_days_no_data += int(no_data)
        if days and kind != "modem":
            t.minutes.append(seconds / days / 60)
        t.modem_in_class_bytes += int(modem_bytes)
        t.projector_on_in_class_s += projector_s
        total = totals.get(week)
        if total is not None:
            t.modem_bytes += total.modem_bytes
            t.projector_on_s += total.projector_on_s


def _merge(into: Tally, t: Tally) -> None:
    into.devices += t.devices
    into.enrolled += t.enrolled
    into.used += t.used
    into.judged += t.judged
    into.too_new += t.too_new
    into.regular += t.regular
    into.minutes.extend(t.minutes)
    into.device_days += t.device_days
    into.device_days_used += t.device_days_used
    into.device_days_no_data += t.device_days_no_data
    into.cupboard += t.cupboard
    into.silent += t.silent
    into.modem_bytes += t.modem_bytes
    into.modem_in_class_bytes += t.modem_in_class_bytes
    into.projector_on_s += t.projector_on_s
    into.projector_on_in_class_s += t.projector_on_in_class_s


def _roll_up(tallies: dict[Any, Tally], city: bool) -> None:
    """Add the sums keyed (school, "all", ...) and, for the city, ("", kind, ...) and ("", "all", ...)
    to tallies keyed (school, kind, ...)."""
    for key, t in list(tallies.items()):
        school, kind, *rest = key
        targets = [(school, ALL, *rest)]
        if city:
            targets += [(CITY, kind, *rest), (CITY, ALL, *rest)]
        for target in targets:
            _merge(tallies[tuple(target)], t)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _row(scope_school: str, data: Data, kind: str, week: date | None, school_days: int, base: Tally,
         t: Tally, *, classes: tuple[int, int] | None) -> Row:
    period_row = week is None
    return Row(
        scope="city" if scope_school == CITY else "school", school=scope_school,
        school_name=data.schools[scope_school].name if scope_school != CITY else "",
        kind=kind, week=week, school_days=school_days, devices=base.devices, enrolled=base.enrolled,
        used=t.used, used_share=share(t.used, base.devices) if school_days else None,
        judged=t.judged if period_row else None, too_new=t.too_new if period_row else None,
        regular=t.regular if period_row else None, regular_share=share(t.regular, t.judged) if period_row else None,
        classes=classes[0] if classes else None, classes_regular=classes[1] if classes else None,
        active_minutes_median=_median(t.minutes), device_days=t.device_days, device_days_used=t.device_days_used,
        device_days_no_data=t.device_days_no_data,
        cupboard=t.cupboard if period_row else None, silent=t.silent if period_row else None,
        modem_bytes=t.modem_bytes, modem_in_class_bytes=t.modem_in_class_bytes,
        projector_on_hours=hours(t.projector_on_s), projector_on_in_class_hours=hours(t.projector_on_in_class_s))


def _kinds(period: dict[tuple[str, str], Tally], school: str) -> list[str]:
    return sorted({k for s, k in period if s == school} | {ALL}, key=kind_order)


def _period_rows(data: Data, school_days: dict[str, list[date]], all_days: list[date],
                 period: dict[tuple[str, str], Tally], classes: dict[str, dict[int, list[bool]]],
                 policy: usage.Policy, city: bool) -> list[Row]:
    counted = {uai: (len(c), sum(usage.class_regular(v, policy) for v in c.values())) for uai, c in classes.items()}
    rows = []
    if city:
        city_classes = (sum(c[0] for c in counted.values()), sum(c[1] for c in counted.values()))
        for kind in _kinds(period, CITY):
            t = period.get((CITY, kind), Tally())
            rows.append(_row(CITY, data, kind, None, len(all_days), t, t,
                             classes=city_classes if kind == ALL else None))
    for uai in sorted(data.schools):
        for kind in _kinds(period, uai):
            t = period.get((uai, kind), Tally())
            rows.append(_row(uai, data, kind, None, len(school_days[uai]), t, t,
                             classes=counted.get(uai, (0, 0)) if kind == ALL else None))
    return rows


def _week_rows(data: Data, weeks_of: dict[str, dict[date, list[date]]], city_weeks: dict[date, list[date]],
               period: dict[tuple[str, str], Tally], weekly: dict[tuple[str, str, date], Tally],
               city: bool, start: date, end: date) -> list[Row]:
    """One row per week of the period (a week of holidays too: its shares are null), per school
    (or the city) and kind, so the weeks add up to the period."""
    rows = []
    scopes: list[tuple[str, dict[date, list[date]]]] = [(CITY, city_weeks)] if city else []
    scopes += [(uai, weeks_of[uai]) for uai in sorted(data.schools)]
    for school, weeks in scopes:
        for kind in _kinds(period, school):
            base = period.get((school, kind), Tally())
            for week in week_span(start, end):
                rows.append(_row(school, data, kind, week, len(weeks.get(week, ())), base,
                                 weekly.get((school, kind, week), Tally()), classes=None))
    return rows


def _school_info(data: Data, uai: str, days: list[date], start: date, end: date, devices: int) -> SchoolInfo:
    s = data.schools[uai]
    return SchoolInfo(uai=uai, name=s.name, zone=s.zone, timetable=s.timetable, school_days=len(days),
                      own_hours=s.own_hours, overrides=len({o.day for o in s.overrides if start <= o.day <= end}),
                      holiday_data=cal.coverage(s.zone, start) and cal.coverage(s.zone, end), devices=devices)


def _ordered(results: Iterable[DeviceResult]) -> list[DeviceResult]:
    return sorted(results, key=lambda r: (r.device.school, kind_order(r.device.kind), r.device.asset_tag))


def _cupboard(results: list[DeviceResult], data: Data, policy: usage.Policy) -> list[CupboardDevice]:
    out = []
    for r in _ordered(results):
        if r.used:
            continue
        reason: CupboardReason = "not_used_in_class"
        if r.verdict is None:
            reason = "never_enrolled"
        elif not r.with_data:
            reason = "no_data"
        out.append(CupboardDevice(school=r.device.school, kind=r.device.kind, asset_tag=r.device.asset_tag,
                                  class_=r.device.class_code, reason=reason, school_days=len(r.days),
                                  days_with_data=len(r.with_data), last_data_day=data.last_data.get(r.device.id)))
    return out


def _modem_days(r: DeviceResult, data: Data, policy: usage.Policy) -> int:
    figures = data.days.get(r.device.id, {})
    return sum(1 for d in r.days if d in figures and usage.modem_used(figures[d].modem_bytes, policy))


def _projector_days(r: DeviceResult, data: Data, policy: usage.Policy) -> int:
    figures = data.days.get(r.device.id, {})
    own = r.device.kind == "projector"
    return sum(1 for d in r.days if d in figures
               and (figures[d].in_class if own else figures[d].projector_on_s) >= policy.used_threshold_s)


def week_span(start: date, end: date) -> list[date]:
    """The Mondays of the weeks that hold a day of start..end."""
    first, last = monday(start), monday(end)
    return [first + timedelta(weeks=i) for i in range((last - first).days // 7 + 1)]
