"""Held device rows: what the other devices' requests get while some devices' rows are held.

    python bench/held_rows.py [--devices 400] [--held 5] [--hold-seconds 30] [--warmup 10]
                              [--settle 10] [--records 10] [--retry-after S] [--set KEY=VALUE]

Starts the product as bench/ingest.py does (`tice-collector serve` on a fresh embedded
PostgreSQL, fsync on, the collector's own settings unless `--set`), enrols `--devices` laptops,
and drives it over HTTP with one agent-like client per device, a closed loop: each sends a
usage report of `--records` records and waits for the answer; on 200 it sends its next batch,
on 503 (or no answer) it waits Retry-After (or `--retry-after` seconds, to keep runs short) and
sends the same batch again, as the agent does (agents/tice_agent/sender.py).

After `--warmup` seconds, a separate PostgreSQL connection takes `--held` devices' rows as an
operator's transaction left open would (`BEGIN; SELECT ... FROM devices WHERE id = ANY(...)
FOR UPDATE`), keeps them `--hold-seconds`, then rolls back; the clients go on `--settle`
seconds more, then each finishes the batch it has in hand (resending until 200) and stops.

Prints, for the held devices and for the others apart, and for each phase (before the hold:
answered before the rows were taken; the hold: in flight at some moment while they were held;
after: sent after their release): the answers by status and detail text, the others' latency
(p50, p99, max) and acknowledged requests per second, how late the clients' own event loop
ran (a share of each latency is the clients' own delay), the CPU of clients, collector and
PostgreSQL, the longest a batch of each group waited for its 200 (resends included); the
collector's warnings, grouped; and, once the collector has stopped, whether the rows stored
are exactly the records acknowledged (none missing, none twice). The baseline is the same
run's phase before the hold, and a run with `--held 0` (the same phases, no row held). Exit status 1 when an acknowledged record is missing, a record
is stored twice, a row is stored that no acknowledged or unfinished batch carried, or a batch
stayed unacknowledged.

The code measured is whatever `tice_collector` Python imports (printed first): to measure an
older commit, put its checkout first on PYTHONPATH (bench/README.md, "Held device rows").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import aiohttp
import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import code_under_test, exit_on_sigterm, run, setting_overrides  # noqa: E402
from bench._shapes import example  # noqa: E402
from bench._targets import Product  # noqa: E402
from tice_collector.db.records import TABLES  # noqa: E402
from tice_wire import MAX_RECORDS_PER_BATCH, AnyRecord, Batch, Usage  # noqa: E402

PHASES = ("before", "hold", "after")
# How long the clients may take, once told to stop, to get their last batches acknowledged.
DRAIN_S = 120.0


@dataclass
class Answer:
    """One request as the client saw it."""

    held: bool  # sent by a device whose row the bench holds
    sent: float  # perf_counter when it was sent
    seconds: float  # until its answer (or its failure)
    what: str  # "200", "503 <detail>", "error <exception>"


@dataclass
class Device:
    id: uuid.UUID
    token: str
    held: bool
    spool: uuid.UUID = field(default_factory=uuid.uuid4)
    next_seq: int = 0
    acked: set[int] = field(default_factory=set)  # seqs answered 200
    pending: list[int] = field(default_factory=list)  # seqs of the batch in hand, not yet answered 200
    accepted: int = 0  # stored, by the answers
    duplicates: int = 0  # already stored, by the answers
    rejected: int = 0  # refused within a 200 (outside the time window): none expected
    refused: list[str] = field(default_factory=list)  # batches answered neither 200 nor 503
    longest_batch_s: float = 0.0  # first send to 200, resends included
    first_200_after_release: float | None = None


@dataclass
class Clock:
    started: float = field(default_factory=time.perf_counter)
    hold_from: float | None = None  # the rows taken (FOR UPDATE returned)
    hold_to: float | None = None  # the rows released (ROLLBACK returned)

    stopped: float = 0.0  # the clients told to stop
    lags: list[tuple[float, float]] = field(default_factory=list)  # (when, how late) the clients' loop woke
    cores: dict[str, float] = field(default_factory=dict)  # CPU over the run, in cores, by whom

    def phase(self, a: Answer) -> str:
        """The request's phase: "before" answered before the rows were taken, "hold" in flight at
        some moment while they were held, "after" sent after their release."""
        return self.between(a.sent, a.sent + a.seconds)

    def between(self, start: float, end: float) -> str:
        if self.hold_from is None or end < self.hold_from:
            return "before"
        if self.hold_to is None or start < self.hold_to:
            return "hold"
        return "after"


_RESULT = msgspec.json.Decoder(dict[str, object])


def detail_of(body: bytes) -> str:
    try:
        problem = _RESULT.decode(body)
    except msgspec.DecodeError:
        return body[:80].decode(errors="replace")
    return str(problem.get("detail", problem))


async def client(dev: Device, http: aiohttp.ClientSession, url: str, records: int, base: datetime,
                 retry_after: float | None, clock: Clock, answers: list[Answer], stop: asyncio.Event) -> None:
    """One device: a batch, resent until answered 200 (a 4xx, which no batch here should get,
    ends that batch), then the next, until `stop` is set."""
    headers = {"Authorization": f"Bearer {dev.token}", "Content-Type": "application/json"}
    encode = msgspec.json.Encoder().encode
    while not stop.is_set():
        seqs = list(range(dev.next_seq, dev.next_seq + records))
        dev.next_seq += records
        dev.pending = seqs
        # One-minute intervals, a minute apart from the base: every record inside the window.
        batch = cast(list[AnyRecord], [example("usage", seq=s, at=base + timedelta(minutes=s)) for s in seqs])
        first = time.perf_counter()
        while True:
            # sent_at is the device clock at each send, as the agent sets it (a resend too).
            body = encode(Batch(device_id=dev.id, spool=dev.spool, sent_at=datetime.now(UTC), records=batch,
                                agent_version="bench"))
            sent = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as r:
                    status, payload, header = r.status, await r.read(), r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as e:
                status, payload, header = 0, type(e).__name__.encode(), None
            now = time.perf_counter()
            if status == 200:
                answers.append(Answer(dev.held, sent, now - sent, "200"))
                result = _RESULT.decode(payload)
                dev.accepted += int(str(result["accepted"]))
                dev.duplicates += int(str(result["duplicates"]))
                dev.rejected += int(str(result.get("rejected", 0)))
                dev.acked.update(seqs)
                dev.pending = []
                dev.longest_batch_s = max(dev.longest_batch_s, now - first)
                if dev.held and clock.hold_to is not None and dev.first_200_after_release is None \
                        and sent >= clock.hold_to:
                    dev.first_200_after_release = now - clock.hold_to
                break
            what = f"error {payload.decode()}" if status == 0 else f"{status} {detail_of(payload)}"
            answers.append(Answer(dev.held, sent, now - sent, what))
            if status in (0, 503):
                try:
                    wait = retry_after if retry_after is not None else float(header or 5)
                except ValueError:  # not delay-seconds (the collector sends no HTTP-date)
                    wait = 5.0
                await asyncio.sleep(wait)
                continue
            dev.refused.append(what)  # the batch is not resent: the agent drops a batch answered 4xx
            dev.pending = []
            break


async def hold(db_url: str, ids: list[uuid.UUID], seconds: float, clock: Clock) -> None:
    """Take the devices' rows as an operator's open transaction would, keep them, roll back."""
    conn = await asyncpg.connect(db_url)
    try:
        tr = conn.transaction()
        await tr.start()
        await conn.fetch("SELECT id FROM devices WHERE id = ANY($1::uuid[]) FOR UPDATE", ids)
        clock.hold_from = time.perf_counter()
        print(f"  {clock.hold_from - clock.started:5.1f} s: {len(ids)} device rows held", file=sys.stderr)
        try:
            await asyncio.sleep(seconds)
        finally:
            await tr.rollback()
            clock.hold_to = time.perf_counter()
            print(f"  {clock.hold_to - clock.started:5.1f} s: released", file=sys.stderr)
    finally:
        await conn.close()


async def drive(product: Product, devices: list[Device], args: argparse.Namespace, clock: Clock,
                answers: list[Answer]) -> None:
    stop = asyncio.Event()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    # One connection per device (each has one request in flight, as an agent); no pool bound.
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        clock.started = time.perf_counter()
        cpu0, own0 = product.cpu(), time.process_time()
        tasks = [asyncio.create_task(client(d, http, product.url, args.records, base, args.retry_after, clock,
                                            answers, stop)) for d in devices]
        ticker = asyncio.create_task(loop_lag(clock, stop))
        try:
            await asyncio.sleep(args.warmup)
            held = [d.id for d in devices if d.held]
            if held:
                await hold(product.db_url, held, args.hold_seconds, clock)
            else:  # no row held: the same phases, for a baseline run
                clock.hold_from = time.perf_counter()
                await asyncio.sleep(args.hold_seconds)
                clock.hold_to = time.perf_counter()
            await asyncio.sleep(args.settle)
            stop.set()
            clock.stopped = time.perf_counter()
            print(f"  {time.perf_counter() - clock.started:5.1f} s: stopping; each device finishes the batch "
                  "in hand", file=sys.stderr)
            cpu1, own1 = product.cpu(), time.process_time()
            wall = clock.stopped - clock.started
            clock.cores = {"the clients (this process)": (own1 - own0) / wall,
                           "the collector": (cpu1["collector"] - cpu0["collector"]) / wall,
                           "its PostgreSQL": (cpu1["postgres"] - cpu0["postgres"]) / wall}
            done, left = await asyncio.wait(tasks, timeout=DRAIN_S)
            for task in done:
                task.result()  # a client's own failure is the bench's bug: say it
            if left:
                print(f"  {len(left)} devices still had a batch unacknowledged after {DRAIN_S:g} s", file=sys.stderr)
        finally:
            for task in (*tasks, ticker):
                task.cancel()
            await asyncio.gather(*tasks, ticker, return_exceptions=True)


async def loop_lag(clock: Clock, stop: asyncio.Event, every_s: float = 0.02) -> None:
    """How late this process's event loop wakes a timer, until `stop`: the share of a latency
    figure that is the clients' own delay (they share the machine's cores with the collector)."""
    while not stop.is_set():
        due = time.perf_counter() + every_s
        await asyncio.sleep(every_s)
        now = time.perf_counter()
        clock.lags.append((due, now - due))


# --- the check --------------------------------------------------------------------------------

@dataclass
class Check:
    acknowledged: int  # records answered 200 (accepted + duplicates)
    accepted: int
    duplicates: int
    rejected: int
    rows: int  # rows of these devices in the database
    missing: int  # acknowledged, not in the database
    twice: int  # keys stored more than once
    unacknowledged_stored: int  # stored, of a batch still in hand at the end
    unexplained: int  # stored, neither acknowledged nor in hand
    pending_batches: int
    refused: list[str]

    @property
    def ok(self) -> bool:
        """Every acknowledged record stored once, nothing else stored, every batch acknowledged.
        (Rows may exceed `accepted`: a flush that commits after its requests were answered 503
        "did not commit in time" stores their records, and their resends count as duplicates.)"""
        return not (self.missing or self.twice or self.unexplained or self.pending_batches or self.refused)


async def check(db_url: str, devices: list[Device]) -> Check:
    table = TABLES[Usage].name
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(f"SELECT device_id, spool, seq, count(*) AS n FROM {table} "
                                "WHERE device_id = ANY($1::uuid[]) GROUP BY 1, 2, 3", [d.id for d in devices])
    finally:
        await conn.close()
    by_id = {d.id: d for d in devices}
    stored: Counter[tuple[uuid.UUID, int]] = Counter()
    foreign = 0
    for r in rows:
        if r["spool"] != by_id[r["device_id"]].spool:
            foreign += r["n"]
            continue
        stored[(r["device_id"], r["seq"])] += r["n"]
    acked = {(d.id, s) for d in devices for s in d.acked}
    pending = {(d.id, s) for d in devices for s in d.pending}
    return Check(
        acknowledged=len(acked), accepted=sum(d.accepted for d in devices),
        duplicates=sum(d.duplicates for d in devices), rejected=sum(d.rejected for d in devices),
        rows=sum(r["n"] for r in rows), missing=len(acked - stored.keys()),
        twice=sum(n - 1 for n in stored.values() if n > 1),
        unacknowledged_stored=len(pending & stored.keys()),
        unexplained=foreign + len(stored.keys() - acked - pending),
        pending_batches=sum(1 for d in devices if d.pending), refused=[w for d in devices for w in d.refused])


# --- the report -------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{1000 * seconds:,.0f}"


def warnings_of(log: Path) -> Counter[str]:
    """The collector's warning lines, with ids, counts and times made alike so they group."""
    out: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if " WARNING " not in line and " ERROR " not in line:
            continue
        text = line.split(": ", 1)[-1]
        text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(, )?", "<id>", text)
        text = re.sub(r"(<id>)+", "<ids>", text)
        out[re.sub(r"\b(?!(?:400|503)\b)\d+(\.\d+)?\b", "N", text)[:200]] += 1
    return out


