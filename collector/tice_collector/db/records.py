"""How each wire record type maps onto its raw table: one typed wide row per record."""

from __future__ import annotations

from dataclasses import dataclass

from tice_wire import RECORD_TYPES, Record

# Columns the collector adds to every row, after the record's own fields.
ENVELOPE = ("device_id", "spool", "at_corrected", "received_at")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # in the order of msgspec.structs.astuple(record) + ENVELOPE
    order: int  # its place in RECORD_TYPES: every flush inserts into the tables in this order

    @property
    def fields(self) -> tuple[str, ...]:
        """The record's own columns: its wire fields, by the same names."""
        return self.columns[:-len(ENVELOPE)]


def _table(i: int, cls: type[Record]) -> Table:
    tag = cls.__struct_config__.tag
    return Table(f"{tag}_records", (*cls.__struct_fields__, *ENVELOPE), i)


TABLES: dict[type[Record], Table] = {cls: _table(i, cls) for i, cls in enumerate(RECORD_TYPES)}


def insert_sql(t: Table) -> str:
    """The insert of one record type's rows from a flush's requests, built from its columns (one
    statement per record type, so it is generated here rather than written out in queries.sql).

    PostgreSQL expands the rows itself, in C: per request, $1 is the JSON array of its records
    of this type as msgspec encoded them from the validated structs (their field names are the
    table's column names; `json_populate_recordset` reads them with each column's own type and
    ignores the `type` tag), $2 its device, $3 its spool, $4 the clock correction in
    microseconds (0 when none applies: docs/ingest.md), $5 when it arrived. A shift in
    microseconds keeps `at_corrected` exact whatever the session's time zone (an interval
    with days would follow its daylight-saving changes).
    """
    cols = ", ".join(t.columns)
    fields = ", ".join(f"r.{c}" for c in t.fields)
    # Key order: two writer transactions inserting the same keys (an agent's resend while the
    # first send is still being written) then wait for each other in one order, never in a cycle.
    return (f"INSERT INTO {t.name} ({cols}) "
            f"SELECT {fields}, b.device_id, b.spool, r.at + b.shift_us * interval '1 microsecond', b.received_at "
            "FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::bigint[], $5::timestamptz[]) "
            "AS b(records, device_id, spool, shift_us, received_at) "
            f"CROSS JOIN LATERAL json_populate_recordset(NULL::{t.name}, b.records::json) AS r "
            "ORDER BY b.device_id, b.spool, r.seq ON CONFLICT DO NOTHING RETURNING device_id, spool, seq")
