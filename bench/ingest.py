"""Ingest benchmark: the product beside InfluxDB and beside the raw COPY limit, in one run.

    python bench/ingest.py [--rounds 3] [--seconds 10] [--warmup 2] [--concurrency 32]
                           [--shapes usage10,mixed4,backlog500] [--rate 1000] [--devices 200]
                           [--copy-rows 100000] [--no-influx]

Starts, on loopback with files in a temporary directory (removed at the end):
- the product: `tice-collector serve` on a fresh embedded PostgreSQL (fsync and
  synchronous_commit on; each request is answered after its records are committed), with
  `--devices` laptops enrolled over HTTP;
- the peer: Debian's InfluxDB 1.6 (`apt-get install -y influxdb`), `influxd run -config FILE`
  with its WAL fsynced on every write (`wal-fsync-delay = "0s"`), database `bench`.

Both are driven by the same load generator (wrk, `apt-get install -y wrk`, 2 threads) with the
same connection count and the same records: JSON reports to POST /api/v1/reports, and the same
records as line protocol to POST /write?db=bench, one point per record with the same fields
(bench/_shapes.py renders both from wire/tice_wire/__init__.py). Each round runs, for every shape, the
product then InfluxDB (interleaved, so machine noise hits both), then COPYs rows straight into
the product's tables on one connection (the raw limit of its storage path: no HTTP, no
validation, no conflict handling; 10,000 rows per transaction), then vacuums, analyzes and
checkpoints the product's database (so the maintenance those rows call for falls between runs,
not into one), then runs both again at a fixed rate (`--rate` requests/s, paced by wrk's Lua; 0
skips it). Before each run the other server is let go quiet (under 5 % of a core; InfluxDB
compacts for seconds after a heavy run), at most 60 s.

CPU is counted for every process of a server: the collector and all of its PostgreSQL
(postmaster, backends, background workers), or influxd. The load generator and the rest of
the machine are shown beside it: all of them share the same cores.

Ratios are taken within each round (both sides measured minutes apart), then the median
and range over rounds are printed. Absolute figures move with the machine; ratios hold better.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _shapes, _wrk  # noqa: E402
from bench._common import exit_on_sigterm, finite_float, run, setting_overrides, uninterrupted  # noqa: E402
from bench._targets import Influx, Product, device_ids  # noqa: E402
from tice_collector.db.records import TABLES, Table  # noqa: E402

COPY_BATCH = 10_000


def machine_busy() -> float:
    """CPU seconds all processes of the machine have used so far (every core)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0)


