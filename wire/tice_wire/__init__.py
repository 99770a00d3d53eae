"""The wire format between devices and the collector, defined once.

This module imports nothing heavier than msgspec so that the agent can import it too.
`collector/tice_collector/openapi.yaml` is generated from these types (`python -m tice_collector.openapi`).

Privacy: every field is a device-level fact. There is deliberately no field for a user
name, a window title, a URL, a location, or a SIM identifier (IMSI/ICCID/MSISDN).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

API_VERSION = "v1"

# Bounds shared by the types below. Validation uses Meta bounds and Literal sets,
# not regular expressions: they are several times cheaper on the ingest hot path.
MAX_RECORDS_PER_BATCH = 5000
MAX_SHORT_TEXT = 64
MAX_ERROR_TEXT = 200

# The longest interval an agent may be configured to report (the agent's probe interval_s, the
# Chrome extension's report_interval_s). Agents report every 60 s by default.
MAX_PROBE_INTERVAL_S = 3600.0
# The longest interval one record may cover: twice the longest configurable one (an interval is
# closed at its configured length plus a tolerance: a late or missed tick) plus 300 s of slack
# (the extension's alarms fire at most every 30 s, and late). A record covering more is refused
# at the door as implausible (docs/ingest.md).
MAX_INTERVAL_S = 2 * MAX_PROBE_INTERVAL_S + 300.0
# The parts of an interval may add up to at most its duration plus this: agents round each
# part to the millisecond, so their sum can exceed the rounded duration by a few milliseconds.
PARTS_TOLERANCE_S = 1.0

Seq = Annotated[int, Meta(ge=0, le=2**62)]
# An interval's length; more than MAX_INTERVAL_S is refused by `Record.implausible`, not by the
# decoder, so the refusal has its own error code and metric.
Interval = Annotated[float, Meta(ge=0, extra_json_schema={"maximum": MAX_INTERVAL_S})]
# Seconds within an interval: together at most its duration (plus PARTS_TOLERANCE_S).
Part = Annotated[float, Meta(ge=0, extra_json_schema={"maximum": MAX_INTERVAL_S + PARTS_TOLERANCE_S})]
Ratio = Annotated[float, Meta(ge=0, le=1)]
Bytes = Annotated[int, Meta(ge=0, le=2**62)]
Count = Annotated[int, Meta(ge=0, le=2**31)]
Dbm = Annotated[float, Meta(ge=-200, le=50)]
# PostgreSQL text cannot hold a NUL character: refused at the door, with its path.
NO_NUL = "^[^\\x00]*$"
ShortText = Annotated[str, Meta(max_length=MAX_SHORT_TEXT, pattern=NO_NUL)]
Serial = Annotated[str, Meta(min_length=1, max_length=MAX_SHORT_TEXT)]
Secret = Annotated[str, Meta(min_length=8, max_length=256)]
# Timestamps must carry a UTC offset: a naive local time from a school laptop is ambiguous.
Timestamp = Annotated[datetime, Meta(tz=True)]

DeviceKind = Literal["chromebook", "laptop", "desktop", "projector", "modem", "disk", "other"]
DEVICE_KINDS: tuple[str, ...] = DeviceKind.__args__  # type: ignore[attr-defined]


class Implausible(Struct, frozen=True):
    """Why a record cannot be true: the field to blame, a stable reason code, a sentence."""

    field: str
    reason: Literal["interval_too_long", "parts_exceed_interval"]
    detail: str


IMPLAUSIBLE_REASONS: tuple[str, ...] = ("interval_too_long", "parts_exceed_interval")


def _too_long(field: str, value: float) -> Implausible | None:
    if value > MAX_INTERVAL_S:
        return Implausible(field, "interval_too_long",
                           f"{field} {value:g} s is longer than the longest interval a record may cover "
                           f"({MAX_INTERVAL_S:g} s)")
    return None


def _parts(duration_s: float, parts: dict[str, float]) -> Implausible | None:
    total = sum(parts.values())
    if total > duration_s + PARTS_TOLERANCE_S:
        names = " + ".join(parts)
        blamed = max(parts, key=parts.__getitem__)  # the largest part is the likeliest wrong one
        return Implausible(blamed, "parts_exceed_interval",
                           f"{names} = {total:g} s is more than the interval's duration_s {duration_s:g} s "
                           f"(tolerance {PARTS_TOLERANCE_S:g} s)")
    return None


class Record(Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Fields every record carries.

    `seq` is the record's delivery key within its spool: (device, spool, seq) is unique, and
    a resend of the same record is stored once. `at` is the device's own clock when the
    record was taken (for intervals: when the interval started), exactly as the device sent it.
    """

    seq: Seq
    at: Timestamp

    def implausible(self) -> Implausible | None:
        """None when the record can be true; else why not. Interval records override it: an
        interval is at most MAX_INTERVAL_S long, and its parts add up to at most its length."""
        return None


