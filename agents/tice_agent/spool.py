"""The on-disk spool: records wait here until the collector acknowledges them after commit.

One SQLite file. The model is Telegraf's buffer (add / begin a batch / accept or reject) with
persist-queue's states, written for our needs:

* Delivery key. The file holds a random `spool` UUID made when the file is created (table
  `meta`); a record's `seq` is its INTEGER PRIMARY KEY AUTOINCREMENT rowid. AUTOINCREMENT
  never hands out a rowid again, even after the newest rows are deleted, so (spool, seq) is
  unique for the file's whole life; a new file gets a new UUID.
* In flight lives in memory. Taking a batch and putting it back write nothing, so neither can
  fail; a process that dies simply sends its in-flight rows again after a restart (the
  collector stores a resend once).
* Bounds. `max_bytes` bounds the files on disk, the rollback journal included; the OLDEST
  rows are dropped first, and records older than `max_age_s` too; the cumulative count is
  kept in `meta.dropped` and sent in every batch. Records the collector refuses for good
  (400/403/413) are removed and counted in `meta.dead_letter`.
* Rows are the record's wire JSON (msgspec), never pickle: a spool file is data, not code.

A full disk (docs/agent.md, "When the disk is full"):
* The journal is a rollback journal in PERSIST mode, kept allocated at `journal_bytes`
  (zero-filled when created: a zeroed header is not a hot journal, sqlite.org/lockingv3.html).
  Acknowledging (a DELETE) and re-using the pages it frees then need no new disk space, so a
  spool on a full disk keeps sending and keeps storing as long as it sends. WAL needs its
  32 KiB -shm file re-created at every start, which a full disk refuses (SQLITE_IOERR_SHMSIZE):
  the agent could not even read its spool after a restart.
* Any write may still fail. Nothing is lost for it: an acknowledgement that cannot be written is
  kept in memory (those rows are not sent again by this process, and are deleted as soon as a
  write works); a new record that cannot be stored is dropped and counted in memory, and its
  seq is used up all the same, so the collector sees a hole that the drop count explains.
  Memory is written to the spool at the next write that works (`unsaved_dropped`).
* A failure is logged once when it starts and once when it ends (agents/tice_agent/condition.py).

Time (docs/agent.md, "When the clock jumps"): each row keeps the boot it was spooled in and a
boot-clock reading (agents/tice_agent/clock.py). When the wall clock has jumped since, a row of the running
boot is re-dated from the boot clock as it goes into a batch, unless it may already be stored
at the collector under its old time (`frozen_through`: every seq up to it has been in a send
whose outcome is unknown); the age bound uses the same corrected time.

A corrupt file is moved aside and salvaged (agents/tice_agent/salvage.py): its readable rows are sent
under their original spool and seq from table `salvaged`, and what could not be read is added
to that spool's drop count.

The API is synchronous: each call is one small transaction (milliseconds), made a few times a
minute, so running it on the event loop is cheaper on an old laptop than a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from tice_agent import clock as clk
from tice_agent.condition import Condition
from tice_wire import AnyRecord, Health, Record

if TYPE_CHECKING:
    from tice_agent.salvage import Salvaged

log = logging.getLogger("tice.agent.spool")

SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY = 11, 26, 13, 10, 8
KiB, MiB = 1024, 1024 * 1024
# A jump of the wall clock against the boot clock smaller than this is left alone: NTP slews by
# far less (at most 0.5 ms/s), and a step this small is not worth rewriting records for.
REDATE_TOLERANCE_S = 2.0
CHUNK = 500  # rows per statement and per cleanup transaction (a transaction must fit the journal)
# A write trouble ends when writes work and no write failed for RECOVERY_S, or, for a full disk,
# when it has FREE_AGAIN_BYTES free again (the same line as `tice-agent status` draws).
RECOVERY_S = 30.0
FREE_AGAIN_BYTES = 64 * KiB

# The schema is kept short and without comments: it lives on page 1 with the file header, the one
# page a damaged file nearly always still has, so that the spool id below survives with it.
#   records: added = wall clock (unix s) when spooled, re-dated with the row; size = len(body);
#            body = the record's wire JSON, seq included; boot, mono = boot id and boot clock
#            (s, suspend included) when spooled.
#   salvaged: rows read back from a corrupt spool, sent under that spool's id.
#   salvaged_spools: per such spool, its drop count (unreadable rows included, sent with its
#            rows), its rows still here, and the count the collector has acknowledged.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, added REAL NOT NULL,
    size INTEGER NOT NULL, body BLOB NOT NULL, boot TEXT, mono REAL);
CREATE TABLE IF NOT EXISTS salvaged (id INTEGER PRIMARY KEY, spool TEXT NOT NULL, seq INTEGER NOT NULL,
    size INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS salvaged_spools (id INTEGER PRIMARY KEY, spool TEXT NOT NULL,
    dropped INTEGER NOT NULL, rows INTEGER NOT NULL, reported INTEGER NOT NULL DEFAULT -1);
"""
# The file header (first 100 bytes) survives nearly any damage: `application_id` marks the file
# as a spool whose header `user_version` is its number of rows, updated in every transaction
# that changes it (sqlite.org/fileformat.html, offsets 60 and 68).
APPLICATION_ID = 0x54494345  # "TICE"
_META_DEFAULTS = ("dropped", "dead_letter", "corrupt_files", "frozen_through", "salvaged", "unreadable")


