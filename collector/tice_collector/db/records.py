"""How each wire record type maps onto its raw table (one typed wide row per record), and the
writer's one statement per flush that stores them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from tice_collector.db.queries import q
from tice_wire import RECORD_TYPES, Record

# Columns the collector adds to every row, after the record's own fields.
ENVELOPE = ("device_id", "spool", "at_corrected", "received_at")
# Parameters of the flush's first part (queries.sql flush_devices); each table's follow.
DEVICE_PARAMS = 11
TABLE_PARAMS = 5


# One object per table (TABLES): compared and hashed by identity, which is what a dict keyed by
# table needs once per record on the hot path (a generated __hash__ hashes every column name).
@dataclass(frozen=True, eq=False)
class Table:
    name: str
    columns: tuple[str, ...]  # in the order of msgspec.structs.astuple(record) + ENVELOPE
    order: int  # its place in RECORD_TYPES: every flush writes the tables in this order

    @property
    def fields(self) -> tuple[str, ...]:
        """The record's own columns: its wire fields, by the same names."""
        return self.columns[:-len(ENVELOPE)]


def _table(i: int, cls: type[Record]) -> Table:
    tag = cls.__struct_config__.tag
    return Table(f"{tag}_records", (*cls.__struct_fields__, *ENVELOPE), i)


TABLES: dict[type[Record], Table] = {cls: _table(i, cls) for i, cls in enumerate(RECORD_TYPES)}


def _insert(t: Table, first: int, on_conflict: bool) -> str:
    """The insert of one record type's rows, as a part of the flush statement; its parameters
    from `$first`. With `on_conflict`, a row whose key is already stored is skipped; without,
    it fails the whole statement (UniqueViolationError), which then changes nothing.

    PostgreSQL expands the rows itself, in C: per request, the JSON array of its records of
    this type as msgspec encoded them from the validated structs (their field names are the
    table's column names; `json_populate_recordset` reads each with its column's own type and
    ignores the `type` tag), its device, its spool, the clock correction in microseconds (0
    when none applies: docs/ingest.md) and when it arrived. A shift in microseconds keeps
    `at_corrected` exact whatever the session's time zone (an interval with days would follow
    its daylight-saving changes).
    """
    cols = ", ".join(t.columns)
    fields = ", ".join(f"r.{c}" for c in t.fields)
    p = [f"${first + i}" for i in range(TABLE_PARAMS)]
    # Key order: two writer transactions inserting the same keys (an agent's resend while the
    # first send is still being written) then wait for each other in one order, never in a cycle.
    return (f"ins_{t.name} AS (INSERT INTO {t.name} ({cols}) "
            f"SELECT {fields}, b.device_id, b.spool, r.at + b.shift_us * interval '1 microsecond', b.received_at "
            f"FROM unnest({p[0]}::text[], {p[1]}::uuid[], {p[2]}::uuid[], {p[3]}::bigint[], {p[4]}::timestamptz[]) "
            "AS b(records, device_id, spool, shift_us, received_at) "
            f"CROSS JOIN LATERAL json_populate_recordset(NULL::{t.name}, b.records::json) AS r "
            "WHERE (SELECT count(*) FROM locked) >= 0 "
            f"ORDER BY b.device_id, b.spool, r.seq {'ON CONFLICT DO NOTHING ' if on_conflict else ''}"
            "RETURNING device_id, spool, seq, at)")


@cache
def flush_sql(tables: tuple[Table, ...], on_conflict: bool = True) -> str:
    """The writer's one statement for a flush whose records go to `tables` (in their order):
    the devices, their spools and every table's rows, in one round trip and one implicit
    transaction, answered once committed. Parameters: those of queries.sql flush_devices, then
    TABLE_PARAMS per table.

    With `on_conflict`, a record already stored is skipped, and the statement returns the keys
    it stored (device_id, spool, seq, at), each with its table's place in `tables` (column `t`). Without, such a record
    fails the statement (UniqueViolationError) and nothing of it is kept; when it succeeds,
    every record was stored and it returns only their count (`stored`). That costs PostgreSQL
    less CPU: ON CONFLICT searches each key once more before inserting it (16-19 % less per
    request at 30 requests per flush; at 9, within the noise: bench/flush_statement.py)."""
    inserts = [_insert(t, DEVICE_PARAMS + 1 + i * TABLE_PARAMS, on_conflict) for i, t in enumerate(tables)]
    if on_conflict:
        stored = " UNION ALL ".join(f"SELECT {i} AS t, device_id, spool, seq, at FROM ins_{t.name}"
                                    for i, t in enumerate(tables))
        # With no record to store (every record refused as too old, say), the devices part alone.
        select = stored or "SELECT NULL::int AS t, NULL::uuid AS device_id, NULL::uuid AS spool, " \
                           "NULL::bigint AS seq, NULL::timestamptz AS at WHERE false"
    else:
        counts = " + ".join(f"(SELECT count(*) FROM ins_{t.name})" for t in tables) or "0"
        select = f"SELECT {counts} AS stored"
    return "WITH " + ",\n".join([q("flush_devices"), *inserts]) + "\n" + select


def ordered(tables: Iterable[Table]) -> tuple[Table, ...]:
    return tuple(sorted(set(tables), key=lambda t: t.order))
