"""Fleet verdicts and the fleet snapshot: from daily rollups to "is this equipment used?".

Two jobs live here:
- `detect` judges every enrolled device on its school's calendar (used regularly? silent?)
  and writes `device_flags`;
- `snapshot` aggregates devices, flags and today's figures by school and kind into one JSON
  row, `fleet_snapshot`, that every replica's /metrics renders: all replicas answer the same.

Judgements use completed school days only (today is still going on), so a morning scrape
never calls a device unused, and holidays never count against anyone. A day's figure is its
activity inside the school's teaching hours (collector/tice_collector/hours.py) on a school day, and nothing
on another day; the rest of the day's activity is its out-of-hours figure, shown, never evidence.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from tice_collector import calendar as cal
from tice_collector import identity, usage
from tice_collector import peripherals as periph
from tice_collector import snapshot as snap
from tice_collector.db.queries import q
from tice_collector.google_sync import ou_school
from tice_collector.jobspec import JobContext, JobSpec

log = logging.getLogger("tice.fleet")

COMPUTER_KINDS = ("chromebook", "laptop", "desktop", "other")
# How far back the calendar is searched for the policy window (20 school days ≈ 5–8 weeks,
# more across the summer break).
LOOKBACK_DAYS = 120
# How far ahead a too-new device's first judged day is looked for (5 school days, even after
# the summer break).
LOOKAHEAD_DAYS = 200


@dataclass(frozen=True)
class School:
    uai: str
    zone: str
    timetable: str
    calendar: cal.SchoolCalendar


def policy_from(settings: Any) -> usage.Policy:
    return usage.Policy(
        used_threshold_s=settings.used_threshold_s,
        window_school_days=settings.regular_window_school_days,
        regular_share=settings.regular_share,
        min_judged_days=settings.min_judged_days,
        class_regular_share=settings.class_regular_share,
        modem_used_bytes=settings.modem_used_bytes,
    )


async def load_schools(conn: asyncpg.Connection) -> dict[str, School]:
    overrides = [cal.Override(day=r["day"], kind=r["kind"], school=r["school"], label=r["label"])
                 for r in await conn.fetch(q("calendar_overrides_all"))]
    schools = {}
    for r in await conn.fetch(q("schools_calendar")):
        own = tuple(o for o in overrides if o.school in (None, r["uai"]))
        schools[r["uai"]] = School(r["uai"], r["zone"], r["timetable"], cal.SchoolCalendar(
            zone=r["zone"], timetable=cal.TIMETABLES[r["timetable"]], overrides=own, school=r["uai"]))
    return schools


def measure(kind: str, row: asyncpg.Record | dict[str, Any], policy: usage.Policy,
            school_day: bool) -> tuple[float, float]:
    """A device-day's two figures, in seconds-equivalent, by device kind: (in class, out of hours).

    In class is the activity inside the school's teaching hours on a school day (nothing on
    another day); out of hours is the rest of the day's activity. Computers: active seconds;
    projectors: the longer of lamp-on and external-display time; 3G keys: used_threshold_s when
    the bytes carried reach modem_used_bytes, else 0.
    """
    def split(total_key: str, in_key: str) -> tuple[float, float]:
        inside = float(row[in_key]) if school_day else 0.0
        return inside, max(0.0, float(row[total_key]) - inside)

    if kind == "projector":
        on_in, on_out = split("projector_on_s", "projector_on_in_hours_s")
        ext_in, ext_out = split("external_display_s", "external_display_in_hours_s")
        return usage.projector_seconds(on_in, ext_in), usage.projector_seconds(on_out, ext_out)
    if kind == "modem":
        b_in, b_out = split("modem_bytes", "modem_in_hours_bytes")
        used = policy.used_threshold_s
        return (used if usage.modem_used(int(b_in), policy) else 0.0,
                used if usage.modem_used(int(b_out), policy) else 0.0)
    return split("active_s", "active_in_hours_s")


# ---------------------------------------------------------------- detect

async def detect(conn: asyncpg.Connection, ctx: JobContext) -> str:
    settings = ctx.settings
    policy = policy_from(settings)
    today = ctx.local_today()
    yesterday = today - timedelta(days=1)
    schools = await load_schools(conn)
    devices = await conn.fetch(q("fleet_devices"), settings.timezone)
    window: dict[str, list[date]] = {}
    school_days: dict[str, set[date]] = {}
    for uai, school in schools.items():
        days = school.calendar.school_days(today - timedelta(days=LOOKBACK_DAYS), yesterday)
        window[uai] = days[-policy.window_school_days:]
        school_days[uai] = set(days)

    # Each device-day's in-class figure (what verdicts read) and out-of-hours figure.
    daily: dict[Any, dict[date, float]] = defaultdict(dict)
    outside: dict[Any, dict[date, float]] = defaultdict(dict)
    of = {d["id"]: (d["kind"], d["school"]) for d in devices}
    for row in await conn.fetch(q("daily_used_since"), today - timedelta(days=LOOKBACK_DAYS),
                                policy.used_threshold_s, policy.modem_used_bytes):
        kind, uai = of.get(row["device_id"], ("other", ""))
        inside, out = measure(kind, row, policy, row["day"] in school_days.get(uai, ()))
        daily[row["device_id"]][row["day"]] = inside
        outside[row["device_id"]][row["day"]] = out

    tz = ZoneInfo(settings.timezone)
    last_day = {r["device_id"]: r["day"] for r in await conn.fetch(q("last_record_day"), today, settings.timezone)}
    # Which source each day's active time came from (docs/usage-policy.md): the device's own
    # records, or Google's daily total alone.
    first = min((w[0] for w in window.values() if w), default=today)
    sources = {r["device_id"]: (set(r["device_days"] or ()), set(r["google_days"] or ()))
               for r in await conn.fetch(q("daily_sources_since"), first)}
    starts: dict[tuple[str, date], date | None] = {}
    judged = []
    for d in devices:
        since = observed_since(d, tz)
        if since is None or d["kind"] == "disk" or d["status"] != "active":
            continue
        days = [x for x in window[d["school"]] if x >= since]
        verdict = usage.device_verdict(daily.get(d["id"], {}), days, policy)
        missed = missed_school_days(since, last_day.get(d["id"]), window[d["school"]])
        first_judged = None
        if verdict.verdict == "too_new":
            key = (d["school"], since)
            if key not in starts:
                ahead = schools[d["school"]].calendar.school_days(since, since + timedelta(days=LOOKAHEAD_DAYS))
                starts[key] = usage.judged_from(ahead, since, policy)
            first_judged = starts[key]
        span_start = max(since, window[d["school"]][0]) if window[d["school"]] else since
        late = sum(1 for day, v in outside.get(d["id"], {}).items()
                   if span_start <= day <= yesterday and v >= policy.used_threshold_s)
        own, google = sources.get(d["id"], (set(), set()))
        judged_days = set(days)
        judged.append((d, verdict, missed, first_judged, late, len(judged_days & own), len(judged_days & google)))

    # Silent: no record for N school days while others in the same school report. When none
    # of a school's devices report, the school is silent (a network or power problem), not
    # each device.
    quiet: dict[str, list[bool]] = defaultdict(list)
    for d, _, missed, *_ in judged:
        quiet[d["school"]].append(len(missed) >= settings.silent_school_days)
    school_silent = {uai: all(v) for uai, v in quiet.items()}
    cols: dict[str, list[Any]] = defaultdict(list)
    for d, verdict, missed, first_judged, late, own_days, google_days in judged:
        is_silent = len(missed) >= settings.silent_school_days and not school_silent[d["school"]]
        cols["id"].append(d["id"])
        cols["silent"].append(is_silent)
        cols["low"].append(verdict.verdict == "irregular")
        cols["verdict"].append(verdict.verdict)
        cols["used"].append(verdict.used_days)
        cols["judged"].append(verdict.judged_days)
        cols["missed"].append(len(missed))
        cols["since"].append(missed[0] if missed else None)
        cols["judged_from"].append(first_judged)
        cols["late"].append(late)
        cols["own"].append(own_days)
        cols["google"].append(google_days)
    async with conn.transaction():
        await conn.execute(q("device_flags_clear"))
        await conn.execute(q("device_flags_insert"), cols["id"], cols["silent"], cols["low"], cols["verdict"],
                           cols["used"], cols["judged"], cols["missed"], cols["since"], cols["judged_from"],
                           cols["late"], cols["own"], cols["google"])
    return (f"{len(judged)} devices judged, {sum(cols['silent'])} silent, {sum(cols['low'])} low-use, "
            f"{sum(school_silent.values())} silent schools")


def observed_since(device: Any, tz: ZoneInfo) -> date | None:
    """The first local day a device can be judged from: its enrolment, or the earliest day Google
    knows it from (a Chromebook without the extension never enrols), whichever is earlier; None
    for a device known from the inventory only."""
    days = [device["enrolled_at"].astimezone(tz).date()] if device["enrolled_at"] is not None else []
    if device["google_since"] is not None:
        days.append(device["google_since"])
    return min(days, default=None)


def missed_school_days(since: date, last_day: date | None, window: list[date]) -> list[date]:
    """Completed school days in the window after the last day with records, a figure from
    Google or a sync with Google (or, without any, since the device is observed).

    Judged on the records' own days, not on when they arrived: a laptop that was offline but
    in use, and sent its backlog later, was not silent on those days.
    """
    last = last_day if last_day is not None else since - timedelta(days=1)
    return [x for x in window if x > last and x >= since]


# ---------------------------------------------------------------- snapshot

async def google_figures(conn: asyncpg.Connection, settings: Any) -> snap.GoogleFigures:
    """The Google Admin connector's health, and the auto-update expiry of the Chromebooks it
    listed at its latest sync: per model, the earliest expiry; per school, model and state
    (expired, soon: within auto_update_soon_days, later, unknown: Google gave no date), how many."""
    state = dict(await conn.fetchrow(q("google_sync_state")) or {})
    now = datetime.now(UTC).timestamp()
    soon = now + settings.auto_update_soon_days * 86400
    models: dict[str, float] = {}
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in await conn.fetch(q("google_expiry")):
        model = r["model"] or "unknown"
        aue = float(r["aue"]) if r["aue"] is not None else None
        if aue is not None:
            models[model] = min(aue, models.get(model, aue))
        when = "unknown" if aue is None else "expired" if aue <= now else "soon" if aue <= soon else "later"
        school = r["school"] or ou_school(r["org_unit_path"], settings.google_ou_schools) or ""
        counts[(school, model, when)] += 1
    sync = {k: float(v) if k in ("last_attempt", "last_success") and v is not None else v for k, v in state.items()}
    return snap.GoogleFigures(
        sync=msgspec.convert(sync, snap.GoogleSync), models=models,
        expiry=[snap.ExpiryCount(s, m, w, n) for (s, m, w), n in sorted(counts.items())])


async def snapshot(conn: asyncpg.Connection, ctx: JobContext) -> str:
    settings = ctx.settings
    policy = policy_from(settings)
    today = ctx.local_today()
    schools = await load_schools(conn)
    devices = await conn.fetch(q("fleet_devices"), settings.timezone)
    flags = {r["device_id"]: r for r in await conn.fetch(q("device_flags_all"))}
    today_rows = {r["device_id"]: r for r in await conn.fetch(q("daily_usage_since"), today) if r["day"] == today}
    day_ago = datetime.now(UTC) - timedelta(days=1)
    school_of = {d["id"]: d["school"] for d in devices}
    # Gaps in the agents' seq sequences first (collector/tice_collector/db/queries.sql spool_gaps_update).
    await conn.execute(q("spool_gaps_update"), settings.spool_gap_grace_s)
    spool_rows = await conn.fetch(q("spool_dropped_by_device"))
    dropped = {r["device_id"]: r["dropped"] for r in spool_rows}
    gaps = {r["device_id"]: r["gaps"] for r in spool_rows}
    shared = await identity.recent(conn)

    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    per_kind: dict[tuple[str, str], snap.KindFigures] = {}
    classes: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    judged: dict[str, list[bool]] = defaultdict(list)  # every judged device of a school, any kind or class
    school_day = {uai: school.calendar.is_school_day(today) for uai, school in schools.items()}
    per_device = []
    for d in devices:
        key = (d["school"], d["kind"])
        counts[(d["school"], d["kind"], d["status"])] += 1
        if d["status"] != "active":
            continue
        bucket = per_kind.setdefault(key, snap.KindFigures(*key))
        bucket.enrolled += d["enrolled_at"] is not None
        bucket.seen_day += bool(d["last_seen_at"] and d["last_seen_at"] >= day_ago)
        # Never reported since it was enrolled or imported: the cupboard at a glance.
        bucket.never_seen += d["last_seen_at"] is None
        bucket.spool_dropped += dropped.get(d["id"], 0)
        bucket.spool_gaps += gaps.get(d["id"], 0)
        bucket.shared_identity += d["id"] in shared
        row = today_rows.get(d["id"])
        inside, outside = (0.0, 0.0) if row is None else measure(d["kind"], row, policy,
                                                                 school_day.get(d["school"], False))
        bucket.used_today += row is not None and inside >= policy.used_threshold_s
        bucket.used_out_of_hours_today += outside > 0 and outside >= policy.used_threshold_s
        f = flags.get(d["id"])
        if f is not None:
            bucket.regular += f["verdict"] == "regular"
            bucket.judged += f["verdict"] != "too_new"
            bucket.too_new += f["verdict"] == "too_new"
            bucket.silent += f["silent"]
            bucket.low_use += f["low_use"]
            bucket.days_device += f["device_days"]
            bucket.days_google += f["google_days"]
            bucket.days_none += f["judged_days"] - f["device_days"] - f["google_days"]
            if f["verdict"] != "too_new":
                judged[d["school"]].append(f["verdict"] == "regular")
                if d["class_id"] is not None:
                    classes[d["school"]][d["class_id"]].append(f["verdict"] == "regular")
        if settings.per_device_metrics and d["enrolled_at"] is not None:
            per_device.append(snap.DeviceFigures(
                device=str(d["id"]), school=d["school"], kind=d["kind"],
                last_seen=d["last_seen_at"].timestamp() if d["last_seen_at"] else None,
                # Active seconds are a computer's figure: a peripheral's day is in its own series.
                active_today_s=(float(row["active_s"]) if row is not None else 0.0)
                if d["kind"] in COMPUTER_KINDS else None,
            ))

    school_rows = []
    silent_schools = 0
    own_flags: dict[str, list[Any]] = defaultdict(list)
    for f in flags.values():
        own_flags[school_of.get(f["device_id"], "")].append(f)
    for uai, school in schools.items():
        judged_classes = classes[uai]
        regular_classes = sum(usage.class_regular(v, policy) for v in judged_classes.values())
        mine = own_flags[uai]
        school_silent = bool(mine) and all(f["missed_days"] >= settings.silent_school_days for f in mine)
        silent_schools += school_silent
        school_rows.append(snap.SchoolFigures(
            school=uai, zone=school.zone,
            school_day=school_day[uai],
            classes=len(judged_classes), classes_regular=regular_classes,
            judged=len(judged[uai]), regular=sum(judged[uai]),
            regular_ratio=usage.school_ratio(sum(judged[uai]), len(judged[uai])),
            silent=school_silent,
        ))
    zones = sorted({s.zone for s in schools.values()} | {"A"})
    coverage = {z: cal.coverage(z, today) for z in zones}
    for zone, ok in coverage.items():
        if not ok:
            log.warning("school calendar has no holiday data for zone %s on %s: school days are guessed from "
                        "the timetable alone; import the official calendar (tice-collector calendar import)",
                        zone, today)
    body = snap.FleetSnapshot(
        today=today,
        peripherals=(await peripheral_figures(conn, settings, today, today_rows)
                     if settings.per_device_metrics else []),
        devices=[snap.DeviceCount(s, k, st, n) for (s, k, st), n in sorted(counts.items())],
        kinds=[v for _, v in sorted(per_kind.items())],
        schools=school_rows,
        coverage=coverage,
        per_device=per_device,
        google=await google_figures(conn, settings),
    )
    await conn.execute(q("fleet_snapshot_set"), snap.encode(body))
    return f"{len(devices)} devices, {len(schools)} schools, {silent_schools} silent schools"


async def peripheral_figures(conn: asyncpg.Connection, settings: Any, today: date,
                             today_rows: Mapping[Any, asyncpg.Record]) -> list[snap.PeripheralFigures]:
    """Each active peripheral's figures for /metrics, from its latest reading and its daily rows
    (collector/tice_collector/peripherals.py; `today_rows`: today's daily_usage row by device id): a 3G key's
    connection, signal, network type, connected seconds today, bytes this plan month and their
    share of the quota; a projector's power, on-time today, lamp time, lamp life left and errors;
    a backup disk's last connection, SMART health and space. Times are Unix seconds."""
    rows = await conn.fetch(q("peripherals_latest"))
    keys = [r["id"] for r in rows if r["kind"] == "modem"]
    month = periph.plan_month_start(today, settings.modem_quota_reset_day)
    carried = {r["device_id"]: r["bytes"] for r in await conn.fetch(q("modem_bytes_since"), month, keys)}
    now = datetime.now(UTC)
    max_age = settings.peripheral_state_max_age_s
    out: list[snap.PeripheralFigures] = []
    for r in rows:
        taken = r["modem_at"] or r["projector_at"]
        ident = {"peripheral": r["peripheral"], "school": r["school"], "host": str(r["host_id"]),
                 "reading_at": taken.timestamp() if taken else None}
        if r["kind"] == "modem":
            sig = periph.signal(r["rsrp_dbm"], r["rssi_dbm"])
            month_bytes = int(carried.get(r["id"], 0))
            day = today_rows.get(r["id"])
            out.append(snap.ModemFigures(
                **ident, connected=periph.modem_connected(r, now, max_age), signal=sig,
                connected_today_s=float(day["modem_connected_s"]) if day is not None else 0.0,
                technology=r["technology"], month_bytes=month_bytes,
                quota_ratio=periph.quota_ratio(month_bytes, settings.modem_quota_bytes)))
        elif r["kind"] == "projector":
            day = today_rows.get(r["id"])
            out.append(snap.ProjectorFigures(
                **ident, power=periph.projector_power(r, now, max_age),
                # The figure its verdict reads: on-time, else its host's external display.
                on_today_s=0.0 if day is None else usage.projector_seconds(
                    float(day["projector_on_s"]), float(day["external_display_s"])),
                lamp_s=None if r["lamp_hours"] is None else r["lamp_hours"] * 3600.0,
                lamp_left_s=periph.lamp_remaining_s(r["lamp_hours"], settings.projector_lamp_life_hours),
                errors=periph.error_levels(r)))
        else:
            connected = r["last_connected_at"]
            out.append(snap.DiskFigures(
                **ident, last_connected=connected.timestamp() if connected else None, smart_ok=r["smart_ok"],
                free_bytes=r["free_bytes"], size_bytes=r["total_bytes"]))
    return out


DETECT = JobSpec("detect", detect, lambda s: s.detect_interval_s,
                 "judge each device on its school calendar: used regularly, low use, silent", lock_key=1)
SNAPSHOT = JobSpec("snapshot", snapshot, lambda s: s.snapshot_interval_s,
                   "aggregate the fleet figures that every replica exports on /metrics", lock_key=2)
