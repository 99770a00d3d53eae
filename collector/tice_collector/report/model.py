"""The evidence report's shape: the JSON answer, the CSV columns and the OpenAPI schema.

`Row` is the figures table: one row per school (or the city) and device kind (or "all"), for
the whole period (`week` null) and for each week of it. Its fields, in order, are the CSV
columns, documented in docs/report.md (a test checks both lists agree). The JSON carries the
same rows plus the lists the HTML shows (cupboard, silent devices, 3G keys, projectors).

Units are in the names: `_bytes`, `_hours`, `_minutes`; shares are 0..1, rounded to 4 decimals;
null where a figure has no meaning (a share of nothing, a verdict over one week).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from msgspec import Struct, field, structs

Scope = Literal["city", "school"]
CupboardReason = Literal["never_enrolled", "no_data", "not_used_in_class"]


class Row(Struct, kw_only=True):
    """Figures of one school (or the city) and one device kind (or `all`), for the period or a week.

    Judged on each school's school days only, inside its teaching hours. `devices` counts the
    inventory (never-enrolled devices included), `used` those used in class on at least one
    school day; `judged` the enrolled devices with at least `min_judged_days` school days in
    the period, `regular` those of them used on at least `regular_share` of those days.
    """

    scope: Scope
    school: str  # UAI; empty for the city
    school_name: str  # empty for the city
    kind: str  # a device kind, or "all"
    week: date | None  # the Monday of the week; null: the whole period
    school_days: int  # the school's school days in the period or week (city: days any school taught)
    devices: int
    enrolled: int
    used: int
    used_share: float | None  # used / devices
    judged: int | None  # null on week rows
    too_new: int | None
    regular: int | None
    regular_share: float | None  # regular / judged
    classes: int | None  # classes with a judged device; "all" rows of the period only
    classes_regular: int | None
    active_minutes_median: float | None  # median over devices of in-class minutes per school day
    device_days: int  # school days enrolled devices could report on
    device_days_used: int
    device_days_no_data: int
    cupboard: int | None  # devices never used in class in the period; null on week rows
    silent: int | None  # devices silent at the end of the period; null on week rows
    modem_bytes: int  # 3G bytes carried, every day of the period
    modem_in_class_bytes: int  # of which on school days inside teaching hours
    projector_on_hours: float  # projector lamp on, every day of the period
    projector_on_in_class_hours: float  # of which on school days inside teaching hours


CSV_COLUMNS: tuple[str, ...] = tuple(f.encode_name for f in structs.fields(Row))


class CupboardDevice(Struct, kw_only=True):
    """A device never used in class on a school day of the period, and why as far as the data
    tells: `never_enrolled` (no agent), `no_data` (enrolled, nothing received on those days:
    off, or not reporting), `not_used_in_class` (it reported, and never reached the threshold)."""

    school: str
    kind: str
    asset_tag: str
    class_: str | None = field(name="class")
    reason: CupboardReason
    school_days: int  # school days of the period since its enrolment
    days_with_data: int
    last_data_day: date | None  # the last day it sent anything, up to the period's end


class SilentDevice(Struct, kw_only=True):
    """A device with no data on its school's last `silent_school_days` school days of the
    period while other devices of the school reported."""

    school: str
    kind: str
    asset_tag: str
    class_: str | None = field(name="class")
    last_data_day: date | None
    missed_school_days: int  # school days of the period since its last data (or enrolment)


class SilentSchool(Struct, kw_only=True):
    """A school none of whose enrolled devices reported on its last `silent_school_days` school
    days of the period: a network or power problem, not each device."""

    school: str
    school_name: str
    devices: int


class ModemLine(Struct, kw_only=True):
    """A 3G key's data over the period. `counted_on` says where the bytes were counted: `host`,
    the computer the key was plugged into (its asset tag); `key`, the key itself."""

    school: str
    kind: str
    asset_tag: str
    class_: str | None = field(name="class")
    counted_on: Literal["host", "key"]
    bytes: int
    in_class_bytes: int
    used_days: int  # school days with at least modem_used_bytes inside teaching hours
    school_days: int


class ProjectorLine(Struct, kw_only=True):
    """A projector's lamp-on time over the period. `counted_on`: `host`, the computer whose
    agent polls the projector; `projector`, the projector itself."""

    school: str
    kind: str
    asset_tag: str
    class_: str | None = field(name="class")
    counted_on: Literal["host", "projector"]
    on_hours: float
    on_in_class_hours: float
    used_days: int  # school days with at least used_threshold_s of lamp-on time in teaching hours
    school_days: int


class SchoolInfo(Struct, kw_only=True):
    """A school of the report and the calendar it is judged on."""

    uai: str
    name: str
    zone: str
    timetable: str
    school_days: int
    own_hours: bool  # its own teaching hours on some weekday
    overrides: int  # closures and make-up days (its own and city-wide) inside the period
    holiday_data: bool  # the bundled holiday data covers the whole period for its zone
    devices: int


class Period(Struct, kw_only=True):
    """The days reported on, both included. `default_term`: no dates were given, so the period
    is the current school term up to yesterday (or the last term, during a break)."""

    from_: date = field(name="from")
    to: date
    default_term: bool


class Method(Struct, kw_only=True):
    """The policy in force when the report was made (collector settings), so the figures can be
    checked by hand."""

    used_threshold_s: float
    modem_used_bytes: int
    regular_share: float
    min_judged_days: int
    class_regular_share: float
    silent_school_days: int
    alert_window_school_days: int  # the alerts' rolling window; the report judges the whole period
    teaching_hours: str
    wednesday_hours: str
    timezone: str
    break_days: int  # a term ends at a run of at least this many days without school


class Coverage(Struct, kw_only=True):
    """How much is known: school days enrolled devices could report on, and on how many of
    them nothing arrived (a day without data counts as not used)."""

    device_days: int
    with_data: int
    no_data: int
    no_data_share: float | None
    never_enrolled: int  # inventory devices without an agent: no data expected


class UsageReport(Struct, kw_only=True):
    """The evidence report over a period: figures by school and kind, the devices behind them
    (by asset tag and class, never people), and the method to check them."""

    generated_at: datetime
    scope: str  # "city", or the UAI of the one school reported on
    period: Period
    method: Method
    coverage: Coverage
    schools: list[SchoolInfo]
    rows: list[Row]
    cupboard: list[CupboardDevice]
    silent_devices: list[SilentDevice]
    silent_schools: list[SilentSchool]
    modems: list[ModemLine]
    projectors: list[ProjectorLine]
