"""The writer's flush statement alone: PostgreSQL's CPU per request, by variant and flush size.

    python bench/flush_statement.py [--sizes 1,9,30] [--requests 9000] [--rounds 2] [--devices 200]

Starts the product as bench/ingest.py does (`tice-collector serve` on a fresh embedded
PostgreSQL, fsync and synchronous_commit on, `--devices` laptops enrolled), stops the
collector, and then drives the real writer code (`Writer._write`, one statement per flush) from
one connection: flushes of `size` requests, each request 10 usage records of its own device
and spool, `--requests` requests per variant and size. No HTTP, no collector: what is measured
is PostgreSQL's CPU (every process of it) per request, and the wall time per flush.

Variants, each the same flushes:
- baseline: `ON CONFLICT DO NOTHING`, the plan left to PostgreSQL (`plan_cache_mode = auto`),
  as the writer ran before;
- the same with the statement planned once (`force_generic_plan`);
- a plain INSERT (the writer's first try: a record already stored fails it), plan left to
  PostgreSQL;
- a plain INSERT planned once: what the writer does now.
The record tables are emptied before each variant, so each starts from the same state.
Rounds interleave the variants; the median and range over rounds are printed, with each
variant's ratio to the baseline of the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import exit_on_sigterm, run  # noqa: E402
from bench._shapes import example  # noqa: E402
from bench._targets import Product, device_ids, postgres_cpu  # noqa: E402
from tice_collector.db.records import TABLES  # noqa: E402
from tice_collector.metrics import Metrics  # noqa: E402
from tice_collector.writer import Job, Writer  # noqa: E402

VARIANTS = {  # name: (on_conflict, plan_cache_mode)
    "baseline: ON CONFLICT, plan left to PostgreSQL": (True, "auto"),
    "ON CONFLICT, planned once": (True, "force_generic_plan"),
    "plain INSERT, plan left to PostgreSQL": (False, "auto"),
    "plain INSERT, planned once (the writer now)": (False, "force_generic_plan"),
}
RECORDS = 10  # per request, as bench/ingest.py's usage10


def flushes(devices: list[uuid.UUID], size: int, requests: int) -> list[list[Job]]:
    """`requests` requests in flushes of `size`, each request of a device not yet in its flush,
    with a fresh spool per device: every record new."""
    encode = msgspec.json.Encoder().encode
    usage = TABLES[type(example("usage"))]
    now = datetime.now(UTC)
    spools = {d: uuid.uuid4() for d in devices}
    seq = dict.fromkeys(devices, 0)
    out: list[list[Job]] = []
    turn = 0
    for _ in range(requests // size):
        jobs = []
        for _ in range(size):
            d = devices[turn % len(devices)]
            turn += 1
            recs = []
            for _ in range(RECORDS):
                seq[d] += 1
                recs.append(example("usage", seq=seq[d], at=now - timedelta(hours=10) + timedelta(seconds=seq[d])))
            jobs.append(Job(device_id=d, spool=spools[d], dropped=0, received_at=now, agent_version="bench",
                            records={usage: encode(recs).decode()}, size=RECORDS, seqs=[r.seq for r in recs]))
        out.append(jobs)
    return out


async def measure(product: Product, writer: Writer, devices: list[uuid.UUID], size: int, requests: int,
                  on_conflict: bool, plan: str) -> tuple[float, float, float]:
    """(PostgreSQL CPU µs per request, wall ms per flush, this process's CPU µs per request:
    the writer's Python and asyncpg's encoding) for one variant."""
    conn = await asyncpg.connect(product.db_url)
    try:
        for table in TABLES.values():
            await conn.execute(f"TRUNCATE {table.name}")
        await conn.execute("CHECKPOINT")
        await conn.execute(f"SET plan_cache_mode = {plan}")
        work = flushes(devices, size, requests)
        tables = tuple(work[0][0].records)
        cpu0, t0, own0 = postgres_cpu(product.pgdata), time.perf_counter(), time.process_time()
        for jobs in work:
            await writer._write(conn, jobs, tables, on_conflict=on_conflict)
        own = time.process_time() - own0
        wall, cpu = time.perf_counter() - t0, postgres_cpu(product.pgdata) - cpu0
        done = sum(len(jobs) for jobs in work)
        stored = await conn.fetchval(f"SELECT count(*) FROM {tables[0].name}")
        if stored != done * RECORDS:
            raise SystemExit(f"{stored} rows stored, {done * RECORDS} sent")
        return cpu / done * 1e6, wall / len(work) * 1e3, own / done * 1e6
    finally:
        await conn.close()


def spread(values: list[float], fmt: str) -> str:
    """The median and, over more than one round, the range."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,9,30", help="requests per flush, comma-separated (default 1,9,30)")
    ap.add_argument("--requests", type=int, default=9000, help="requests per variant and size (default 9000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every variant and size (default 2)")
    ap.add_argument("--devices", type=int, default=200,
                    help="devices enrolled; a flush has at most one request per device (default 200)")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: expected comma-separated numbers of requests, got {args.sizes!r}")
    if args.devices < 1:
        ap.error(f"--devices must be at least 1, got {args.devices}")
    if any(not 1 <= s <= args.devices for s in sizes):
        ap.error(f"--sizes: each must be 1 to --devices ({args.devices}), got {args.sizes}")
    if args.requests < max(sizes):
        ap.error(f"--requests ({args.requests}) must be at least the largest of --sizes ({max(sizes)})")
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    exit_on_sigterm()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tice-flush-"))
    product = Product(tmp, args.devices)
    # (size, variant) -> per round (µs/request, ms/flush, client µs/request)
    results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    try:
        print(f"starting the product in {tmp}", file=sys.stderr)
        product.start()
        devices = device_ids(product.devices)
        product.stop_collector()
        writer = Writer(product.db_url, Metrics(), tasks=1, queue_max=1, batch_records=1, linger_s=0,
                        commit_timeout_s=60, db_timeout_s=60, retry_after_s=1)
        for r in range(args.rounds):
            for size in sizes:
                for name, (on_conflict, plan) in VARIANTS.items():
                    got = asyncio.run(measure(product, writer, devices, size, args.requests, on_conflict, plan))
                    results.setdefault((size, name), []).append(got)
                    print(f"  round {r + 1} {size:3d} requests/flush  {name:45s} {got[0]:7,.0f} µs/request "
                          f"{got[1]:6.2f} ms/flush {got[2]:5,.0f} client µs/request", file=sys.stderr, flush=True)
        print(f"## bench/flush_statement.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
        print(f"- machine: {os.cpu_count()} CPUs; load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
              f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"- {product.settings()}")
        rounds = "1 round" if args.rounds == 1 else f"{args.rounds} rounds, median (min-max)"
        print(f"- {args.requests:,} requests of {RECORDS} usage records per variant and size, one connection; "
              f"{rounds}\n")
        print("| requests per flush | variant | PostgreSQL CPU µs/request | ÷ baseline | wall ms/flush | "
              "client CPU µs/request (writer, asyncpg) |")
        print("|---:|---|---:|---:|---:|---:|")
        base_name = next(iter(VARIANTS))
        for size in sizes:
            base = results[(size, base_name)]
            for name in VARIANTS:
                runs = results[(size, name)]
                ratio = [v[0] / b[0] for v, b in zip(runs, base, strict=True)]
                print(f"| {size} | {name} | {spread([v[0] for v in runs], ',.0f')} | {spread(ratio, '.2f')} | "
                      f"{spread([v[1] for v in runs], '.2f')} | {spread([v[2] for v in runs], ',.0f')} |")
    finally:
        product.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
