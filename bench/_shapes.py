"""Report shapes for the ingest benchmark, rendered from the real wire types.

A shape is a cycle of record kinds and a number of records per request. Each kind has one
example record built from `tice_wire` (the fields an agent on a laptop fills in), from
which come:

- a JSON template for the product: the record as msgspec encodes it (as the agent's spool
  does), with `%d` for `seq` and `%s` for `at`;
- a line-protocol template for InfluxDB carrying the same fields: measurement = the record
  type, tags device and spool (with the timestamp they make InfluxDB's key, as
  (device, spool, seq, at) is the product's), `seq` and every non-null field as fields
  (`%s`, `%s`, `%d` then `%d%09d` for the timestamp's seconds and nanoseconds);
- the row the collector would write, for the raw COPY baseline (`copy_rows`).

Because everything is rendered from `tice_wire` and `tice_collector.db.records`, a change to
the wire format changes the load and the baseline alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from tice_collector.db.records import TABLES, Table
from tice_wire import Batch, Display, Health, Link, Record, Usage

# Sentinels replaced by format placeholders; they cannot occur in a real example record.
_SEQ = 271_828_182_845_904_523
_AT = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
_UUID_DEVICE = uuid.UUID("11111111-2222-3333-4444-555555555555")
_UUID_SPOOL = uuid.UUID("66666666-7777-8888-9999-aaaaaaaaaaaa")
_SENT_AT = datetime(2002, 3, 4, 5, 6, 7, tzinfo=UTC)
_BOOT_AT = datetime(2026, 11, 2, 7, 58, 12, tzinfo=UTC)


def example(kind: str, seq: int = 0, at: datetime = _AT) -> Record:
    """One record of `kind` as an agent on a classroom laptop sends it each minute."""
    makers: dict[str, Callable[[], Record]] = {
        "usage": lambda: Usage(seq=seq, at=at, duration_s=60.0, active_s=42.5, idle_s=17.5, source="x11"),
        "health": lambda: Health(seq=seq, at=at, cpu_load_ratio=0.35, memory_used_ratio=0.62,
                                 disk_free_bytes=81_234_567_168, disk_total_bytes=255_999_999_488,
                                 battery_ratio=0.81, battery_plugged=True, battery_health_ratio=0.93,
                                 uptime_s=12_345.0, boot_at=_BOOT_AT),
        "link": lambda: Link(seq=seq, at=at, interface="wifi", link_up=True, collector_reachable=True,
                             rtt_s=0.012, dns_ok=True),
        "display": lambda: Display(seq=seq, at=at, duration_s=60.0, external_s=45.0, external_connected=True,
                                   displays=2),
    }
    if kind not in makers:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(makers)}")
    return makers[kind]()


@dataclass(frozen=True)
class Shape:
    name: str
    kinds: tuple[str, ...]  # record kinds, cycled over the records of a request
    records: int  # records per request
    what: str

    @property
    def mix(self) -> str:
        """The name of the record mix, which decides the raw COPY baseline."""
        return "+".join(self.kinds)


SHAPES: dict[str, Shape] = {s.name: s for s in (
    Shape("usage10", ("usage",), 10, "10 usage records per report"),
    Shape("mixed4", ("usage", "health", "link", "display"), 4,
          "4 mixed records per report (usage, health, link, display: an agent's minute)"),
    Shape("backlog500", ("usage", "health", "link", "display"), 500,
          "500 mixed records per report (the drain after an outage)"),
)}


def json_template(rec: Record) -> str:
    """The record as JSON with `%d` for seq and `%s` for at (any other % doubled)."""
    text = msgspec.json.encode(msgspec.structs.replace(rec, seq=_SEQ, at=_AT)).decode()
    at = msgspec.json.encode(_AT).decode()  # with its quotes
    text = text.replace("%", "%%")
    if text.count(str(_SEQ)) != 1 or text.count(at) != 1 or text.index(str(_SEQ)) > text.index(at):
        # bench/wrk_reports.lua formats seq, then at.
        raise AssertionError(f"seq then at not found exactly once each in {text}")
    return text.replace(str(_SEQ), "%d").replace(at, '"%s"')


def envelope_template() -> str:
    """The batch around the records, with `%s` for device_id, spool, sent_at and the records."""
    batch = Batch(device_id=_UUID_DEVICE, spool=_UUID_SPOOL, sent_at=_SENT_AT, records=[],
                  agent_version="bench")
    text = msgspec.json.encode(batch).decode().replace("%", "%%")
    for sentinel in (str(_UUID_DEVICE), str(_UUID_SPOOL), msgspec.json.encode(_SENT_AT).decode()[1:-1]):
        if text.count(sentinel) != 1:
            raise AssertionError(f"sentinel {sentinel} not found exactly once in {text}")
        text = text.replace(sentinel, "%s")
    if text.count('"records":[]') != 1:
        raise AssertionError(f"no empty records list in {text}")
    return text.replace('"records":[]', '"records":[%s]')


def _field(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return f"{int(value.timestamp())}i"  # InfluxDB has no time-typed field: epoch seconds
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no line-protocol field type for {type(value).__name__}")


def line_template(rec: Record) -> str:
    """The record as one InfluxDB line: `%s` device, `%s` spool, `%d` seq, `%d%09d` time."""
    tag = type(rec).__struct_config__.tag
    fields = ["seq=%di"]
    for name in rec.__struct_fields__:
        if name in ("seq", "at"):
            continue
        value = _field(getattr(rec, name))
        if value is not None:
            fields.append(f"{name}={value.replace('%', '%%')}")
    return f"{tag},device=%s,spool=%s {','.join(fields)} %d%09d"


def write_templates(path: Path, shape: Shape) -> None:
    """The file bench/wrk_reports.lua reads: the envelope, then one line per kind in cycle order:
    `kind<TAB>json template<TAB>line template`."""
    lines = [f"envelope\t{envelope_template()}"]
    for kind in shape.kinds:
        rec = example(kind)
        lines.append(f"{kind}\t{json_template(rec)}\t{line_template(rec)}")
    path.write_text("\n".join(lines) + "\n")


def copy_rows(shape: Shape, device_ids: list[uuid.UUID], total: int,
              now: datetime) -> list[tuple[Table, tuple[object, ...]]]:
    """`total` rows of the shape's mix as the collector writes them (record fields, then the
    envelope columns), under a fresh spool, in the mix's order, each with its table."""
    spool = uuid.uuid4()
    out: list[tuple[Table, tuple[object, ...]]] = []
    for i in range(total):
        at = now - timedelta(seconds=3600 - (i % 3000))
        rec = example(shape.kinds[i % len(shape.kinds)], seq=i, at=at)
        out.append((TABLES[type(rec)], (*msgspec.structs.astuple(rec), device_ids[i % len(device_ids)], spool, at, now)))
    return out