class Usage(Record, tag="usage"):
    """Whether the device was used during one interval. Locked counts as idle.

    The parts (`active_s`, `idle_s`, `locked_s`, `no_session_s`, `unclassified_s`) split the
    interval's `duration_s` between them.
    """

    duration_s: Interval
    active_s: Part
    idle_s: Part = 0.0
    locked_s: Part = 0.0
    # No user session at all during the interval (nobody logged in): the device was unused.
    no_session_s: Part = 0.0
    # No idle source could be trusted (say a Wayland desktop that never sets logind's IdleHint),
    # or none answered: neither active nor idle, so it never counts as use.
    unclassified_s: Part = 0.0
    source: Literal["win32", "x11", "mutter", "wayland", "kde", "logind", "chrome", "admin", "none"] = "none"

    def implausible(self) -> Implausible | None:
        d = self.duration_s
        if d > MAX_INTERVAL_S:
            return _too_long("duration_s", d)
        # One sum on the hot path; the dict and the sentence only for a refusal.
        if self.active_s + self.idle_s + self.locked_s + self.no_session_s + self.unclassified_s \
                > d + PARTS_TOLERANCE_S:
            return _parts(d, {"active_s": self.active_s, "idle_s": self.idle_s, "locked_s": self.locked_s,
                              "no_session_s": self.no_session_s, "unclassified_s": self.unclassified_s})
        return None


class Health(Record, tag="health"):
    cpu_load_ratio: Annotated[float, Meta(ge=0, le=1024)] | None = None  # 1-min load / cores
    memory_used_ratio: Ratio | None = None
    disk_free_bytes: Bytes | None = None
    disk_total_bytes: Bytes | None = None
    battery_ratio: Ratio | None = None
    battery_plugged: bool | None = None
    battery_health_ratio: Annotated[float, Meta(ge=0, le=2)] | None = None
    uptime_s: Annotated[float, Meta(ge=0, le=86_400 * 3650)] | None = None
    boot_at: Timestamp | None = None


class Link(Record, tag="link"):
    """Network connectivity as the device sees it."""

    interface: Literal["ethernet", "wifi", "cellular", "other", "none"]
    link_up: bool
    collector_reachable: bool | None = None
    rtt_s: Annotated[float, Meta(ge=0, le=600)] | None = None
    dns_ok: bool | None = None


# A peripheral's identity (3G key, projector, backup disk): the first 128 bits, in hex, of
# HMAC-SHA256(deployment salt, "<kind>:<identifier>"). The salt is a secret of the collector's
# database, given to agents at enrolment (EnrollResult.peripheral_salt): every agent of the
# deployment computes the same id for the same key or disk, and the records alone cannot be
# reversed (an unsalted hash of a 15-digit IMEI falls to brute force in seconds). See
# docs/peripherals.md.
PeripheralId = Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]
# A mobile operator's code, MCC + MNC ("20801"): the network, not the subscriber.
Plmn = Annotated[str, Meta(pattern="^[0-9]{5,6}$")]
Db = Annotated[float, Meta(ge=-60, le=60)]
# Counters a device keeps itself (not parts of an interval): up to ten years.
CounterSeconds = Annotated[float, Meta(ge=0, le=86_400 * 3650)]

ModemState = Literal["connected", "connecting", "disconnected", "disconnecting", "failed",
                     "searching", "registered", "locked", "disabled", "data_limit", "unknown"]
ModemTech = Literal["none", "gsm", "gprs", "edge", "umts", "hsdpa", "hsupa", "hspa", "hspa+",
                    "lte", "5gnr", "unknown"]


