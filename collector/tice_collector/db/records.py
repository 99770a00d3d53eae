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

    @property
    def stage(self) -> str:
        return f"stage_{self.name}"


def _table(cls: type[Record]) -> Table:
    tag = cls.__struct_config__.tag
    return Table(f"{tag}_records", (*cls.__struct_fields__, *ENVELOPE))


TABLES: dict[type[Record], Table] = {cls: _table(cls) for cls in RECORD_TYPES}


def insert_sql(t: Table) -> str:
    """The insert from a record type's staging table: built from its columns, one statement per
    record type, so it is generated here rather than written out in queries.sql."""
    cols = ", ".join(t.columns)
    # Key order: two writer transactions inserting the same keys (an agent's resend while the
    # first send is still being written) then wait for each other in one order, never in a cycle.
    return (f"INSERT INTO {t.name} ({cols}) SELECT {cols} FROM {t.stage} ORDER BY device_id, spool, seq "
            "ON CONFLICT DO NOTHING RETURNING device_id, spool, seq")