@dataclass
class Run:
    """One measured wrk run against one server."""

    server: str
    shape: _shapes.Shape
    round: int
    wrk: _wrk.WrkResult
    wall_s: float  # around the wrk process (what the CPU figures cover)
    cpu: dict[str, float]  # CPU seconds of each process group of the server
    peer_cpu_s: float  # CPU seconds of the other server, idle meanwhile (its background work)
    machine_s: float  # CPU seconds of the whole machine
    rate: float | None = None
    stored: float | None = None  # the product's own count of records stored

    @property
    def req_s(self) -> float:
        return self.wrk.ok / self.wrk.duration_s

    @property
    def records_s(self) -> float:
        return self.wrk.ok * self.shape.records / self.wrk.duration_s

    @property
    def server_cpu_s(self) -> float:
        return sum(self.cpu.values())

    def cpu_us_per_req(self, part: str | None = None) -> float:
        cpu = self.server_cpu_s if part is None else self.cpu[part]
        return 1e6 * cpu / max(1, self.wrk.ok)

    def cores(self, seconds: float) -> float:
        return seconds / self.wall_s

    @property
    def others_s(self) -> float:
        """CPU of everything else on the machine: other users' processes, not the bench's."""
        return max(0.0, self.machine_s - self.server_cpu_s - self.peer_cpu_s - self.wrk.cpu_s)


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    product: Product
    influx: Influx | None
    runs: list[Run] = field(default_factory=list)
    raw: dict[tuple[int, str], float] = field(default_factory=dict)  # (round, mix) -> rows/s
    acked: dict[str, int] = field(default_factory=dict)  # server -> records acknowledged, warm-ups included

    @property
    def servers(self) -> list[Product | Influx]:
        return [self.product] + ([self.influx] if self.influx else [])

    def devices_file(self) -> Path:
        path = self.tmp / "devices.txt"
        if not path.exists():
            path.write_text("".join(f"{d['device_id']} {d['token']}\n" for d in self.product.devices))
        return path

    def templates_file(self, shape: _shapes.Shape) -> Path:
        path = self.tmp / f"templates-{shape.name}.txt"
        if not path.exists():
            _shapes.write_templates(path, shape)
        return path

    def wrk(self, server: Product | Influx, shape: _shapes.Shape, seconds: float, connections: int,
            rate: float | None) -> _wrk.Wrk:
        cmd = _wrk.command(server.url, target=server.name, devices_file=self.devices_file(),
                           templates_file=self.templates_file(shape), records=shape.records,
                           spool=str(uuid.uuid4()), base_epoch=int(time.time()) - 3700, path=server.path,
                           connections=connections, seconds=seconds)
        return _wrk.Wrk(cmd, rate)

    def measure(self, server: Product | Influx, shape: _shapes.Shape, rnd: int, *, connections: int,
                rate: float | None = None) -> Run:
        """A warm-up run (not measured), then the measured run, each with fresh spools; first
        the other server is let go quiet."""
        a = self.args
        waited = self.quiet_peers(server)
        if waited > 1:
            print(f"  waited {waited:.1f} s for the idle server's background work to end", file=sys.stderr)
        if a.warmup > 0:
            w = self.wrk(server, shape, a.warmup, connections, rate)
            w.start()
            warm = w.finish(a.warmup + 60)
            self.acked[server.name] = self.acked.get(server.name, 0) + warm.ok * shape.records
        peers = [s for s in self.servers if s is not server]
        stored0 = self.product.stored() if server is self.product else None
        cpu0, peer0, machine0 = server.cpu(), sum(sum(p.cpu().values()) for p in peers), machine_busy()
        w = self.wrk(server, shape, a.seconds, connections, rate)
        started = time.perf_counter()
        w.start()
        result = w.finish(a.seconds + 60)
        wall = time.perf_counter() - started
        cpu1, peer1, machine1 = server.cpu(), sum(sum(p.cpu().values()) for p in peers), machine_busy()
        self.acked[server.name] = self.acked.get(server.name, 0) + result.ok * shape.records
        run = Run(server=server.name, shape=shape, round=rnd, wrk=result, wall_s=wall,
                  cpu={k: cpu1[k] - cpu0[k] for k in cpu0}, peer_cpu_s=peer1 - peer0, machine_s=machine1 - machine0,
                  rate=rate)
        if stored0 is not None:
            run.stored = self.product.stored() - stored0
            if run.stored < result.ok * shape.records:
                print(f"  WARNING: {result.ok * shape.records} records acknowledged but {run.stored:.0f} stored",
                      file=sys.stderr)
        errors = result.status_errors + result.socket_errors
        if errors:
            print(f"  WARNING: {result.status_errors} error answers, {result.socket_errors} socket errors",
                  file=sys.stderr)
        self.runs.append(run)
        print(f"  round {rnd} {shape.name:<10} {server.name:<6} {'rate ' + format(rate, 'g') if rate else 'closed':<10}"
              f" {run.req_s:9,.0f} req/s {run.records_s:10,.0f} rec/s  p50 {result.p50_ms:7.1f} ms"
              f"  p99 {result.p99_ms:7.1f} ms  CPU {run.cpu_us_per_req():6,.0f} µs/req", file=sys.stderr)
        return run


    def quiet_peers(self, server: Product | Influx, bound_s: float = 60.0) -> float:
        """Wait, up to `bound_s`, until the servers not under test use under 5 % of a core over
        half a second, so that one's background work after its own run (InfluxDB compacting its
        shards, PostgreSQL writing what it buffered) does not land in the other's measured run;
        return the seconds waited."""
        peers = [s for s in self.servers if s is not server]
        started = time.perf_counter()
        while peers and time.perf_counter() - started < bound_s:
            before = sum(sum(p.cpu().values()) for p in peers)
            time.sleep(0.5)
            if sum(sum(p.cpu().values()) for p in peers) - before < 0.05 * 0.5:
                break
        return time.perf_counter() - started


