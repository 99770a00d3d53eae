"""Read what SQLite can still read from a damaged spool file, and count what it cannot.

A spool row is self-describing: its body is the record's wire JSON, seq included. So whatever
rows SQLite can still reach in a damaged file can be sent as they are, under their original
delivery key (the damaged spool's id and the row's seq): a row that had in fact been stored
already is then a harmless duplicate for the collector.

How rows are reached in a file cut short or overwritten in places:
- `PRAGMA writable_schema=ON` (read only here) lets SQLite open a file shorter than its header
  says, where it would otherwise refuse the whole file as malformed.
- Rows are read in rowid order; when a statement fails on a damaged page, the next readable
  rowid is found by seeking further and further (1, 2, 4, ... past the last good one), then
  back by bisection, so readable pages after a damaged one are not skipped.
- A row counts only if its body decodes as a wire record with the row's own seq.
- Every statement runs under a progress handler that ends it after `STATEMENT_LIMIT_S`: a
  damaged b-tree can loop.

What cannot be read is counted. The spool keeps the number of its rows in the file header
(`user_version`, updated in the same transaction as the rows) and its id in the schema text on
page 1 (the view `spool_id`): the first page of a damaged file nearly always survives, so
`unreadable = rows - readable` is exact. Both are read from the raw bytes when SQLite cannot
read page 1. A file without them (written before they were kept) has its unreadable rows
estimated from the seqs missing between the first readable row and the last seq it gave out
(`exact = False`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from tice_wire import AnyRecord

log = logging.getLogger("tice.agent.spool")

STATEMENT_LIMIT_S = 5.0
APPLICATION_ID = 0x54494345  # agents/tice_agent/spool.py: the header's user_version is the row count
_VIEW = re.compile(rb"CREATE VIEW spool_id AS SELECT '([0-9a-f-]{36})' AS id")
_decoder = msgspec.json.Decoder(AnyRecord)


@dataclass
class Salvaged:
    """What one spool's records became: read (to send again) or counted as unreadable."""

    spool: uuid.UUID | None          # the spool the rows belong to; None when its id is unreadable
    rows: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, wire JSON), by seq
    unreadable: int = 0              # rows it held that could not be read
    dropped: int = 0                 # its own drop count, carried on
    exact: bool = True               # `unreadable` from the rows counter, not an estimate


def salvage(path: Path) -> list[Salvaged]:
    """Everything readable in the spool file at `path` (moved aside, never the live spool).

    The first item is the file's own spool; further items are spools it had itself salvaged
    earlier and not yet sent. Never raises for a damaged file: at worst nothing is readable.
    """
    head = _raw_head(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=1.0)
    except sqlite3.Error as e:
        log.error("spool salvage: cannot open %s: %s", path.name, e)
        return [_from_head(Salvaged(spool=None, exact=False), head)]
    try:
        db.execute("PRAGMA writable_schema=ON")
        found = _salvage(db)
    finally:
        db.close()
    _from_head(found[0], head)
    return found


def _raw_head(path: Path) -> tuple[uuid.UUID | None, int | None]:
    """The spool id and row count read from the first page's raw bytes, SQLite or not."""
    try:
        with path.open("rb") as f:
            page = f.read(65536)
    except OSError:
        return None, None
    rows = None
    if len(page) >= 72 and int.from_bytes(page[68:72], "big") == APPLICATION_ID:
        rows = int.from_bytes(page[60:64], "big", signed=True)
    m = _VIEW.search(page)
    return (_uuid(m[1].decode()) if m else None), rows


def _from_head(own: Salvaged, head: tuple[uuid.UUID | None, int | None]) -> Salvaged:
    """Fill in what SQLite could not read from the header and the schema text."""
    spool, rows = head
    if own.spool is None and spool is not None:
        own.spool = spool
    if rows is not None:
        own.unreadable, own.exact = max(0, rows - len(own.rows)), True
    return own


@contextlib.contextmanager
def _limited(db: sqlite3.Connection) -> Iterator[None]:
    started = time.monotonic()
    db.set_progress_handler(lambda: int(time.monotonic() - started > STATEMENT_LIMIT_S), 10_000)
    try:
        yield
    finally:
        db.set_progress_handler(None, 0)