def print_report(args: argparse.Namespace, devices: list[Device], answers: list[Answer], clock: Clock,
                 result: Check, log: Path, code: str, load: tuple[float, float, float]) -> None:
    n_held = sum(d.held for d in devices)
    groups = {True: f"held ({n_held})", False: f"others ({len(devices) - n_held})"}
    span = {"before": (clock.hold_from or clock.started) - clock.started,
            "hold": (clock.hold_to or 0) - (clock.hold_from or 0),
            "after": clock.stopped - (clock.hold_to or 0)}
    print(f"\n{code}")
    print(f"{len(devices)} devices, {n_held} rows held for {span['hold']:.1f} s after {span['before']:.1f} s; "
          f"{args.records} usage records per request; on 503 a client waits "
          f"{'Retry-After' if args.retry_after is None else f'{args.retry_after:g} s'}; "
          f"collector settings: {', '.join(args.set) or 'defaults'}\n")
    print("Answers, by phase (before: answered before the rows were taken; hold: in flight at some moment while "
          "they were held; after: sent after the release):\n")
    print("| devices | answer | before | hold | after |")
    print("|---|---|---:|---:|---:|")
    for held in (False, True):
        tally: Counter[tuple[str, str]] = Counter((a.what, clock.phase(a)) for a in answers if a.held == held)
        for what in sorted({w for w, _ in tally}, key=lambda w: (w != "200", w)):
            print(f"| {groups[held]} | {what} | " + " | ".join(f"{tally[(what, p)]:,}" for p in PHASES) + " |")
    print("\nThe others' requests, by phase (latency: send to answer, whatever the answer; per second: answered "
          "200 in the phase, over its length):\n")
    print("| | before | hold | after |")
    print("|---|---:|---:|---:|")
    others = {p: [a for a in answers if not a.held and clock.phase(a) == p] for p in PHASES}
    ok = {p: sum(a.what == "200" for a in others[p]) for p in PHASES}
    print("| answered 200 per second | " + " | ".join(
        f"{ok[p] / span[p]:,.0f}" if span[p] > 0 else "–" for p in PHASES) + " |")
    for label, q in (("p50 ms", 0.5), ("p99 ms", 0.99), ("max ms", 1.0)):
        print(f"| {label} | " + " | ".join(ms(quantile([a.seconds for a in others[p]], q)) for p in PHASES) + " |")
    lags = {p: [lag for t, lag in clock.lags if clock.between(t, t) == p] for p in PHASES}
    print("| the clients' own event loop: p99 ms late | " + " | ".join(ms(quantile(lags[p], 0.99)) for p in PHASES) + " |")
    print("| the clients' own event loop: max ms late | " + " | ".join(ms(quantile(lags[p], 1.0)) for p in PHASES) + " |")
    print("\nCPU over the run, in cores (of " + str(os.cpu_count()) + "): "
          + ", ".join(f"{who} {cores:.2f}" for who, cores in clock.cores.items())
          + f"; load average (1 min) {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    longest = {held: max((d.longest_batch_s for d in devices if d.held == held), default=0.0) for held in (False, True)}
    print(f"\nLongest a batch waited for its 200 (first send to 200, resends included): others "
          f"{longest[False]:.1f} s, held {longest[True]:.1f} s")
    refused = [a.seconds for a in answers if a.held and a.what.startswith("503")]
    if refused:
        print(f"Held devices' requests answered 503: {len(refused):,}, in p50 {ms(quantile(refused, 0.5))} ms, "
              f"max {ms(quantile(refused, 1.0))} ms")
    back = [d.first_200_after_release for d in devices if d.held and d.first_200_after_release is not None]
    if back:
        print(f"Held devices' first 200 after the release: {min(back):.1f} to {max(back):.1f} s after it "
              f"({len(back)} of {n_held})")
    warned = warnings_of(log)
    if warned:
        print("\nThe collector's warnings and errors (ids and numbers made alike):\n")
        for text, n in warned.most_common(8):
            print(f"- {n:,}x {text}")
    print("\nStored against acknowledged (counted in the database once the collector had stopped):\n")
    print("| records | count |")
    print("|---|---:|")
    for label, value in (("acknowledged (answered 200)", result.acknowledged),
                         ("  of which stored by that answer (accepted)", result.accepted),
                         ("  of which already stored (duplicates: an earlier send was stored, though "
                          "answered 503)", result.duplicates),
                         ("rejected within a 200 (outside the time window)", result.rejected),
                         ("rows in the database", result.rows),
                         ("acknowledged but not in the database", result.missing),
                         ("stored more than once", result.twice),
                         ("in the database, of a batch never acknowledged", result.unacknowledged_stored),
                         ("in the database, never sent by the bench", result.unexplained),
                         ("batches still unacknowledged at the end", result.pending_batches),
                         ("batches answered neither 200 nor 503", len(result.refused))):
        print(f"| {label} | {value:,} |")
    others_503 = sum(a.what.startswith("503") for a in answers if not a.held)
    if others_503:
        print(f"\nNOTE: {others_503:,} requests of devices whose row was never held were answered 503")
    if result.refused:
        print(f"\nRefused batches: {Counter(result.refused).most_common(5)}")
    print(f"\n{'OK' if result.ok else 'MISMATCH'}: rows stored "
          f"{'equal' if result.ok else 'do not equal'} the records acknowledged"
          + ("" if result.ok else " (see the table above)"))


# --- main -------------------------------------------------------------------------------------

def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the clients where it is installed (a collector dependency on Linux): the
    clients then take less of the cores they share with the collector."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=400, help="enrolled devices, each a client (default 400)")
    ap.add_argument("--held", type=int, default=5, help="devices whose rows are held (default 5; 0: none)")
    ap.add_argument("--hold-seconds", type=float, default=30, help="how long the rows are held (default 30)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds of load before the hold (default 10)")
    ap.add_argument("--settle", type=float, default=10, help="seconds of load after the release (default 10)")
    ap.add_argument("--records", type=int, default=10, help="usage records per request (default 10)")
    ap.add_argument("--retry-after", type=float, default=None, metavar="S",
                    help="seconds a client waits after a 503 before it resends (default: the answer's Retry-After)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a collector setting (repeatable), e.g. --set writer_lock_timeout_s=1")
    args = ap.parse_args(argv)
    args.settings = setting_overrides(ap, args.set)
    if args.devices < 1:
        ap.error(f"--devices {args.devices}: need at least 1")
    if not 0 <= args.held < args.devices:
        ap.error(f"--held {args.held}: need 0 <= --held < --devices ({args.devices}), so that some devices are not held")
    for name in ("hold_seconds", "warmup", "settle"):
        value = getattr(args, name)
        if not 0 <= value <= 3600 or (name == "hold_seconds" and value == 0):
            ap.error(f"--{name.replace('_', '-')} {value:g}: need {'more than 0' if name == 'hold_seconds' else '0'}"
                     " to 3600 seconds")
    if not 1 <= args.records <= MAX_RECORDS_PER_BATCH:
        ap.error(f"--records {args.records}: need 1 to {MAX_RECORDS_PER_BATCH} (the most a batch may carry)")
    if args.retry_after is not None and not 0 <= args.retry_after <= 3600:
        ap.error(f"--retry-after {args.retry_after:g}: need 0 to 3600 seconds")
    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files != resource.RLIM_INFINITY and args.devices + 200 > files:
        ap.error(f"--devices {args.devices}: one connection per device needs more open files than this shell "
                 f"allows ({files}); raise it (ulimit -n {args.devices + 1000}) or use fewer devices")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exit_on_sigterm()
    code = code_under_test()
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tice-bench-"))
    log = tmp / "collector.log"
    product = Product(tmp, args.devices, args.settings, log=log)
    try:
        print(f"{code}\nstarting the collector and enrolling {args.devices} devices in {tmp}", file=sys.stderr)
        product.start()
        # Held devices spread over the enrolment order (and so over the ids).
        step = args.devices / args.held if args.held else 0
        chosen = {int(i * step) for i in range(args.held)}
        devices = [Device(uuid.UUID(d["device_id"]), d["token"], i in chosen) for i, d in enumerate(product.devices)]
        clock, answers = Clock(), list[Answer]()
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(drive(product, devices, args, clock, answers))
        product.stop_collector()  # everything queued is written before it exits
        result = asyncio.run(check(product.db_url, devices))
        print_report(args, devices, answers, clock, result, log, code, load)
    finally:
        product.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if not result.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    run(main)
