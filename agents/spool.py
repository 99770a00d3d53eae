"""The on-disk spool: records wait here until the collector acknowledges them after commit.

One SQLite file (WAL mode). The model is Telegraf's buffer (add / begin a batch / accept or
reject) with persist-queue's ack states, written for our needs:

* Delivery key. The file holds a random `spool` UUID made when the file is created (table
  `meta`); a record's `seq` is its INTEGER PRIMARY KEY AUTOINCREMENT rowid. AUTOINCREMENT
  never hands out a rowid again, even after the newest rows are deleted, so (spool, seq) is
  unique for the file's whole life; a new file gets a new UUID.
* States. A row is `ready` or `in_flight`. Rows in flight when the process died go back to
  ready on open: they are resent, and the collector stores a resend once.
* Bounds. Total JSON bytes and age are bounded; the OLDEST ready rows are dropped first, and
  the cumulative count is kept in `meta.dropped` (sent in every batch). Records the collector
  refuses for good (400/403/413) are removed and counted in `meta.dead_letter`.
* Rows are the record's wire JSON (msgspec), never pickle: a spool file is data, not code.

The API is synchronous: each call is one small transaction (milliseconds), made a few times a
minute, so running it on the event loop is cheaper on an old laptop than a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from collector.wire import Record

log = logging.getLogger("tice.agent.spool")

READY, IN_FLIGHT = 0, 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    added REAL NOT NULL,              -- device clock (unix seconds) when spooled: the age bound
    size  INTEGER NOT NULL,           -- len(body): the size bound
    state INTEGER NOT NULL DEFAULT 0, -- 0 ready, 1 in flight
    body  BLOB NOT NULL               -- the record's wire JSON, seq included
);
CREATE INDEX IF NOT EXISTS records_state ON records (state, seq);
"""