async def raw_copy(db_url: str, shape: _shapes.Shape, devices: list[uuid.UUID], total: int) -> float:
    """COPY `total` rows of the shape's mix straight into the product's tables, 10,000 rows per
    transaction on one connection; return rows/s."""
    rows = _shapes.copy_rows(shape, devices, total, datetime.now(UTC))
    conn = await asyncpg.connect(db_url)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), COPY_BATCH):
            chunk: dict[Table, list[tuple[object, ...]]] = {}
            for table, row in rows[i:i + COPY_BATCH]:
                chunk.setdefault(table, []).append(row)
            async with conn.transaction():
                for table, table_rows in chunk.items():
                    await conn.copy_records_to_table(table.name, records=table_rows, columns=table.columns)
        return total / (time.perf_counter() - started)
    finally:
        await conn.close()


async def settle(db_url: str) -> float:
    """VACUUM (ANALYZE) the product's record tables, then CHECKPOINT; return the seconds it took.

    Run after the raw COPY: its rows (and the runs' before it) call for autovacuum and fill the
    buffers a checkpoint must write, which would otherwise land in the next measured run at a
    random moment (seen as a round whose PostgreSQL CPU per request jumped by half). The same
    maintenance happens in production, spread over time; here it falls between runs.
    """
    conn = await asyncpg.connect(db_url)
    try:
        started = time.perf_counter()
        for table in TABLES.values():
            await conn.execute(f"VACUUM (ANALYZE) {table.name}")
        await conn.execute("CHECKPOINT")
        return time.perf_counter() - started
    finally:
        await conn.close()


# --- reporting --------------------------------------------------------------------------------