class SpoolUnavailable(Exception):
    """The spool file cannot be opened now (not corruption: a full disk, permissions...)."""


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    spool: uuid.UUID
    seqs: list[int]
    bodies: list[bytes]           # encoded records, ready to embed as msgspec.Raw
    dropped: int = 0              # the drop count to send with it (the spool's, for `spool`)
    salvaged: bool = False        # from a corrupt spool: may carry no row, only its count
    keys: tuple[int, ...] = ()    # rowids in `salvaged` (salvaged batches)
    frozen: tuple[int, int] = (0, 0)  # frozen_through before and after this batch

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.bodies)

    @property
    def sendable(self) -> bool:
        return bool(self.seqs) or self.salvaged

    def __len__(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True, slots=True)
class Trouble:
    """Why the spool cannot write, since when (wall clock), how often, and the free bytes then."""

    reason: str
    since: float
    failures: int
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class SpoolStats:
    spool: uuid.UUID | None
    depth: int = 0
    in_flight: int = 0
    nbytes: int = 0
    dropped: int = 0
    dead_letter: int = 0
    corrupt_files: int = 0
    oldest_added: float | None = None
    last_dead_letter: str | None = None
    file_bytes: int = 0            # the spool's files on disk, journal included
    salvaged_waiting: int = 0      # rows read back from corrupt spools, not yet sent
    salvaged: int = 0              # rows ever read back from corrupt spools
    unreadable: int = 0            # rows of corrupt spools that could not be read (counted as dropped)
    unsaved_dropped: int = 0       # drops counted in memory, not yet written
    error: str | None = None       # read_stats: why the file could not be read