def _query(db: sqlite3.Connection, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]] | None:
    """All rows, or None when the statement fails on damage."""
    try:
        with _limited(db):
            return db.execute(sql, args).fetchall()
    except (sqlite3.DatabaseError, MemoryError):
        return None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _salvage(db: sqlite3.Connection) -> list[Salvaged]:
    meta = {str(k): v for k, v, *_ in _query(db, "SELECT key, value FROM meta") or []}
    view = _query(db, "SELECT id FROM spool_id")
    spool = _uuid(view[0][0]) if view else _uuid(meta.get("spool"))
    own = Salvaged(spool=spool, dropped=max(0, _int(meta.get("dropped")) or 0))
    high_row = _query(db, "SELECT seq FROM sqlite_sequence WHERE name = 'records'")
    high = _int(high_row[0][0]) if high_row else None
    for _, seq, body in _walk(db, "SELECT rowid, rowid, body FROM records WHERE rowid > ? ORDER BY rowid"):
        if (row := _valid(seq, body)) is not None:
            own.rows.append(row)
    # An estimate, replaced by the exact count when the header has it (_from_head).
    own.exact = False
    if own.rows and high is not None:
        own.unreadable = max(0, high - own.rows[0][0] + 1 - len(own.rows))
    out = [own]
    spools = _query(db, "SELECT spool, dropped, rows FROM salvaged_spools") or []
    found: dict[str, list[tuple[int, bytes]]] = {}
    for _, seq, body, name in _walk(db, "SELECT id, seq, body, spool FROM salvaged WHERE id > ? ORDER BY id"):
        if (row := _valid(seq, body)) is not None:
            found.setdefault(str(name), []).append(row)
    for name, dropped, rows in spools:
        sid = _uuid(name)
        if sid is None:
            continue
        got = sorted(found.pop(str(name), []))
        out.append(Salvaged(spool=sid, rows=got, dropped=_int(dropped) or 0,
                            unreadable=max(0, (_int(rows) or 0) - len(got))))
    for key, got in found.items():  # rows whose spool's counters were unreadable
        sid = _uuid(key)
        if sid is not None:
            out.append(Salvaged(spool=sid, rows=sorted(got), exact=False))
    return out


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _valid(seq: object, body: object) -> tuple[int, bytes] | None:
    """(seq, body) when body is a wire record carrying that seq, else None."""
    if not isinstance(body, bytes) or not isinstance(seq, int):
        return None
    try:
        return (seq, body) if _decoder.decode(body).seq == seq else None
    except msgspec.MsgspecError:
        return None


def _walk(db: sqlite3.Connection, sql: str) -> Iterator[tuple[object, ...]]:
    """Rows of `sql` (first column: the rowid, `rowid > ?` its only parameter), around damage."""
    after = 0
    while True:
        try:
            with _limited(db):
                for row in db.execute(sql, (after,)):
                    rowid = row[0]
                    if not isinstance(rowid, int) or rowid <= after:
                        raise sqlite3.DatabaseError("rowids out of order")  # a damaged page
                    after = rowid
                    yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            return
        except (sqlite3.DatabaseError, MemoryError):
            pass
        nxt = _next_readable(db, sql, after)
        if nxt is None:
            return
        after = max(nxt - 1, after + 1)  # always forward, whatever the damage


def _readable_from(db: sqlite3.Connection, sql: str, start: int) -> bool | None:
    """Can a seek to rowid >= start be read? None when there is no row from there on."""
    try:
        with _limited(db):
            row = db.execute(sql + " LIMIT 1", (start - 1,)).fetchone()
    except (sqlite3.DatabaseError, MemoryError):
        return False
    if row is None:
        return None
    return isinstance(row[0], int) and row[0] >= start  # a lower rowid is a damaged page


def _next_readable(db: sqlite3.Connection, sql: str, after: int) -> int | None:
    """The smallest rowid > after from which reading works again, or None."""
    bad, step = after + 1, 1
    while True:
        probe = bad + step
        if probe > 2**62:
            return None
        ok = _readable_from(db, sql, probe)
        if ok is None:
            return None
        if ok:
            break
        bad, step = probe, step * 2
    good = probe
    while good - bad > 1:  # bisect: readable rows just after the damage are not skipped
        mid = (bad + good) // 2
        if _readable_from(db, sql, mid):
            good = mid
        else:
            bad = mid
    return good