def spread(values: list[float], fmt: str = ",.0f") -> str:
    """median (min-max) over rounds."""
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "–"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_report(bench: Bench, load_before: tuple[float, float, float], load_after: tuple[float, float, float],
                 settings: list[str]) -> None:
    a = bench.args
    closed = [r for r in bench.runs if r.rate is None]
    paced = [r for r in bench.runs if r.rate is not None]
    shapes = [_shapes.SHAPES[s] for s in a.shapes]
    servers = [s.name for s in bench.servers]
    print(f"## bench/ingest.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"- machine: {os.cpu_count()} CPUs; load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)} (1, 5, 15 min)")
    for s in settings:
        print(f"- {s}")
    print(f"- load: wrk, {_wrk.THREADS} threads, {a.concurrency} connections, {a.seconds:g} s per run after a "
          f"{a.warmup:g} s warm-up; {a.rounds} rounds, product and InfluxDB interleaved; {a.devices} devices")
    print("- median (min–max) over rounds; CPU in cores = CPU seconds per wall second; 'others' = the rest of "
          "the machine (other users), 'idle peer' = the server not under load\n")

    print("### Saturation (closed loop)\n")
    print("| shape | server | requests/s | records/s | p50 ms | p99 ms | server CPU µs/request "
          "| server cores | of which PostgreSQL | wrk cores | idle peer cores | others cores |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        for server in servers:
            rs = [r for r in closed if r.shape is shape and r.server == server]
            if not rs:
                continue
            pg = spread([r.cores(r.cpu["postgres"]) for r in rs], ".2f") if server == "tice" else "–"
            print(f"| {shape.name} | {server} | {spread([r.req_s for r in rs])} | {spread([r.records_s for r in rs])} "
                  f"| {spread([r.wrk.p50_ms for r in rs], '.1f')} | {spread([r.wrk.p99_ms for r in rs], '.1f')} "
                  f"| {spread([r.cpu_us_per_req() for r in rs])} | {spread([r.cores(r.server_cpu_s) for r in rs], '.2f')} "
                  f"| {pg} | {spread([r.cores(r.wrk.cpu_s) for r in rs], '.2f')} "
                  f"| {spread([r.cores(r.peer_cpu_s) for r in rs], '.2f')} | {spread([r.cores(r.others_s) for r in rs], '.2f')} |")

    print("\n### Ratios (within each round)\n")
    print("| shape | requests/s product ÷ InfluxDB | CPU per request product ÷ InfluxDB "
          "| p99 product ÷ InfluxDB | raw COPY rows/s | records/s product ÷ raw COPY | records/s InfluxDB ÷ raw COPY |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        req, eff, p99, raw_s, vs_raw, influx_raw = [], [], [], [], [], []
        for rnd in range(1, a.rounds + 1):
            t = next((r for r in closed if r.shape is shape and r.server == "tice" and r.round == rnd), None)
            i = next((r for r in closed if r.shape is shape and r.server == "influx" and r.round == rnd), None)
            raw = bench.raw.get((rnd, shape.mix), float("nan"))
            raw_s.append(raw)
            if t:
                vs_raw.append(ratio(t.records_s, raw))
            if t and i:
                req.append(ratio(t.req_s, i.req_s))
                eff.append(ratio(t.cpu_us_per_req(), i.cpu_us_per_req()))
                p99.append(ratio(t.wrk.p99_ms, i.wrk.p99_ms))
            if i:
                influx_raw.append(ratio(i.records_s, raw))
        print(f"| {shape.name} | {spread(req, '.3f')} | {spread(eff, '.3f')} | {spread(p99, '.2f')} | {spread(raw_s)} "
              f"| {spread(vs_raw, '.3f')} | {spread(influx_raw, '.3f')} |")
    mixes = sorted({s.mix for s in shapes})
    print(f"\nraw COPY: rows of the shape's mix ({', '.join(mixes)}) COPYed into the product's tables, "
          f"{a.copy_rows:,} rows per round, {COPY_BATCH:,} per transaction, one connection.")

    if paced:
        print(f"\n### Fixed rate: {a.rate:g} requests/s of {a.rate_shape} for {a.seconds:g} s, "
              f"{a.rate_connections} connections\n")
        print("| server | achieved requests/s | sent late (>1 ms) | latest send ms | p50 ms | p99 ms | p99.9 ms "
              "| max ms | server CPU µs/request | of which collector | of which PostgreSQL | server cores |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for server in servers:
            rs = [r for r in paced if r.server == server]
            if not rs:
                continue
            coll = spread([r.cpu_us_per_req("collector") for r in rs]) if server == "tice" else "–"
            pg = spread([r.cpu_us_per_req("postgres") for r in rs]) if server == "tice" else "–"
            print(f"| {server} | {spread([r.req_s for r in rs])} | {spread([float(r.wrk.late) for r in rs])} "
                  f"| {spread([r.wrk.late_max_ms for r in rs], '.1f')} "
                  f"| {spread([r.wrk.p50_ms for r in rs], '.1f')} | {spread([r.wrk.p99_ms for r in rs], '.1f')} "
                  f"| {spread([r.wrk.p999_ms for r in rs], '.1f')} | {spread([r.wrk.max_ms for r in rs], '.1f')} "
                  f"| {spread([r.cpu_us_per_req() for r in rs])} | {coll} | {pg} "
                  f"| {spread([r.cores(r.server_cpu_s) for r in rs], '.2f')} |")
        print("\nA request sent late went out after its slot because every connection was busy: its latency "
              "is measured from when it was sent, so many late sends mean the p99 understates.")

    print("\n### Every run\n")
    print("| round | shape | server | rate | requests/s | records/s | p50 ms | p99 ms | CPU µs/request "
          "| server cores | wrk cores | others cores | errors |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in bench.runs:
        print(f"| {r.round} | {r.shape.name} | {r.server} | {format(r.rate, 'g') if r.rate else 'closed'} "
              f"| {r.req_s:,.0f} | {r.records_s:,.0f} | {r.wrk.p50_ms:.1f} | {r.wrk.p99_ms:.1f} "
              f"| {r.cpu_us_per_req():,.0f} | {r.cores(r.server_cpu_s):.2f} | {r.cores(r.wrk.cpu_s):.2f} "
              f"| {r.cores(r.others_s):.2f} | {r.wrk.status_errors + r.wrk.socket_errors} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=finite_float, default=10, help="measured seconds per run")
    ap.add_argument("--warmup", type=finite_float, default=2, help="unmeasured seconds before each run")
    ap.add_argument("--concurrency", type=int, default=32, help="connections, the same for both servers")
    ap.add_argument("--shapes", default=",".join(_shapes.SHAPES),
                    help=f"comma-separated, from: {', '.join(f'{s.name} ({s.what})' for s in _shapes.SHAPES.values())}")
    ap.add_argument("--rate", type=finite_float, default=1000, help="fixed-rate requests/s (0: skip the fixed-rate runs)")
    ap.add_argument("--rate-shape", default="usage10", choices=list(_shapes.SHAPES))
    ap.add_argument("--rate-connections", type=int, default=64,
                    help="connections for the fixed rate: enough that one slow answer does not delay the schedule")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--copy-rows", type=int, default=100_000, help="rows COPYed per mix and round for the raw limit")
    ap.add_argument("--no-influx", action="store_true", help="measure the product alone")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a collector setting for the product (repeatable), e.g. --set workers=2")
    args = ap.parse_args(argv)
    args.settings = setting_overrides(ap, args.set)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in args.shapes if s not in _shapes.SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(_shapes.SHAPES)}")
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or args.rate < 0:
        ap.error("need --rounds >= 1, --seconds > 0, --warmup >= 0, --concurrency >= 1, --rate >= 0")
    if args.devices < max(args.concurrency, args.rate_connections if args.rate else 0, _wrk.THREADS):
        # An agent sends one batch at a time; more connections than devices would put two
        # requests of one device in flight at once, which no real fleet does.
        ap.error("need --devices >= --concurrency and >= --rate-connections (one request in flight per device)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exit_on_sigterm()
    if shutil.which("wrk") is None:
        sys.exit("bench/ingest.py: wrk not found; apt-get install -y wrk")
    if not args.no_influx and shutil.which("influxd") is None:
        sys.exit("bench/ingest.py: influxd not found; apt-get install -y influxdb (or --no-influx)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tice-bench-"))
    product = Product(tmp, args.devices, args.settings)
    influx = None if args.no_influx else Influx(tmp)
    bench = Bench(args, tmp, product, influx)
    try:
        print(f"starting the product and {'InfluxDB' if influx else 'no peer'} in {tmp}", file=sys.stderr)
        product.start()
        if influx:
            influx.start()
        settings = [f"product: tice-collector{' ' + ' '.join(args.set) if args.set else ''}, PostgreSQL {product.settings()}"]
        if influx:
            settings.append(f"peer: {influx.settings()}")
        ids = device_ids(product.devices)
        for rnd in range(1, args.rounds + 1):
            for name in args.shapes:
                for server in bench.servers:
                    bench.measure(server, _shapes.SHAPES[name], rnd, connections=args.concurrency)
            for name in args.shapes:
                shape = _shapes.SHAPES[name]
                if (rnd, shape.mix) not in bench.raw:
                    bench.raw[(rnd, shape.mix)] = asyncio.run(raw_copy(product.db_url, shape, ids, args.copy_rows))
                    print(f"  round {rnd} raw COPY {shape.mix}: {bench.raw[(rnd, shape.mix)]:,.0f} rows/s",
                          file=sys.stderr)
            took = asyncio.run(settle(product.db_url))
            print(f"  round {rnd} vacuum, analyze and checkpoint of the product's database: {took:.1f} s",
                  file=sys.stderr)
            if args.rate > 0:
                for server in bench.servers:
                    bench.measure(server, _shapes.SHAPES[args.rate_shape], rnd, connections=args.rate_connections,
                                  rate=args.rate)
        load_after = os.getloadavg()
        if influx:
            # The peer answers 204 only for points it took; check it kept them all.
            stored = influx.points()
            print(f"InfluxDB holds {stored:,} points; it acknowledged {bench.acked['influx']:,}", file=sys.stderr)
            if stored < bench.acked["influx"]:
                print("  WARNING: InfluxDB holds fewer points than it acknowledged", file=sys.stderr)
        print_report(bench, load_before, load_after, settings)
    finally:
        with uninterrupted():
            for server in reversed(bench.servers):
                server.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
