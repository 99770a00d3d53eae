"""Group commit: a few writer tasks each write many requests' records in one transaction.

A request hands its validated records to the writer and waits; a writer task takes everything
queued (up to a record bound) and writes it in one statement, so one round trip and one
transaction: PostgreSQL expands the requests' JSON into rows (a plain insert when every record
is new as far as this process knows, else with ON CONFLICT DO NOTHING), and records last-seen
times; once that statement has committed, it answers each request with its own counts of
stored and duplicate records. A full queue or a database that is down is answered
at once with 503 + Retry-After: never a hang, never a 500.

Each writer task owns one connection (not a pool slot): auth lookups never wait behind a flush.
One flush is in flight at a time while the queue holds few records: the requests that arrive
meanwhile all go in the next flush, one commit for them all (a commit costs PostgreSQL about as
much CPU as storing 30 small records). A further task starts a flush beside it once a backlog
is queued (`parallel_records` records, or half the queue's requests): PostgreSQL then writes on
more than one backend, and one transaction is built while another commits; or once the flush in
flight has taken `turn_wait_s` (held up by a row lock or a slow disk: the other devices'
requests go on beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import msgspec

from tice_collector.db.errors import is_data_error
from tice_collector.db.queries import q
from tice_collector.db.records import Table, flush_sql, ordered
from tice_collector.errors import BadRequest, Unavailable
from tice_collector.metrics import Metrics
from tice_wire import AnyRecord

log = logging.getLogger("tice.writer")
_NEVER = 2**62
# A flush is given up by PostgreSQL after db_timeout_s (statement_timeout); this side waits this
# much longer for its answer, and gives up itself only when the database cannot answer at all.
_CANCEL_MARGIN_S = 1.0



@dataclass
class Job:
    device_id: uuid.UUID
    spool: uuid.UUID
    dropped: int
    received_at: datetime
    agent_version: str | None
    # Per table, the JSON array of the records to store there, as msgspec encoded them from the
    # validated structs (db/records.py insert_sql reads them).
    records: dict[Table, str]
    size: int  # how many records that is
    seqs: list[int] = field(default_factory=list)  # every seq of the batch, stored or refused
    shift_us: int = 0  # the clock correction for `at_corrected`, in microseconds
    future: asyncio.Future[tuple[int, int]] = field(default_factory=lambda: asyncio.get_running_loop()
                                                    .create_future())


@dataclass
class _Link:
    """One writer task's own connection."""

    conn: asyncpg.Connection | None = None