class SpoolCorrupt(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    seqs: list[int]
    bodies: list[bytes]  # encoded records, ready to embed as msgspec.Raw

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.bodies)

    def __len__(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    spool: uuid.UUID
    depth: int
    in_flight: int
    nbytes: int
    dropped: int
    dead_letter: int
    corrupt_files: int
    oldest_added: float | None
    last_dead_letter: str | None


class Spool:
    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, max_age_s: float = 90 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self.db = self._open_or_replace()
        self.spool_id = uuid.UUID(self._meta("spool"))
        # The running byte total, so add() need not sum the table each time.
        self._bytes: int = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0]
        # Rows a dead process left in flight were never acknowledged: send them again.
        with self._tx():
            n = self.db.execute("UPDATE records SET state = ? WHERE state = ?", (READY, IN_FLIGHT)).rowcount
        if n:
            log.info("spool: %d records that were in flight are ready again", n)

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL. In WAL mode both survive `kill -9` of the agent: a commit is in the
        # WAL file (the OS holds it) when COMMIT returns. They differ on power loss, which
        # school laptops see often (unplugged, battery flat, the building's power cut at night):
        # NORMAL may lose the last commits, i.e. records silently, uncounted. FULL syncs the WAL
        # at each commit; we commit a few times a minute, so the cost is negligible.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('spool', ?)", (str(uuid.uuid4()),))
        for key in ("dropped", "dead_letter", "corrupt_files"):
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, '0')", (key,))
        uuid.UUID(db.execute("SELECT value FROM meta WHERE key = 'spool'").fetchone()[0])

    def _open_or_replace(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except (sqlite3.DatabaseError, ValueError, TypeError) as e:
            aside = self._move_aside()
            log.error("SPOOL CORRUPT: %s (%s: %s); moved to %s and starting a new spool; "
                      "records in it are not sent", self.path, type(e).__name__, e, aside.name)
        db = self._connect()
        corrupt = len(list(self.path.parent.glob(self.path.name + ".corrupt-*")))
        db.execute("UPDATE meta SET value = ? WHERE key = 'corrupt_files'", (str(corrupt),))
        return db

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        if self.path.exists():
            self.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        return aside

    def close(self) -> None:
        self.db.close()

    # -- helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any error roll back and recount the bytes."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            self._bytes = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0]
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else ""

    def _bump(self, key: str, n: int) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?", (n, key))

    def _delete(self, seqs: Sequence[int]) -> int:
        """Delete rows by seq inside the caller's transaction; returns how many existed."""
        removed = 0
        for chunk in _chunks(seqs, 500):
            marks = ",".join("?" * len(chunk))
            freed = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq IN ({marks})",
                                    chunk).fetchone()
            self.db.execute(f"DELETE FROM records WHERE seq IN ({marks})", chunk)
            removed += freed[0]
            self._bytes -= freed[1]
        return removed

    # -- the API -----------------------------------------------------------------------------

    def add(self, records: Iterable[Record]) -> list[int]:
        """Store records, giving each its delivery seq. Returns the seqs. Enforces the bounds."""
        recs = list(records)
        if not recs:
            return []
        now = self._clock()
        with self._tx():
            # Under BEGIN IMMEDIATE no one else can insert, so the next seqs are ours. Writing
            # them explicitly lets the stored JSON carry its own seq; AUTOINCREMENT's counter
            # follows explicit rowids, so they are never reused either.
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
            base = row[0] if row else 0
            rows = []
            for i, rec in enumerate(recs, start=1):
                body = self._encoder.encode(msgspec.structs.replace(rec, seq=base + i))
                rows.append((base + i, now, len(body), body))
            self.db.executemany("INSERT INTO records (seq, added, size, state, body) VALUES (?, ?, ?, 0, ?)", rows)
            self._bytes += sum(r[2] for r in rows)
            self._enforce_bounds(now)
        return [r[0] for r in rows]

    def _enforce_bounds(self, now: float) -> int:
        """Drop what is too old, then the oldest until under max_bytes. Inside a transaction."""
        dropped = 0
        cur = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE state = ? AND added < ?",
                              (READY, now - self.max_age_s)).fetchone()
        if cur[0]:
            self.db.execute("DELETE FROM records WHERE state = ? AND added < ?", (READY, now - self.max_age_s))
            dropped += cur[0]
            self._bytes -= cur[1]
        while self._bytes > self.max_bytes:
            # Oldest first, a slice at a time: enough rows to get under the bound.
            excess = self._bytes - self.max_bytes
            victims: list[int] = []
            freed = 0
            for seq, size in self.db.execute("SELECT seq, size FROM records WHERE state = ? ORDER BY seq LIMIT 1000",
                                             (READY,)):
                victims.append(seq)
                freed += size
                if freed >= excess:
                    break
            if not victims:
                break  # only in-flight rows left: they are settled by ack/release
            dropped += self._delete(victims)
        if dropped:
            self._bump("dropped", dropped)
            log.warning("spool full or too old: dropped %d oldest records", dropped)
        return dropped

    def expire(self) -> int:
        """Apply the bounds now (the runner calls it periodically; add() does it too)."""
        with self._tx():
            return self._enforce_bounds(self._clock())

    def begin_batch(self, max_records: int, max_bytes: int) -> SpoolBatch:
        """Take the oldest ready records (at least one, even if it alone exceeds max_bytes)."""
        seqs: list[int] = []
        bodies: list[bytes] = []
        total = 0
        with self._tx():
            for seq, body in self.db.execute("SELECT seq, body FROM records WHERE state = ? ORDER BY seq LIMIT ?",
                                             (READY, max_records)):
                if seqs and total + len(body) > max_bytes:
                    break
                seqs.append(seq)
                bodies.append(bytes(body))
                total += len(body)
            for chunk in _chunks(seqs, 500):
                self.db.execute(f"UPDATE records SET state = {IN_FLIGHT} WHERE seq IN ({','.join('?' * len(chunk))})",
                                chunk)
        return SpoolBatch(seqs, bodies)

    def ack(self, seqs: Sequence[int]) -> int:
        """The collector committed these: delete them."""
        with self._tx():
            return self._delete(seqs)

    def release(self, seqs: Sequence[int]) -> None:
        """Not delivered: back to ready, to be sent again."""
        with self._tx():
            for chunk in _chunks(seqs, 500):
                self.db.execute(f"UPDATE records SET state = {READY} WHERE seq IN ({','.join('?' * len(chunk))})",
                                chunk)

    def dead_letter(self, seqs: Sequence[int], reason: str) -> int:
        """The collector refused these for good: remove and count them."""
        with self._tx():
            n = self._delete(seqs)
            self._bump("dead_letter", n)
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_dead_letter', ?)",
                            (reason[:300],))
        return n

    def depth(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM records WHERE state = ?", (READY,)).fetchone()[0])

    @property
    def dropped(self) -> int:
        return int(self._meta("dropped") or 0)

    def stats(self) -> SpoolStats:
        counts = dict(self.db.execute("SELECT state, COUNT(*) FROM records GROUP BY state").fetchall())
        oldest = self.db.execute("SELECT MIN(added) FROM records").fetchone()[0]
        return SpoolStats(spool=self.spool_id, depth=counts.get(READY, 0), in_flight=counts.get(IN_FLIGHT, 0),
                          nbytes=self._bytes, dropped=self.dropped, dead_letter=int(self._meta("dead_letter") or 0),
                          corrupt_files=int(self._meta("corrupt_files") or 0), oldest_added=oldest,
                          last_dead_letter=self._meta("last_dead_letter") or None)


def read_stats(path: Path) -> SpoolStats | None:
    """Stats from another process (`tice-agent status` while the daemon runs): read-only."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None  # the daemon has created the file but not its tables yet
            raise
        counts = dict(db.execute("SELECT state, COUNT(*) FROM records GROUP BY state").fetchall())
        nbytes, oldest = db.execute("SELECT COALESCE(SUM(size), 0), MIN(added) FROM records").fetchone()
    finally:
        db.close()
    return SpoolStats(spool=uuid.UUID(meta["spool"]), depth=counts.get(READY, 0), in_flight=counts.get(IN_FLIGHT, 0),
                      nbytes=nbytes, dropped=int(meta.get("dropped", 0)), dead_letter=int(meta.get("dead_letter", 0)),
                      corrupt_files=int(meta.get("corrupt_files", 0)), oldest_added=oldest,
                      last_dead_letter=meta.get("last_dead_letter"))


def _chunks(items: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