class Modem(Record, tag="modem"):
    """A 3G/4G USB key, read through its HiLink web API or through ModemManager.

    `up` is false when the key did not answer: that is data, not an error. `modem_id` is the
    key's identity (its IMEI as a PeripheralId), absent when the agent has no salt yet or the
    key hides its IMEI. `state` "data_limit" is a key refusing to connect because its plan's
    data allowance is spent.

    The interval: `duration_s` is the time since the agent's previous reading of this key
    (absent on the first reading after the agent starts, and when the key did not answer);
    `connected_s` is the part of it with a data connection, never more than `duration_s`;
    `rx_bytes`/`tx_bytes` are the bytes carried during it.

    Counters as the key keeps them, not parts of the interval: `session_s`,
    `session_rx_bytes`, `session_tx_bytes` since the current connection began;
    `total_connected_s`, `total_rx_bytes`, `total_tx_bytes` since the key's statistics were
    last cleared.

    Never IMSI, ICCID, phone number, cell or area ids: there is no field for them.
    """

    up: bool
    modem_id: PeripheralId | None = None
    state: ModemState = "unknown"
    technology: ModemTech | None = None
    signal_ratio: Ratio | None = None
    bars: Annotated[int, Meta(ge=0, le=5)] | None = None
    rssi_dbm: Dbm | None = None
    rsrp_dbm: Dbm | None = None
    rsrq_db: Db | None = None
    sinr_db: Db | None = None
    roaming: bool | None = None
    plmn: Plmn | None = None
    rx_bytes: Bytes | None = None
    tx_bytes: Bytes | None = None
    # Seconds connected within the interval of `duration_s` (a reading without duration_s
    # stands for 60 s in the rollups).
    connected_s: Part | None = None
    duration_s: Interval | None = None
    session_s: CounterSeconds | None = None
    session_rx_bytes: Bytes | None = None
    session_tx_bytes: Bytes | None = None
    total_connected_s: CounterSeconds | None = None
    total_rx_bytes: Bytes | None = None
    total_tx_bytes: Bytes | None = None

    def implausible(self) -> Implausible | None:
        if self.duration_s is not None:
            if (bad := _too_long("duration_s", self.duration_s)) is not None:
                return bad
            if self.connected_s is not None:
                return _parts(self.duration_s, {"connected_s": self.connected_s})
        elif self.connected_s is not None:
            return _too_long("connected_s", self.connected_s)
        return None


HealthLevel = Literal["ok", "warning", "error"]
LampHours = Annotated[int, Meta(ge=0, le=999_999)]
MAX_LAMPS = 8  # PJLink allows up to eight lamps
ProjectorInput = Literal["rgb", "video", "digital", "storage", "network", "internal"]


class Projector(Record, tag="projector"):
    """A networked projector (PJLink class 1), one reading per poll.

    `up` false = no answer on the network (switched off at the mains, unplugged, wrong
    address). A projector that refuses the connection is up and in `standby`: many models
    close their network service in standby. `projector_id` is its identity: the school and
    the address the agent polls, as a PeripheralId (PJLink class 1 has no serial number).

    `duration_s` is the time since the agent's previous reading of this projector (absent on
    the first one), so lamp-on time can be summed. `lamps_hours`/`lamps_on` are per lamp;
    `lamp_hours` is the highest of them (the lamp nearest its end of life) and `lamp_on`
    whether any lamp is lit. `fan` .. `other` are the projector's own error status per
    component. A field the projector did not give (ERR1..ERR4 to that query) is absent.
    """

    up: bool
    projector_id: PeripheralId | None = None
    power: Literal["standby", "on", "cooling", "warming", "unknown"] = "unknown"
    # The polling interval this reading stands for, so lamp-on time can be summed (none: 60 s).
    duration_s: Interval | None = None
    lamp_hours: LampHours | None = None
    lamp_on: bool | None = None
    lamps_hours: Annotated[list[LampHours], Meta(max_length=MAX_LAMPS)] | None = None
    lamps_on: Annotated[list[bool], Meta(max_length=MAX_LAMPS)] | None = None
    fan: HealthLevel | None = None
    lamp: HealthLevel | None = None
    temperature: HealthLevel | None = None
    cover: HealthLevel | None = None
    filter: HealthLevel | None = None
    other: HealthLevel | None = None
    input_kind: ProjectorInput | None = None
    input_number: Annotated[int, Meta(ge=1, le=35)] | None = None
    name: ShortText | None = None
    manufacturer: Annotated[str, Meta(max_length=32)] | None = None
    model: Annotated[str, Meta(max_length=32)] | None = None
    pjlink_class: Annotated[int, Meta(ge=1, le=9)] | None = None

    def implausible(self) -> Implausible | None:
        return None if self.duration_s is None else _too_long("duration_s", self.duration_s)


class Display(Record, tag="display"):
    """External display (projector) connected to a laptop, during one interval."""

    duration_s: Interval
    external_s: Part
    external_connected: bool
    displays: Annotated[int, Meta(ge=0, le=64)] = 1

    def implausible(self) -> Implausible | None:
        d = self.duration_s
        if d > MAX_INTERVAL_S:
            return _too_long("duration_s", d)
        if self.external_s > d + PARTS_TOLERANCE_S:
            return _parts(d, {"external_s": self.external_s})
        return None