class Writer:
    def __init__(self, dsn: str, metrics: Metrics, *, tasks: int, queue_max: int, batch_records: int,
                 linger_s: float, commit_timeout_s: float, db_timeout_s: float, retry_after_s: int,
                 parallel_records: int = 1000, turn_wait_s: float = 0.1, lock_timeout_s: float = 2.0):
        self._dsn = dsn
        self._metrics = metrics
        self._queue: asyncio.Queue[Job] = asyncio.Queue(queue_max)
        self._n_tasks = tasks
        self._batch_records = batch_records
        self._linger_s = linger_s
        self._commit_timeout_s = commit_timeout_s
        self._db_timeout_s = db_timeout_s
        self._retry_after_s = retry_after_s
        self._tasks: list[asyncio.Task[None]] = []
        self._links: list[_Link] = []
        self._seen = SpoolsSeen()
        self._closing = False
        self._parallel_records = parallel_records
        # The longest a task waits for the flush in flight before it starts its own beside it. A
        # flush under load takes about 10 ms (bench/README.md); one that takes longer is held up
        # (a row lock, a slow disk), and other devices' requests must not wait behind it.
        self._turn_wait_s = turn_wait_s
        self._lock_timeout_s = lock_timeout_s
        self._queued_records = 0  # records of the jobs in the queue
        self._in_flight: dict[int, float] = {}  # when each flush in flight started, by task
        self._turn = asyncio.Event()  # set when a flush ends, or a backlog is queued
        self._backlog_at = _NEVER  # queued records that let the waiting task start a flush
        # ... or queued requests: many small ones would fill the queue (503) before the records
        # reach the backlog.
        self._backlog_jobs = max(1, queue_max // 2)
        self._taking = asyncio.Lock()
        # Devices whose rows another transaction held at the last check (writer_lock_timeout_s
        # passed waiting for them).
        self._held: set[uuid.UUID] = set()
        self._holding = 0  # jobs taken by the task waiting for its turn (0 or 1)

    def start(self) -> None:
        for i in range(self._n_tasks):
            link = _Link()
            self._links.append(link)
            self._tasks.append(asyncio.create_task(self._run(link), name=f"tice-writer-{i}"))

    async def close(self) -> None:
        """Refuse new work, write everything already queued, then stop."""
        self._closing = True
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self._links:
            if link.conn is not None:
                with contextlib.suppress(Exception):
                    await link.conn.close(timeout=self._db_timeout_s)

    def depth(self) -> int:
        """Requests waiting for a flush to start: those queued, and the one a task holds while it
        waits for its turn."""
        return self._queue.qsize() + self._holding

    async def submit(self, job: Job) -> tuple[int, int]:
        """Wait until the job's records are committed; return (stored, duplicates)."""
        if self._closing:
            raise Unavailable("the collector is shutting down", retry_after=self._retry_after_s)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Unavailable("the writer queue is full", code="overloaded",
                              retry_after=self._retry_after_s) from None
        self._queued_records += job.size
        if self._holding and (self._queued_records >= self._backlog_at or self.depth() >= self._backlog_jobs):
            self._turn.set()
        # One timer that fails the job's future, rather than a timeout around a shield: fewer
        # objects and callbacks on every request. The writer answers only a future not yet done.
        timer = asyncio.get_running_loop().call_later(self._commit_timeout_s, self._too_late, job)
        try:
            return await job.future
        finally:
            timer.cancel()

    def _too_late(self, job: Job) -> None:
        if not job.future.done():
            # The records may still be committed later; a resend is then a harmless duplicate.
            job.future.set_exception(Unavailable("the database did not commit in time",
                                                 retry_after=self._retry_after_s))

    async def _run(self, link: _Link) -> None:
        while True:
            jobs: list[Job] = []
            try:
                async with self._taking:  # one task takes at a time, so jobs leave in their order
                    await self._next_flush(jobs)
                    self._in_flight[id(link)] = time.monotonic()

                def end() -> None:
                    if self._in_flight.pop(id(link), None) is not None:
                        self._turn.set()
                try:
                    await self._flush_all(link, jobs, end)
                finally:
                    end()
            except asyncio.CancelledError:
                self._fail(jobs, Unavailable("the collector is shutting down", retry_after=self._retry_after_s))
                raise
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _next_flush(self, jobs: list[Job]) -> None:
        """Take the next flush's jobs into `jobs`: the oldest, then, once no other flush is in
        flight, or a backlog is queued (`parallel_records` records, or half the queue's
        requests), or the flush in flight has taken `turn_wait_s`, all queued up to
        `batch_records` (waiting up to `linger_s` for more)."""
        jobs.append(self._take(await self._queue.get()))
        size = jobs[0].size
        if self._in_flight:
            self._holding = 1
            try:
                while (self._in_flight and size + self._queued_records < self._parallel_records
                       and self.depth() < self._backlog_jobs):
                    # Measured from the oldest flush in flight: once one is held up, the next
                    # flushes go beside it without waiting for it again.
                    remaining = min(self._in_flight.values()) + self._turn_wait_s - time.monotonic()
                    if remaining <= 0:
                        break  # the flush in flight is held up: go beside it
                    self._turn.clear()
                    self._backlog_at = self._parallel_records - size
                    try:
                        async with asyncio.timeout(remaining):
                            await self._turn.wait()
                    except TimeoutError:
                        break
            finally:
                self._backlog_at = _NEVER
                self._holding = 0
        deadline = time.monotonic() + self._linger_s
        while size < self._batch_records:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            jobs.append(self._take(job))
            size += job.size

    def _take(self, job: Job) -> Job:
        self._queued_records -= job.size
        return job

    async def _flush_all(self, link: _Link, jobs: list[Job], end: Callable[[], None] = lambda: None) -> None:
        """Write the jobs in one flush and answer each. `end` is called once the database has
        answered, before the requests are: a task waiting for its turn then sends the next
        flush before the event loop runs the answered requests' handlers (about 2 ms for 16
        requests, which PostgreSQL would otherwise spend idle)."""
        started = time.perf_counter()
        try:
            if self._held and not self._held.isdisjoint(job.device_id for job in jobs):
                # A device whose row was held a moment ago (its agent sends again): check before
                # waiting writer_lock_timeout_s for it again.
                jobs = await self._set_aside(link, jobs)
                if not jobs:
                    end()
                    return
            results = await self._flush(link, jobs)
            end()
        except asyncio.CancelledError:
            self._fail(jobs, Unavailable("the collector is shutting down", retry_after=self._retry_after_s))
            raise
        except Exception as e:
            if is_data_error(e):
                return await self._isolate(link, jobs, e)
            if isinstance(e, asyncpg.LockNotAvailableError | asyncpg.DeadlockDetectedError):
                end()
                return await self._apart(link, jobs, e)
            end()
            await self._unavailable(link, jobs, e)
            return
        metrics = self._metrics
        metrics.flushes_ok.inc()
        metrics.flush_duration.observe(time.perf_counter() - started)
        metrics.flush_records.observe(sum(j.size for j in jobs))
        stored = sum(r[0] for r in results)
        # Counted here, once per transaction, right after the commit (not once per request).
        metrics.records_stored.inc(stored)
        metrics.records_duplicate.inc(sum(r[1] for r in results))
        late = 0
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
            elif not job.future.cancelled():  # answered 503 by _too_late (cancelled: the client left)
                late += 1
        if late:
            log.warning("%d of this flush's %d requests had been answered 503 after writer_commit_timeout_s "
                        "(%g s) before it committed: their records are in the database now, and the agents' "
                        "resends will be counted as duplicates", late, len(jobs), self._commit_timeout_s)

    async def _isolate(self, link: _Link, jobs: list[Job], e: BaseException) -> None:
        """Bad data fails the whole group: write each request alone, so one bad request
        cannot hold the others back, and answer the bad one 400."""
        self._metrics.flushes_error.inc()
        if len(jobs) == 1:
            log.error("records refused by the database: %s", _short(e))
            self._fail(jobs, BadRequest(f"the database refused these records: {_short(e)}", code="unstorable"))
            return
        log.error("group write failed (%s); retrying %d requests one by one", _short(e), len(jobs))
        for job in jobs:
            await self._flush_all(link, [job])

    async def _apart(self, link: _Link, jobs: list[Job], e: BaseException) -> None:
        """A row or table the flush writes was held by another transaction past lock_timeout_s,
        or the flush was chosen to end a deadlock (the statement then changed nothing). The
        requests of the devices whose rows are held now are answered 503 (their agents send
        again later) and the others written in one flush. When no device's rows are held (a
        whole table locked, or the lock released meanwhile), all are answered 503 at once:
        waiting again would hold up the requests queued behind them too."""
        self._metrics.flushes_error.inc()
        try:
            rest = await self._set_aside(link, jobs)
        except asyncpg.LockNotAvailableError:
            rest = jobs  # the check itself waited on a table lock
        except Exception as probe_error:  # the database cannot answer: as for a failed flush
            await self._unavailable(link, jobs, probe_error)
            return
        if len(rest) < len(jobs):
            if rest:
                await self._flush_all(link, rest)
            return
        log.warning("%d requests answered 503: the flush waited for a lock held by another transaction that is "
                    "not on its devices' rows (a locked table?): %s", len(jobs), _short(e))
        self._fail(jobs, Unavailable("the database is busy with another operation (a lock held); send again later",
                                     retry_after=self._retry_after_s))

    async def _set_aside(self, link: _Link, jobs: list[Job]) -> list[Job]:
        """Answer 503 the requests of the devices whose rows (the device's, or one of its
        spools') another transaction holds now, at once (the flush would wait
        writer_lock_timeout_s for them); return the others. The check (queries.sql
        free_devices) takes the rows as the flush does (FOR NO KEY UPDATE) but skips those it
        cannot take (SKIP LOCKED), so it never waits. The held devices are remembered: a later
        flush with one of them (its agent's resend) checks first rather than waiting again."""
        wanted = sorted({job.device_id for job in jobs})
        conn = await self._connection(link)
        rows = await conn.fetch(q("free_devices"), wanted, timeout=self._db_timeout_s + _CANCEL_MARGIN_S)
        free = {row["id"] for row in rows}
        held = [device for device in wanted if device not in free]
        newly = [device for device in held if device not in self._held]
        released = sorted(free & self._held)
        self._held -= free
        if released:
            log.info("device rows released by the other transaction: %s", _some(released))
        if len(self._held) + len(held) > _HELD_MAX:
            self._held.clear()
        self._held.update(held)
        aside = [job for job in jobs if job.device_id not in free]
        if newly:
            log.warning("device rows held by another transaction past writer_lock_timeout_s (%g s): their "
                        "requests answered 503 until they are released (devices %s)", self._lock_timeout_s,
                        _some(newly))
        self._fail(aside, Unavailable("this device's data is being changed by another operation; send again later",
                                      retry_after=self._retry_after_s))
        return [job for job in jobs if job.device_id in free]

    async def _unavailable(self, link: _Link, jobs: list[Job], e: BaseException) -> None:
        """Anything but bad data or a held row (connection refused, timeout, shutdown) means the
        database cannot take the data now: answer 503, the agents keep it and retry. Reconnect
        next time."""
        await self._drop_connection(link)
        self._metrics.flushes_error.inc()
        log.warning("database unavailable, %d requests answered 503: %s", len(jobs), _short(e))
        self._fail(jobs, Unavailable("the database is unavailable", retry_after=self._retry_after_s))

    def _fail(self, jobs: list[Job], error: Exception) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    async def _connection(self, link: _Link) -> asyncpg.Connection:
        if link.conn is None or link.conn.is_closed():
            conn = await asyncpg.connect(self._dsn, timeout=self._db_timeout_s)
            # The flush statement planned once for all: left to choose, PostgreSQL plans it
            # again at every execution while flushes are small (its estimate of a custom plan,
            # knowing the arrays' lengths, stays below the generic plan's), and planning was then
            # half of its CPU per flush: 2.0 against 1.0 ms for a flush of one request, the same
            # from 9 requests up (bench/flush_statement.py).
            # And PostgreSQL itself gives up a flush after db_timeout_s (statement_timeout),
            # before this side does: its transaction is then rolled back, so a request answered
            # 503 has stored nothing and its resend stores it (counted once, as stored). Given up
            # only here, the backend went on waiting (on a row lock, say) and committed later,
            # its rows never counted as stored, and one such backend was left per timeout.
            try:
                await conn.execute("SET plan_cache_mode = force_generic_plan; "
                                   f"SET statement_timeout = {max(1, round(self._db_timeout_s * 1000))}; "
                                   f"SET lock_timeout = {max(1, round(self._lock_timeout_s * 1000))}",
                                   timeout=self._db_timeout_s)
            except asyncpg.PostgresError as e:
                # Not the records' fault, whatever its SQLSTATE: never a 400 (an agent drops a
                # batch answered 400), a 503 that the agent retries.
                conn.terminate()
                raise ConnectionError(f"cannot set up the writer's connection: {_short(e)}") from e
            link.conn = conn
        return link.conn

    async def _drop_connection(self, link: _Link) -> None:
        if link.conn is not None:
            link.conn.terminate()
        link.conn = None

    async def _flush(self, link: _Link, jobs: list[Job]) -> list[tuple[int, int]]:
        conn = await self._connection(link)
        tables = ordered(table for job in jobs for table in job.records)
        all_new = self._seen.all_new(jobs)
        # Noted as sent, before the commit: a second send of these seqs while this flush is in
        # flight, or after it timed out here but committed there, must not go as a plain insert.
        self._seen.note(jobs)
        if all_new:
            try:
                # Every record is new as far as this process knows (the common case): a plain
                # insert costs PostgreSQL less. Should one be stored already after all (another
                # collector process stored it), the statement fails whole, changing nothing,
                # and the flush is written again with conflict handling.
                await self._write(conn, jobs, tables, on_conflict=False)
                return [(job.size, 0) for job in jobs]
            except asyncpg.UniqueViolationError:
                self._metrics.flushes_retried.inc()
        returned = await self._write(conn, jobs, tables)
        if len(returned) == sum(job.size for job in jobs):
            # Every row was new: no key to match.
            return [(job.size, 0) for job in jobs]
        return _match(jobs, tables, returned)

    async def _write(self, conn: asyncpg.Connection, jobs: list[Job], tables: tuple[Table, ...],
                     on_conflict: bool = True) -> list[asyncpg.Record]:
        """Every row of the flush in one statement (db/records.py flush_sql), so one round trip
        and one implicit transaction, committed when it returns: the rows of each record type
        (PostgreSQL expands every request's JSON), then, per device, its last-seen time and
        agent version; per spool, its drop counter and the seqs it delivered (the seqs that
        never arrive become its gaps, collector/tice_collector/fleet.py). The devices are locked
        first, in id order (queries.sql flush_devices). Returns the keys stored; without
        `on_conflict`, one row (their count), or UniqueViolationError if any record was
        already stored."""
        seen: dict[uuid.UUID, tuple[datetime, str | None]] = {}
        spools: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, datetime]] = {}
        runs: list[tuple[uuid.UUID, uuid.UUID, int, int]] = []
        for job in jobs:
            seen[job.device_id] = (job.received_at, job.agent_version)
            key = (job.device_id, job.spool)
            prev = spools.get(key, (0, job.received_at))
            spools[key] = (max(prev[0], job.dropped), job.received_at)
            runs += [(job.device_id, job.spool, lo, hi) for lo, hi in seq_runs(job.seqs)]
        ids, keys = sorted(seen), sorted(spools)
        args: list[object] = [
            ids, [seen[i][0] for i in ids], [seen[i][1] for i in ids],
            [k[0] for k in keys], [k[1] for k in keys], [spools[k][0] for k in keys], [spools[k][1] for k in keys],
            [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs], [r[3] for r in runs]]
        for table in tables:
            batch = [job for job in jobs if table in job.records]
            args += [[j.records[table] for j in batch], [j.device_id for j in batch], [j.spool for j in batch],
                     [j.shift_us for j in batch], [j.received_at for j in batch]]
        returned: list[asyncpg.Record] = await conn.fetch(flush_sql(tables, on_conflict), *args,
                                                           timeout=self._db_timeout_s + _CANCEL_MARGIN_S)
        return returned