def journal_bytes_for(max_bytes: int) -> int:
    """The journal's share of max_bytes, kept allocated: room for the largest transaction a full
    disk must still allow (acknowledging a batch of 500 records journals about 50 pages)."""
    return max(16 * KiB, min(256 * KiB, max_bytes // 16))


def _is_corrupt(e: BaseException) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, (SpoolCorrupt, ValueError)) or (code is not None and (code & 0xFF) in (SQLITE_CORRUPT,
                                                                                                 SQLITE_NOTADB))


class SpoolCorrupt(sqlite3.DatabaseError):
    pass


def _has_header(journal: Path) -> bool:
    """A rollback journal SQLite may need (its header is not zeroed)."""
    try:
        with journal.open("rb") as f:
            return bool(f.read(28).strip(b"\0"))
    except OSError:
        return True


def _write_failure(e: BaseException) -> bool:
    """A failed write the spool lives with (full disk, I/O error), as opposed to a bug."""
    return isinstance(e, (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)) and not isinstance(
        e, (sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.InterfaceError))


def describe(e: BaseException) -> str:
    """A failed write in words: "disk full", "file size limit reached", or SQLite's message."""
    code = getattr(e, "sqlite_errorcode", None)
    if (code is not None and (code & 0xFF) == SQLITE_FULL) or getattr(e, "errno", None) in (28, 122):
        return "disk full"
    if code is not None and (code & 0xFF) == SQLITE_IOERR and _file_size_limited():
        return "file size limit reached (RLIMIT_FSIZE)"  # SQLite reports EFBIG as an I/O error
    return f"{type(e).__name__}: {e}"[:200]


def _file_size_limited() -> bool:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return False
    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def _redate(body: bytes, shift_s: float) -> bytes:
    """The record with its device times moved by shift_s: `at`, and a health record's boot time
    (taken from the same wall clock). A disk's last backup time is the disk's, not ours."""
    rec = msgspec.json.decode(body, type=AnyRecord)
    delta = timedelta(seconds=shift_s)
    changes: dict[str, object] = {"at": rec.at + delta}
    if isinstance(rec, Health) and rec.boot_at is not None:
        changes["boot_at"] = rec.boot_at + delta
    return msgspec.json.encode(msgspec.structs.replace(rec, **changes))


class Spool:
    def __init__(self, path: Path, *, max_bytes: int = 50 * MiB, max_age_s: float = 90 * 86400,
                 clock: Callable[[], float] = time.time, boot_clock: clk.BootClock = clk.boot_clock,
                 boot_id: str | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.journal_bytes = journal_bytes_for(max_bytes)
        self._clock = clock
        self._boot_clock = boot_clock
        self.boot_id = boot_id if boot_id is not None else clk.boot_id()
        self._encoder = msgspec.json.Encoder()
        self.condition = Condition(log, "spool cannot write")
        self.trouble: Trouble | None = None
        self._failing: set[str] = set()          # kinds of write failing now: "store", "save"
        self._last_failure = 0.0
        self._pending_rows = 0
        # Memory first: what the disk has not taken yet (see the module doc).
        self._in_flight: set[int] = set()        # own seqs in a batch being sent
        self._gone: set[int] = set()             # own seqs acknowledged or dead, delete not written
        self._in_flight_s: set[int] = set()      # the same for `salvaged` rowids
        self._gone_s: set[int] = set()
        self._unsaved: dict[str, int] = {}       # meta counters to add: dropped, dead_letter
        self._unsaved_reason: str | None = None  # last dead-letter reason not written
        self._redated: dict[int, tuple[bytes, float]] = {}  # seq -> (body, added) not written
        self._reported: dict[str, int] = {}      # salvaged spool -> count acknowledged, not written
        self.generated = 0                       # records handed to add() by this process
        self.db, found = self._open_or_replace()
        self.spool_id = uuid.UUID(self._meta("spool"))
        self._last_seq = self._saved_seq = self._read_seq()
        self._frozen = self._saved_frozen = int(self._meta("frozen_through") or 0)
        self._page_size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        self._recount()
        self._reserve_journal()
        if found is not None:
            self._take_salvage(found)
        self._shrink_if_over()
        with contextlib.suppress(sqlite3.Error):
            self._enforce_bounds()

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

    def _prepare(self, db: sqlite3.Connection) -> None:
        # A new file: small pages for a small spool, so a 64 KiB bound still holds records.
        db.execute(f"PRAGMA page_size = {1024 if self.max_bytes < 4 * MiB else 4096}")
        # PERSIST, not WAL: see the module doc (a full disk). The journal keeps its allocation
        # between transactions and across restarts, and never grows past journal_size_limit.
        if db.execute("PRAGMA journal_mode=PERSIST").fetchone()[0] != "persist":
            raise SpoolUnavailable("cannot switch the spool to its journal mode (another process has it open)")
        db.execute(f"PRAGMA journal_size_limit = {self.journal_bytes}")
        # FULL: each commit is synced before COMMIT returns. School laptops lose power often
        # (unplugged, battery flat, the building's power cut at night); a commit that is not on
        # the disk would be a record lost silently. We commit a few times a minute.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA temp_store=MEMORY")  # no temporary files on a full disk
        check = db.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in check] != ["ok"]:
            raise SpoolCorrupt("quick_check: " + "; ".join(str(r[0]) for r in check)[:300])
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")  # one transaction: one sync, not four
        columns = {r[1] for r in db.execute("PRAGMA table_info(records)")}
        for name, kind in (("boot", "TEXT"), ("mono", "REAL")):  # a spool written before these columns
            if name not in columns:
                db.execute(f"ALTER TABLE records ADD COLUMN {name} {kind}")
        with contextlib.suppress(sqlite3.OperationalError):  # the in-flight index older agents kept
            db.execute("DROP INDEX IF EXISTS records_state")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('spool', ?)", (str(uuid.uuid4()),))
        for key in _META_DEFAULTS:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, '0')", (key,))
        spool = str(uuid.UUID(db.execute("SELECT value FROM meta WHERE key = 'spool'").fetchone()[0]))
        # The spool id again, in the schema text on page 1 (see above): `SELECT id FROM spool_id`.
        db.execute(f"CREATE VIEW IF NOT EXISTS spool_id AS SELECT '{spool}' AS id")
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            rows = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"PRAGMA user_version = {int(rows)}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")

    def _open_or_replace(self) -> tuple[sqlite3.Connection, list[Salvaged] | None]:
        """The open spool, and what was salvaged when the file had to be replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect(), None
        except (sqlite3.Error, ValueError, TypeError) as e:
            if not _is_corrupt(e):
                raise SpoolUnavailable(f"cannot open the spool {self.path}: {describe(e)}") from e
            reason = f"{type(e).__name__}: {e}"
        aside = self._move_aside()
        log.error("SPOOL CORRUPT: %s (%s); moved to %s; salvaging what can still be read", self.path, reason,
                  aside.name)
        try:
            db = self._connect()
        except (sqlite3.Error, ValueError) as e:
            raise SpoolUnavailable(f"cannot create a new spool {self.path}: {describe(e)}") from e
        corrupt = len([p for p in self.path.parent.glob(self.path.name + ".corrupt-*")
                       if not p.name.endswith(("-journal", "-wal", "-shm"))])
        db.execute("UPDATE meta SET value = ? WHERE key = 'corrupt_files'", (str(corrupt),))
        from tice_agent.salvage import salvage  # read only when a spool was found corrupt

        return db, salvage(aside)

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        if self.path.exists():
            self.path.rename(aside)
        for suffix in ("-journal", "-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if not side.exists():
                continue
            if suffix == "-journal" and not _has_header(side):
                side.unlink()  # the reserved, zeroed journal: nothing to recover from it
            else:
                side.rename(aside.with_name(aside.name + suffix))
        return aside

    def _take_salvage(self, found: list[Salvaged]) -> None:
        """Store what was read from a corrupt spool, to be sent under its own spool id."""
        total = unreadable = 0
        for item in found:
            total += len(item.rows)
            unreadable += item.unreadable
            if item.spool is None:  # no id to send them under: they become new records here
                self._readd([r for _, r in item.rows])
                self._burn(item.unreadable)
                continue
            self._store_salvaged(item)
        with contextlib.suppress(sqlite3.Error), self._tx():
            self._bump("salvaged", total)
            self._bump("unreadable", unreadable)
        exact = all(i.exact for i in found)
        log.error("spool salvage: %d records read back and queued for sending; %d could not be read%s and are "
                  "counted as dropped", total, unreadable, "" if exact else " (an estimate)")

    def _readd(self, bodies: list[bytes]) -> None:
        records: list[Record] = [msgspec.json.decode(b, type=AnyRecord) for b in bodies]
        for i in range(0, len(records), CHUNK):
            self.add(records[i:i + CHUNK])

    def _store_salvaged(self, item: Salvaged) -> None:
        # Counted as dropped first, then moved into `rows` chunk by chunk in the same transaction
        # as the rows: a failure half-way leaves every record either stored or counted.
        spool = str(item.spool)
        try:
            with self._tx():
                if not self.db.execute("SELECT 1 FROM salvaged_spools WHERE spool = ?", (spool,)).fetchone():
                    self.db.execute("INSERT INTO salvaged_spools (spool, dropped, rows) VALUES (?, 0, 0)", (spool,))
                self.db.execute("UPDATE salvaged_spools SET dropped = dropped + ? WHERE spool = ?",
                                (item.dropped + item.unreadable + len(item.rows), spool))
        except sqlite3.Error as e:
            log.error("spool salvage: cannot store what was read from spool %s (%s); the moved-aside file is "
                      "kept", spool, describe(e))
            return
        for i in range(0, len(item.rows), CHUNK):
            chunk = item.rows[i:i + CHUNK]
            try:
                with self._tx():
                    self.db.executemany("INSERT INTO salvaged (spool, seq, size, body) VALUES (?, ?, ?, ?)",
                                        [(spool, seq, len(body), body) for seq, body in chunk])
                    self.db.execute("UPDATE salvaged_spools SET dropped = dropped - ?, rows = rows + ? "
                                    "WHERE spool = ?", (len(chunk), len(chunk), spool))
            except sqlite3.Error as e:
                self._failed(e, "store")
                log.error("spool salvage: %d records of spool %s could not be stored and are counted as dropped",
                          len(item.rows) - i, spool)
                break
        self._recount()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._settle()
        self.db.close()

    # -- helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any error roll back (SQLite may already have: SQLITE_FULL)."""
        self.db.execute("BEGIN IMMEDIATE")
        self._pending_rows = 0  # rows this transaction adds (+) or deletes (-), for the header
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else ""

    def _set_meta(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def _bump(self, key: str, n: int) -> None:
        if n:
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?", (n, key))

    def _rows_in_header(self, change: int) -> None:
        """Inside a transaction that adds or deletes `change` rows: the row count on page 1."""
        self._pending_rows += change
        self.db.execute(f"PRAGMA user_version = {int(self._rows + self._pending_rows)}")

    def _read_seq(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return int(row[0]) if row else 0

    def _recount(self) -> None:
        self._rows, self._bytes = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records").fetchone()
        salv = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM salvaged").fetchone()
        self._rows_s, self._bytes_s = salv

    def _failed(self, e: BaseException, op: str, lost: str = "") -> None:
        """A write failed: `op` is what ("store" a record, "save" what memory holds)."""
        self._failing.add(op)
        self._last_failure = self._clock()
        reason = describe(e)
        free = self.free_bytes()
        if self.trouble is None or self.trouble.reason != reason:
            self.trouble = Trouble(reason, self._clock(), 1, free)
        else:
            self.trouble = Trouble(reason, self.trouble.since, self.trouble.failures + 1, free)
        self.condition.fail(reason, f"{free if free is not None else '?'} bytes free in {self.path.parent}; "
                                    "records already stored are still sent; new records are dropped and counted"
                            + (f"; {lost}" if lost else ""))

    def _worked(self, op: str) -> None:
        """A write of kind `op` worked. The trouble ends when every kind works again, and the
        disk has room (FREE_AGAIN_BYTES) or no write failed for RECOVERY_S: on a full disk,
        pages freed by a send are filled again by the next records, and writes then fail and
        work by turns, which is still one trouble, not a new one each time."""
        self._failing.discard(op)
        if self.trouble is None or self._failing:
            return
        free = self.free_bytes()
        quiet = self._clock() - self._last_failure >= RECOVERY_S
        if quiet or (self.trouble.reason == "disk full" and free is not None and free >= FREE_AGAIN_BYTES):
            self.trouble = None
            self.condition.ok(f"{self.dropped} records dropped in all")

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return None

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-journal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def _used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _reserve_journal(self) -> None:
        """Allocate the journal now, zero-filled, so a later cleanup needs no new disk space."""
        journal = Path(f"{self.path}-journal")
        try:
            size = journal.stat().st_size
        except FileNotFoundError:
            size = 0
        except OSError:
            return
        if size >= self.journal_bytes:
            return
        if size and _has_header(journal):
            return  # a journal SQLite is using: leave it alone
        try:
            with journal.open("r+b" if size else "wb") as f:
                f.seek(size)
                f.write(b"\0" * (self.journal_bytes - size))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: it grows with use instead
            log.debug("spool journal not reserved: %s", e)

    def _shrink_if_over(self) -> None:
        """A file larger than the bound (the bound was lowered): compact it once, if the disk allows."""
        data = self.db.execute("PRAGMA page_count").fetchone()[0] * self._page_size
        if data + self.journal_bytes <= self.max_bytes:
            return
        with contextlib.suppress(sqlite3.Error):
            self._enforce_bounds()
        try:
            self.db.execute("VACUUM")
        except sqlite3.Error as e:
            log.warning("spool file is larger than spool.max_bytes and cannot be compacted now: %s", describe(e))

    def _pending(self) -> bool:
        return bool(self._gone or self._gone_s or self._unsaved or self._redated or self._reported
                    or self._last_seq != self._saved_seq or self._frozen != self._saved_frozen)

    # -- writing what memory holds -----------------------------------------------------------

    def _settle(self) -> bool:
        """Write what only memory holds (counts, used-up seqs, deletions, re-dated bodies).
        True when nothing is left unwritten. Never raises for a failed write."""
        if not self._pending():
            self._worked("save")
            return True
        try:
            with self._tx():
                for key, n in self._unsaved.items():
                    self._bump(key, n)
                if self._unsaved_reason is not None:
                    self._set_meta("last_dead_letter", self._unsaved_reason)
                if self._last_seq > self._saved_seq:  # seqs used by dropped records: never reuse them
                    if not self.db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'records'",
                                           (self._last_seq,)).rowcount:
                        self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('records', ?)",
                                        (self._last_seq,))
                self._set_meta("frozen_through", self._frozen)
                resized = 0
                for seq, (body, added) in self._redated.items():
                    old = self.db.execute("SELECT size FROM records WHERE seq = ?", (seq,)).fetchone()
                    if old is not None:
                        self.db.execute("UPDATE records SET body = ?, size = ?, added = ? WHERE seq = ?",
                                        (body, len(body), added, seq))
                        resized += len(body) - old[0]
                for spool, count in self._reported.items():
                    self.db.execute("UPDATE salvaged_spools SET reported = max(reported, ?) WHERE spool = ?",
                                    (count, spool))
                self.db.execute("DELETE FROM salvaged_spools WHERE rows = 0 AND reported >= dropped")
        except sqlite3.Error as e:
            if not _write_failure(e):
                raise
            self._failed(e, "save")
            return False
        self._unsaved, self._unsaved_reason, self._reported = {}, None, {}
        self._saved_seq, self._saved_frozen = self._last_seq, self._frozen
        self._redated = {}
        self._bytes += resized
        return self._delete_gone()

    def _delete_gone(self) -> bool:
        for table, gone in (("records", self._gone), ("salvaged", self._gone_s)):
            while gone:
                chunk = sorted(gone)[:CHUNK]
                try:
                    with self._tx():
                        if table == "records":
                            n, freed = self._delete_rows(chunk)
                        else:
                            n, freed = self._delete_salvaged(chunk, dropped=False)
                            self.db.execute("DELETE FROM salvaged_spools WHERE rows = 0 AND reported >= dropped")
                except sqlite3.Error as e:
                    if not _write_failure(e):
                        raise
                    self._failed(e, "save")
                    return False
                self._forget(table, n, freed)
                gone.difference_update(chunk)
        self._worked("save")
        return True

    def _delete_rows(self, seqs: Sequence[int]) -> tuple[int, int]:
        """Delete own rows inside the caller's transaction: (rows, bytes) that existed."""
        marks = ",".join("?" * len(seqs))
        n, freed = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq IN ({marks})",
                                   seqs).fetchone()
        self.db.execute(f"DELETE FROM records WHERE seq IN ({marks})", seqs)
        self._rows_in_header(-n)
        return int(n), int(freed)

    def _delete_salvaged(self, rowids: Sequence[int], *, dropped: bool) -> tuple[int, int]:
        """Delete salvaged rows inside the caller's transaction, counting them per spool as dropped
        (the bound) or not (sent)."""
        marks = ",".join("?" * len(rowids))
        n = freed = 0
        for spool, k, size in self.db.execute(f"SELECT spool, COUNT(*), SUM(size) FROM salvaged WHERE id IN "
                                              f"({marks}) GROUP BY spool", rowids).fetchall():
            self.db.execute("UPDATE salvaged_spools SET rows = rows - ?, dropped = dropped + ? WHERE spool = ?",
                            (k, k if dropped else 0, spool))
            n, freed = n + k, freed + size
        self.db.execute(f"DELETE FROM salvaged WHERE id IN ({marks})", rowids)
        return n, freed

    def _forget(self, table: str, n: int, freed: int) -> None:
        """Committed deletions leave the running counts."""
        if table == "records":
            self._rows, self._bytes = self._rows - n, self._bytes - freed
        else:
            self._rows_s, self._bytes_s = self._rows_s - n, self._bytes_s - freed

    def _burn(self, n: int) -> None:
        """Count n records as dropped and use up n seqs for them: a hole the count explains."""
        if n:
            self._last_seq += n
            self._unsaved["dropped"] = self._unsaved.get("dropped", 0) + n
            self._settle()

    def maintain(self) -> None:
        """Write what memory holds, then apply the bounds (the runner calls it periodically)."""
        if self._settle():
            with contextlib.suppress(sqlite3.Error):
                self._enforce_bounds()

    # -- the API -----------------------------------------------------------------------------

    def add(self, records: Iterable[Record]) -> list[int]:
        """Store records, giving each its delivery seq. Returns the seqs of the records stored:
        none when the disk refuses them (they are then counted as dropped). Enforces the bounds."""
        recs = list(records)
        if not recs:
            return []
        self.generated += len(recs)
        self._settle()
        now, mono = self._clock(), self._boot_clock()
        first = self._last_seq + 1
        rows = []
        for i, rec in enumerate(recs):
            body = self._encoder.encode(msgspec.structs.replace(rec, seq=first + i))
            rows.append((first + i, now, len(body), body, self.boot_id, mono))
        # The seqs are used whether or not the rows get stored: a dropped record leaves a hole
        # the collector sees, and the drop count explains it.
        self._last_seq += len(rows)
        try:
            # Room first, so that the new rows take pages freed by the oldest rather than growing
            # the file past the bound (a page holds a little less JSON than its size).
            self._enforce_bounds(room=int(sum(r[2] for r in rows) * 1.25) + 2 * self._page_size)
        except sqlite3.Error as e:
            if not _write_failure(e):
                raise
        try:
            with self._tx():
                # Explicit seqs: the stored JSON carries its own seq; AUTOINCREMENT's counter
                # follows explicit rowids, so they are never reused either.
                self.db.executemany("INSERT INTO records (seq, added, size, body, boot, mono) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._rows_in_header(len(rows))
        except sqlite3.Error as e:
            if not _write_failure(e):
                raise
            self._unsaved["dropped"] = self._unsaved.get("dropped", 0) + len(rows)
            self._failed(e, "store", f"{len(rows)} new records dropped")
            return []
        self._saved_seq = self._last_seq
        self._rows += len(rows)
        self._bytes += sum(r[2] for r in rows)
        try:
            self._enforce_bounds()
        except sqlite3.Error as e:
            if not _write_failure(e):
                raise
            self._failed(e, "store")
            return [r[0] for r in rows]
        self._worked("store")
        return [r[0] for r in rows]

    def _enforce_bounds(self, room: int = 0) -> int:
        """Drop what is too old, then the oldest until the files fit max_bytes with `room` bytes
        to spare; count them. A transaction at a time of at most CHUNK rows (it must fit the
        journal)."""
        total = 0
        while n := self._enforce_once(room):
            total += n
        if total:
            log.warning("spool full or too old: dropped %d oldest records", total)
        return total

    def _enforce_once(self, room: int) -> int:
        old = self._too_old()
        budget = self.max_bytes - self.journal_bytes - 4 * self._page_size - room  # 4 pages: b-tree growth
        if not old and self._used_bytes() <= budget:
            return 0
        own = salv = 0
        deleted: list[tuple[str, int, int]] = []
        with self._tx():
            if old:  # at most a chunk per transaction, which the journal holds
                n, freed = self._delete_rows(old[:CHUNK])
                deleted.append(("records", n, freed))
                own += n
            while self._used_bytes() > budget and own + salv < CHUNK:
                excess = self._used_bytes() - budget
                victims = self._oldest("salvaged", excess)
                if victims:
                    n, freed = self._delete_salvaged(victims, dropped=True)
                    deleted.append(("salvaged", n, freed))
                    salv += n
                    continue
                victims = self._oldest("records", excess)
                if not victims:
                    break  # only rows in flight left: they are settled by ack/release
                n, freed = self._delete_rows(victims)
                deleted.append(("records", n, freed))
                own += n
            self._bump("dropped", own)
        for table, n, freed in deleted:
            self._forget(table, n, freed)
        return own + salv

    def _too_old(self) -> list[int]:
        """Seqs past max_age_s, from the head of the spool (rows are spooled in time order). A row
        of the running boot is aged by the boot clock, so a wall clock set back to 2009 at boot
        and put right later does not make it look 17 years old."""
        now = self._clock()
        offset = now - self._boot_clock()  # wall minus boot clock, now
        busy = self._in_flight | self._gone
        old = []
        for seq, added, boot, mono in self.db.execute("SELECT seq, added, boot, mono FROM records ORDER BY seq"):
            when = mono + offset if boot == self.boot_id and mono is not None else added
            if when >= now - self.max_age_s:
                break
            if seq not in busy:
                old.append(seq)
                if len(old) >= CHUNK:
                    break
        return old

    def _oldest(self, table: str, excess: int) -> list[int]:
        """The oldest rows not in flight whose JSON adds up to `excess` bytes (at least one)."""
        busy = (self._in_flight | self._gone) if table == "records" else (self._in_flight_s | self._gone_s)
        key = "seq" if table == "records" else "id"
        victims, freed = [], 0
        for rowid, size in self.db.execute(f"SELECT {key}, size FROM {table} ORDER BY {key} LIMIT ?",
                                           (CHUNK + len(busy),)):
            if rowid in busy:
                continue
            victims.append(rowid)
            freed += size
            if freed >= excess:
                break
        return victims

    def expire(self) -> int:
        """Apply the bounds now (add() does it too)."""
        return self._enforce_bounds()

    def begin_batch(self, max_records: int, max_bytes: int) -> SpoolBatch:
        """Take the oldest records not in flight (at least one, even if it alone exceeds
        max_bytes): rows salvaged from a corrupt spool first, then this spool's own."""
        salvaged = self._begin_salvaged(max_records, max_bytes)
        if salvaged is not None:
            return salvaged
        seqs: list[int] = []
        bodies: list[bytes] = []
        total = 0
        offset = self._clock() - self._boot_clock()
        busy = self._in_flight | self._gone
        for seq, added, boot, mono, body in self.db.execute(
                "SELECT seq, added, boot, mono, body FROM records ORDER BY seq"):
            if seq in busy:
                continue
            body = bytes(body)
            if seq in self._redated:
                body = self._redated[seq][0]
            elif seq > self._frozen and boot == self.boot_id and mono is not None:
                shift = offset - (added - mono)
                if abs(shift) > REDATE_TOLERANCE_S:  # the wall clock jumped since it was spooled
                    body = _redate(body, shift)
                    self._redated[seq] = (body, added + shift)
            if seqs and (len(seqs) >= max_records or total + len(body) > max_bytes):
                break
            seqs.append(seq)
            bodies.append(body)
            total += len(body)
        if not seqs:
            return SpoolBatch(self.spool_id, [], [], self.dropped)
        before = self._frozen
        # Frozen: from now on these rows may be stored under the times sent, which must not change.
        self._frozen = max(self._frozen, seqs[-1])
        self._in_flight.update(seqs)
        self._settle()  # not needed to send: on a full disk this stays in memory
        return SpoolBatch(self.spool_id, seqs, bodies, self.dropped, frozen=(before, self._frozen))

    def _begin_salvaged(self, max_records: int, max_bytes: int) -> SpoolBatch | None:
        if not self._rows_s and not self.db.execute("SELECT 1 FROM salvaged_spools").fetchone():
            return None
        busy = self._in_flight_s | self._gone_s
        for spool, dropped, reported in self.db.execute(
                "SELECT spool, dropped, max(reported, ?) FROM salvaged_spools ORDER BY rowid", (-1,)).fetchall():
            keys: list[int] = []
            seqs: list[int] = []
            bodies: list[bytes] = []
            total = 0
            for rowid, seq, body in self.db.execute("SELECT id, seq, body FROM salvaged WHERE spool = ? ORDER BY id",
                                                    (spool,)):
                if rowid in busy:
                    continue
                if seqs and (len(seqs) >= max_records or total + len(body) > max_bytes):
                    break
                keys.append(rowid)
                seqs.append(seq)
                bodies.append(bytes(body))
                total += len(body)
            reported = max(reported, self._reported.get(spool, -1))
            if seqs or (reported < dropped and not any(k in busy for k in self._keys_of(spool))):
                self._in_flight_s.update(keys)
                return SpoolBatch(uuid.UUID(spool), seqs, bodies, dropped, salvaged=True, keys=tuple(keys))
        return None

    def _keys_of(self, spool: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM salvaged WHERE spool = ?", (spool,))]

    def ack(self, batch: SpoolBatch) -> int:
        """The collector committed these: delete them (or, if the disk refuses, forget them)."""
        self._settle_batch(batch, gone=True)
        if batch.salvaged:
            self._reported[str(batch.spool)] = max(self._reported.get(str(batch.spool), -1), batch.dropped)
        self._settle()
        return len(batch)

    def release(self, batch: SpoolBatch, *, maybe_stored: bool = True) -> None:
        """Not delivered: ready to be sent again. Writes nothing unless `maybe_stored` is False
        (the collector surely never saw it), which lets its records be re-dated again."""
        self._settle_batch(batch, gone=False)
        if not maybe_stored and not batch.salvaged and self._frozen == batch.frozen[1]:
            self._frozen = batch.frozen[0]
            self._settle()

    def dead_letter(self, batch: SpoolBatch, reason: str) -> int:
        """The collector refused these for good: remove and count them."""
        self._settle_batch(batch, gone=True)
        self._unsaved["dead_letter"] = self._unsaved.get("dead_letter", 0) + len(batch)
        self._unsaved_reason = reason[:300]
        self._settle()
        return len(batch)

    def _settle_batch(self, batch: SpoolBatch, *, gone: bool) -> None:
        if batch.salvaged:
            self._in_flight_s.difference_update(batch.keys)
            if gone:
                self._gone_s.update(batch.keys)
        else:
            self._in_flight.difference_update(batch.seqs)
            if gone:
                self._gone.update(batch.seqs)
                for seq in batch.seqs:
                    self._redated.pop(seq, None)

    def depth(self) -> int:
        """Records waiting to be sent (not in a batch being sent)."""
        return (self._rows - len(self._in_flight) - len(self._gone)
                + self._rows_s - len(self._in_flight_s) - len(self._gone_s))

    @property
    def dropped(self) -> int:
        return int(self._meta("dropped") or 0) + self._unsaved.get("dropped", 0)

    @property
    def last_seq(self) -> int:
        """The last seq given out (to a record stored or dropped)."""
        return self._last_seq

    def never_reuse(self, last_seq: int) -> int:
        """Seqs up to `last_seq` were given out before (the status file says so), but the spool
        does not know them: a power cut on a disk that ignores flushes lost committed records.
        Skip them, so that they are never given again: the collector then sees the hole and
        counts it as a gap. Returns how many were skipped."""
        lost = last_seq - self._last_seq
        if lost <= 0:
            return 0
        log.error("spool lost %d committed records (seqs %d to %d; a power cut on a disk that ignores flushes?); "
                  "their seqs are skipped, and the collector counts them as a gap", lost, self._last_seq + 1,
                  last_seq)
        self._last_seq = last_seq
        self._settle()
        return lost

    @property
    def unsaved_dropped(self) -> int:
        """Drops counted in memory that the file does not hold yet (a full disk)."""
        return self._unsaved.get("dropped", 0)

    def stats(self) -> SpoolStats:
        oldest = self.db.execute("SELECT MIN(added) FROM records").fetchone()[0]
        return SpoolStats(
            spool=self.spool_id, depth=self.depth(), in_flight=len(self._in_flight) + len(self._in_flight_s),
            nbytes=self._bytes + self._bytes_s, dropped=self.dropped,
            dead_letter=int(self._meta("dead_letter") or 0) + self._unsaved.get("dead_letter", 0),
            corrupt_files=int(self._meta("corrupt_files") or 0), oldest_added=oldest,
            last_dead_letter=self._unsaved_reason or self._meta("last_dead_letter") or None,
            file_bytes=self.file_bytes(), salvaged_waiting=self._rows_s - len(self._gone_s),
            salvaged=int(self._meta("salvaged") or 0), unreadable=int(self._meta("unreadable") or 0),
            unsaved_dropped=self.unsaved_dropped)


def read_stats(path: Path) -> SpoolStats | None:
    """Stats from another process (`tice-agent status` while the daemon runs): read-only.

    Another process cannot see the daemon's memory, so "in flight" here means every row sent at
    least once and not acknowledged yet (seq <= frozen_through). Never raises for a damaged or
    busy file: SpoolStats.error then says why."""
    if not path.exists():
        return None
    try:
        return _read_stats(path, "ro")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None  # the daemon has created the file but not its tables yet
        # A commit interrupted by a crash left a hot journal: reading needs it rolled back
        # first, which a read-only connection cannot do. Any reader may do it (SQLite's own
        # recovery, under its locks), so read once more with write access.
        if (getattr(e, "sqlite_errorcode", 0) & 0xFF) != SQLITE_READONLY:
            return SpoolStats(spool=None, error=f"{type(e).__name__}: {e}"[:300])
    try:
        return _read_stats(path, "rw")
    except sqlite3.Error as e:
        return SpoolStats(spool=None, error=f"{type(e).__name__}: {e}"[:300])


def _read_stats(path: Path, mode: str) -> SpoolStats:
    def num(meta: dict[str, str], key: str) -> int:
        try:
            return int(meta.get(key, 0))
        except ValueError:
            return 0

    try:
        db = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=5.0)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            spool = uuid.UUID(meta["spool"])
            rows, nbytes, oldest = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(added) FROM records"
                                              ).fetchone()
            sent = db.execute("SELECT COUNT(*) FROM records WHERE seq <= ?", (num(meta, "frozen_through"),)
                              ).fetchone()[0]
            srows, sbytes = 0, 0
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'salvaged'").fetchone():
                srows, sbytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM salvaged").fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:
        raise
    except (sqlite3.Error, KeyError, ValueError) as e:
        return SpoolStats(spool=None, error=f"{type(e).__name__}: {e}"[:300])
    files = 0
    for side in (path, Path(f"{path}-journal")):
        with contextlib.suppress(OSError):
            files += side.stat().st_size
    return SpoolStats(spool=spool, depth=rows + srows - sent, in_flight=sent, nbytes=nbytes + sbytes,
                      dropped=num(meta, "dropped"), dead_letter=num(meta, "dead_letter"),
                      corrupt_files=num(meta, "corrupt_files"), oldest_added=oldest,
                      last_dead_letter=meta.get("last_dead_letter"), file_bytes=files, salvaged_waiting=srows,
                      salvaged=num(meta, "salvaged"), unreadable=num(meta, "unreadable"))


__all__ = ["Spool", "SpoolBatch", "SpoolStats", "SpoolUnavailable", "Trouble", "read_stats"]
