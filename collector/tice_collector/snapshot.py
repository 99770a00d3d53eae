"""The fleet snapshot: the figures the snapshot job writes (collector/tice_collector/fleet.py) and every
replica's /metrics renders (collector/tice_collector/metrics.py), typed so that both sides name the same fields.

Stored as JSON in the one row of `fleet_snapshot` (column `body`, jsonb). Field names are those
of the untyped dict it replaces; a field added later has a default, so a row written by an older
collector still decodes (unknown fields are ignored). Times are Unix seconds; durations seconds.
"""

from __future__ import annotations

from datetime import date

import msgspec


class DeviceCount(msgspec.Struct):
    """How many devices of a school and kind are in an inventory status."""

    school: str
    kind: str
    status: str
    n: int


class KindFigures(msgspec.Struct):
    """The active devices of one school and kind: counts, each the number of devices."""

    school: str
    kind: str
    enrolled: int = 0
    seen_day: int = 0  # reported in the last 24 hours
    never_seen: int = 0
    used_today: int = 0
    used_out_of_hours_today: int = 0
    judged: int = 0  # judged on their window (any verdict but too_new)
    too_new: int = 0
    regular: int = 0
    silent: int = 0
    low_use: int = 0
    spool_dropped: int = 0  # records the agents dropped from a full spool
    spool_gaps: int = 0
    shared_identity: int = 0
    # School days in the judged windows, by where their active time came from.
    days_device: int = 0
    days_google: int = 0
    days_none: int = 0


class SchoolFigures(msgspec.Struct):
    school: str
    zone: str
    school_day: bool
    classes: int  # classes with at least one judged device
    classes_regular: int
    judged: int
    regular: int
    regular_ratio: float | None  # None: no judged device
    silent: bool


class DeviceFigures(msgspec.Struct):
    """One device's own series (settings: per_device_metrics)."""

    device: str
    school: str
    kind: str
    last_seen: float | None
    active_today_s: float | None  # a computer's figure; None for a peripheral


class ModemFigures(msgspec.Struct, tag_field="kind", tag="modem"):
    peripheral: str  # its identity, a salted hash
    school: str
    host: str
    reading_at: float | None
    connected: bool
    signal: tuple[str, float] | None  # (measure: rsrp or rssi, dBm)
    connected_today_s: float
    technology: str | None
    month_bytes: int
    quota_ratio: float | None


class ProjectorFigures(msgspec.Struct, tag_field="kind", tag="projector"):
    peripheral: str
    school: str
    host: str
    reading_at: float | None
    power: str  # one of tice_collector.peripherals.POWER_STATES
    on_today_s: float
    lamp_s: float | None
    lamp_left_s: float | None
    errors: dict[str, int]  # component: 0 ok, 1 warning, 2 error


class DiskFigures(msgspec.Struct, tag_field="kind", tag="disk"):
    peripheral: str
    school: str
    host: str
    reading_at: float | None
    last_connected: float | None
    smart_ok: bool | None
    free_bytes: int | None
    size_bytes: int | None


PeripheralFigures = ModemFigures | ProjectorFigures | DiskFigures


def peripheral_kind(row: PeripheralFigures) -> str:
    """modem, projector or disk: the tag its JSON form carries in `kind`."""
    return str(type(row).__struct_config__.tag)


class GoogleSync(msgspec.Struct):
    """The Google Admin connector's latest sync (table google_sync_state)."""

    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    devices_seen: int = 0
    devices_matched: int = 0
    unknown_serials: int = 0
    quota_retries: int = 0
    implausible_days: int = 0


class ExpiryCount(msgspec.Struct):
    school: str
    model: str
    state: str  # expired, soon, later, unknown
    n: int


class GoogleFigures(msgspec.Struct):
    sync: GoogleSync
    models: dict[str, float]  # model: earliest auto-update expiry of its devices
    expiry: list[ExpiryCount]


class FleetSnapshot(msgspec.Struct):
    today: date  # the local day the figures are for
    devices: list[DeviceCount]
    kinds: list[KindFigures]
    schools: list[SchoolFigures]
    coverage: dict[str, bool]  # zone: the holiday calendar has data for today
    per_device: list[DeviceFigures]
    peripherals: list[PeripheralFigures] = msgspec.field(default_factory=list)
    google: GoogleFigures | None = None


def encode(snapshot: FleetSnapshot) -> str:
    return msgspec.json.encode(snapshot).decode()


def decode(text: str | bytes) -> FleetSnapshot:
    """The snapshot stored as JSON; msgspec.ValidationError names the field when it does not fit."""
    return msgspec.json.decode(text, type=FleetSnapshot)