class SpoolsSeen:
    """The highest seq this process has sent to the database for each (device, spool): a hint of
    which flushes carry only new records, so that those are sent as a plain insert and a resend goes
    straight to conflict handling (a plain insert that meets a stored key fails, and PostgreSQL
    logs that failure with the whole statement). A hint only: a wrong one costs a retried
    flush, never a record. Forgotten whole past `limit` spools (a collector that ran for years
    through many reinstalled agents), which costs only the next flush of each spool."""

    def __init__(self, limit: int = 200_000) -> None:
        self._high: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        self._limit = limit

    def all_new(self, jobs: list[Job]) -> bool:
        """Whether every job's seqs are above what its spool has sent here, none repeated in its
        batch, and no spool comes twice in the flush. A spool not seen yet (the collector just
        started) is not known to be new."""
        high = self._high
        spools = set()
        for job in jobs:
            key = (job.device_id, job.spool)
            if key in spools:
                return False
            spools.add(key)
            if job.seqs:
                last = high.get(key)
                if last is None or min(job.seqs) <= last or len(set(job.seqs)) < len(job.seqs):
                    return False
        return True

    def note(self, jobs: list[Job]) -> None:
        """The jobs' seqs are on their way to the database (noted before the commit: a later
        send of them is then not taken for new, whether that flush commits or not)."""
        high = self._high
        if len(high) > self._limit:
            high.clear()
        for job in jobs:
            if job.seqs:
                key = (job.device_id, job.spool)
                top = max(job.seqs)
                if high.get(key, -1) < top:
                    high[key] = top