class Disk(Record, tag="disk"):
    """An external backup disk (the school director's), as the PC it is plugged into sees it.

    `present`: plugged in at `at`. A disk the agent has seen before and does not see now is
    reported too, with `present` false, its `disk_id` and `last_connected_at`, so a backup
    routine that stopped shows up. `disk_id` is its identity (its serial number as a
    PeripheralId). `total_bytes` is the disk's capacity, `free_bytes` the free space on its
    mounted file systems. `smart_ok` is SMART's overall health verdict; it is absent when the
    disk (or its USB bridge) gives no SMART data. `last_connected_at` is the last time the
    agent saw the disk plugged in (`at` itself when present). `last_backup_at` is not filled
    by the agent's disk probe.
    """

    present: bool
    disk_id: PeripheralId | None = None
    free_bytes: Bytes | None = None
    total_bytes: Bytes | None = None
    smart_ok: bool | None = None
    temperature_c: Annotated[float, Meta(ge=-40, le=150)] | None = None
    power_on_hours: Annotated[int, Meta(ge=0, le=10_000_000)] | None = None
    last_backup_at: Timestamp | None = None
    last_connected_at: Timestamp | None = None


class ProbeStatus(Record, tag="probe"):
    """A probe's own outcome, so a failing probe is visible as data on the server."""

    probe: ShortText
    ok: bool
    duration_s: Annotated[float, Meta(ge=0, le=3600)]
    error: Annotated[str, Meta(max_length=MAX_ERROR_TEXT, pattern=NO_NUL)] | None = None


AnyRecord = Usage | Health | Link | Modem | Projector | Display | Disk | ProbeStatus
RECORD_TYPES: tuple[type[Record], ...] = (Usage, Health, Link, Modem, Projector, Display, Disk, ProbeStatus)


class Batch(Struct, forbid_unknown_fields=True, kw_only=True):
    """What an agent POSTs to /api/v1/reports (JSON, optionally gzip-encoded).

    `spool` is a random id the agent creates with its spool; with each record's `seq` it makes
    the delivery key. `sent_at` is the device clock at send time: the collector compares it with
    its own clock to detect and correct a device clock that is off (see docs/ingest.md).
    `dropped` is the agent's running count of records its bounded spool had to drop.
    """

    device_id: uuid.UUID
    spool: uuid.UUID
    sent_at: Timestamp
    records: Annotated[list[AnyRecord], Meta(max_length=MAX_RECORDS_PER_BATCH)]
    dropped: Count = 0
    agent_version: ShortText | None = None


RejectReason = Literal["future_timestamp", "too_old"]


class Rejection(Struct, kw_only=True):
    seq: int
    reason: RejectReason


class BatchResult(Struct, kw_only=True):
    """The collector's answer once the batch is committed.

    A well-formed batch is stored even when some of its records fall outside the accepted
    time window: those are listed in `rejections` (partial success, as OTLP does) and must
    not be resent. `accepted + duplicates + rejected` equals the number of records sent.
    """

    accepted: int
    duplicates: int
    rejected: int = 0
    rejections: list[Rejection] = []
    clock_offset_s: float
    clock_corrected: bool


class EnrollRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    secret: Secret
    serial: Serial
    kind: DeviceKind


class EnrollResult(Struct, kw_only=True):
    """`peripheral_salt` is the deployment's secret for PeripheralId (64 hex digits): the
    agent keeps it with its token and never sends it back."""

    device_id: uuid.UUID
    token: str
    school: str
    peripheral_salt: str | None = None


class Problem(Struct, kw_only=True):
    """Every error answer: a stable machine code and a sentence for people."""

    error: str
    detail: str


def integral_floats_as_ints(body: bytes) -> bytes | None:
    """The same JSON with every number like 1172.0 written 1172, or None if there is none.

    JSON Schema, and so the OpenAPI document, counts a number with no fractional part as an
    integer; msgspec refuses 1172.0 for an `int` field. A decoder that fails with "Expected
    `int`, got `float`" decodes this once more, so the document and the behaviour agree.
    Only that failing path pays for it.
    """
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    changed = False

    def fix(v: object) -> object:
        nonlocal changed
        if isinstance(v, float) and v.is_integer():
            changed = True
            return int(v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    try:
        fixed = fix(value)
    except RecursionError:
        return None
    return msgspec.json.encode(fixed) if changed else None


def batch_decoder() -> msgspec.json.Decoder[Batch]:
    return msgspec.json.Decoder(Batch)


def encode(obj: object) -> bytes:
    return msgspec.json.encode(obj)