_RECORDS = msgspec.json.Decoder(list[AnyRecord])
# Devices remembered as held at most (past it, forgotten whole: each costs only one more wait).
_HELD_MAX = 10_000


def _match(jobs: list[Job], tables: tuple[Table, ...], returned: list[asyncpg.Record]) -> list[tuple[int, int]]:
    """(stored, duplicates) per job when some rows were already there. A stored key counts
    once, for the first request that carried it, so two resends in one flush give one stored
    and one duplicate. The key is the row's, time included: a seq repeated with another time
    (an agent restored from an old disk image) is another row."""
    stored: Counter[tuple[str, uuid.UUID, uuid.UUID, object, datetime]] = Counter()
    for row in returned:
        stored[(tables[row["t"]].name, row["device_id"], row["spool"], row["seq"], row["at"])] += 1
    results = []
    for job in jobs:
        ok = 0
        for table, records in job.records.items():
            for record in _RECORDS.decode(records):
                key = (table.name, job.device_id, job.spool, record.seq, record.at)
                if stored[key] > 0:
                    stored[key] -= 1
                    ok += 1
        results.append((ok, job.size - ok))
    return results


def seq_runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive seqs as (first, last): [1, 2, 3, 7, 9, 8] -> [(1, 3), (7, 9)]."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _short(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]  # one line: PostgreSQL's DETAIL has its own


def _some(devices: list[uuid.UUID], shown: int = 10) -> str:
    """The first `shown` devices, and how many more: a log line stays readable."""
    more = f" and {len(devices) - shown} more" if len(devices) > shown else ""
    return ", ".join(map(str, devices[:shown])) + more
