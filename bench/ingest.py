"""Ingest benchmark: the real collector over loopback, side by side with the raw COPY limit.

    python bench/ingest.py [--devices 200] [--records 10] [--concurrency 32] [--seconds 15] [--rounds 2]
                           [--load wrk|python]

Starts `tice-collector serve` on a fresh embedded PostgreSQL (durable settings: fsync on),
enrols N devices over HTTP, then drives report requests of `--records` usage readings each,
with bounded concurrency, for `--seconds`. In the same round it COPYs the same number of
records straight into the same table on one connection (the raw limit of the storage path,
no HTTP, no validation, no conflict handling). Prints both and their ratio.

The load comes from wrk (Debian package `wrk`, used when installed; its Lua script builds a
fresh batch per request) or from this Python process (`--load python`, aiohttp, pre-encoded
bodies; it costs more CPU than the collector does per request, so it understates the rate).
Load, collector and PostgreSQL share the machine's cores: read the CPU columns as well.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import clean_env, free_port, wait_http  # noqa: E402
from collector import embedded  # noqa: E402
from collector.auth import digest, new_secret  # noqa: E402
from collector.db.queries import q  # noqa: E402
from collector.wire import AnyRecord, Batch, Usage  # noqa: E402


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def postgres_cpu(data_dir: Path) -> float:
    """CPU seconds of the PostgreSQL serving this data directory: the postmaster, its live
    backends, and (through the postmaster's children times) the backends that already exited,
    so the figure never goes down when a connection closes."""
    pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    t = postmaster.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children():
        try:
            total += cpu_seconds(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # exited between listing and reading: counted in children times once reaped
    return total


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def make_bodies(devices: list[dict], records: int, per_device: int, gz: bool) -> list[tuple[dict, bytes]]:
    """Every request body, encoded before the clock starts."""
    now = datetime.now(UTC)
    out = []
    for round_index in range(per_device):
        for dev in devices:
            seq0 = round_index * records
            # Encoded as the agent does (the wire types through msgspec), byte for byte.
            recs: list[AnyRecord] = [Usage(seq=seq0 + i, at=now - timedelta(seconds=3600 - seq0 - i), duration_s=60.0,
                                           active_s=30.0, idle_s=30.0, source="x11") for i in range(records)]
            body = msgspec.json.encode(Batch(device_id=uuid.UUID(dev["device_id"]), spool=uuid.UUID(dev["spool"]),
                                             sent_at=now, records=recs, agent_version="bench"))
            out.append((dev, gzip.compress(body, 1) if gz else body))
    return out


async def drive(url: str, bodies: list[tuple[dict, bytes]], concurrency: int, seconds: float,
                gz: bool) -> tuple[int, int, list[float], float]:
    """Send bodies until time is up; return (ok requests, records stored, latencies, wall)."""
    latencies: list[float] = []
    ok = stored = 0
    errors: dict[int, int] = {}
    it = iter(bodies)
    deadline = time.perf_counter() + seconds
    headers_base = {"Content-Type": "application/json", **({"Content-Encoding": "gzip"} if gz else {})}
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            nonlocal ok, stored
            while time.perf_counter() < deadline:
                try:
                    dev, body = next(it)
                except StopIteration:
                    return
                started = time.perf_counter()
                async with http.post(url, data=body, headers={**headers_base,
                                                              "Authorization": f"Bearer {dev['token']}"}) as r:
                    payload = await r.read()
                    if r.status == 200:
                        ok += 1
                        stored += msgspec.json.decode(payload)["accepted"]
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[r.status] = errors.get(r.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if errors:
        print(f"  non-200 answers: {errors}", file=sys.stderr)
    return ok, stored, latencies, wall


WRK_SCRIPT = ROOT / "bench" / "wrk_reports.lua"


def wire_time(t: datetime) -> str:
    """A timestamp as msgspec writes it (so wrk's bodies are byte for byte the agent's)."""
    return msgspec.json.encode(t).decode().strip('"')


def wrk_ms(text: str, label: str) -> float:
    m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not m:
        return float("nan")
    return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]


async def drive_wrk(url: str, devices: list[dict], records: int, concurrency: int, seconds: float,
                    db_url: str, tmp: Path) -> tuple[int, int, float, float, float]:
    """wrk for `seconds`; return (ok requests, records stored, p50 ms, p99 ms, wall)."""
    devices_file = tmp / "devices.txt"
    devices_file.write_text("".join(f"{d['device_id']} {d['token']}\n" for d in devices))
    conn = await asyncpg.connect(db_url)
    before = await conn.fetchval("SELECT count(*) FROM usage_records")
    threads = 2
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(WRK_SCRIPT), url,
           "--", str(devices_file), str(records), str(uuid.uuid4()), wire_time(datetime.now(UTC)), str(threads)]
    started = time.perf_counter()
    out = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    stored = await conn.fetchval("SELECT count(*) FROM usage_records") - before
    await conn.close()
    total = int(re.search(r"(\d+) requests in", out.stdout)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    if bad:
        print(f"  non-2xx answers: {bad[1]}", file=sys.stderr)
    ok = total - (int(bad[1]) if bad else 0)
    return ok, stored, wrk_ms(out.stdout, "50%"), wrk_ms(out.stdout, "99%"), wall


async def raw_copy(url: str, device_ids: list[uuid.UUID], total: int, records: int) -> float:
    """COPY `total` usage rows straight into usage_records; return rows/s."""
    now = datetime.now(UTC)
    spool = uuid.uuid4()
    rows = []
    for i in range(total):
        at = now - timedelta(seconds=3600 - (i % 3000))
        rows.append((60.0, 30.0, 30.0, 0.0, 0.0, "x11", i, at, device_ids[i % len(device_ids)], spool, at, now))
    columns = ("duration_s", "active_s", "idle_s", "locked_s", "no_session_s", "source", "seq", "at",
               "device_id", "spool", "at_corrected", "received_at")
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for i in range(0, total, 10_000):
            async with conn.transaction():
                await conn.copy_records_to_table("usage_records", records=rows[i:i + 10_000], columns=columns)
        return total / (time.perf_counter() - started)
    finally:
        await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--records", type=int, default=10, help="readings per report")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gzip", action="store_true", help="send gzip bodies, as agents do (python load only)")
    ap.add_argument("--load", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python",
                    help="load generator (default wrk when installed: apt-get install wrk)")
    args = ap.parse_args()
    if args.load == "wrk" and not shutil.which("wrk"):
        sys.exit("bench/ingest.py: wrk not found; apt-get install wrk, or use --load python")

    tmp = Path(tempfile.mkdtemp(prefix="tice-bench-"))
    print(f"starting embedded PostgreSQL in {tmp}", file=sys.stderr)
    url, server = await asyncio.to_thread(embedded.start, tmp)
    port = free_port()
    # One client enrols every bench device and then floods: lift the per-device and enrolment limits.
    env = clean_env(TICE_DATABASE_URL=url, TICE_RATE_LIMIT_PER_MINUTE="1000000",
                    TICE_RATE_LIMIT_BURST="1000000", TICE_ENROLL_PER_ADDRESS_BURST="1000000",
                    TICE_ENROLL_PER_SECRET_BURST="1000000", TICE_ENROLL_SECRET_MAX_DEVICES="1000000",
                    TICE_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                            env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_http, base + "/readyz")
        async with aiohttp.ClientSession() as http:
            conn = await asyncpg.connect(url)
            secret = new_secret()
            await conn.execute(q("school_insert"), "0210001A", "bench", "A", "elementary", "four_day")
            await conn.fetchval(q("secret_insert"), "0210001A", digest(secret), "bench")
            await conn.close()
            devices = []
            for i in range(args.devices):
                async with http.post(base + "/api/v1/enroll",
                                     json={"secret": secret, "serial": f"BENCH-{i}", "kind": "laptop"}) as r:
                    dev = await r.json()
                    dev["spool"] = str(uuid.uuid4())
                    devices.append(dev)
        print(f"{args.devices} devices enrolled; {args.records} readings per report, concurrency "
              f"{args.concurrency}, {args.seconds:g} s per round, load from {args.load}",
              file=sys.stderr)
        collector = psutil.Process(proc.pid)
        per_device = int(20_000 * args.seconds / max(1, args.devices)) + 1
        results = []
        for rnd in range(1, args.rounds + 1):
            # Fresh spools each round so every record is new.
            for dev in devices:
                dev["spool"] = str(uuid.uuid4())
            if args.load == "wrk":
                await drive_wrk(base + "/api/v1/reports", devices, args.records, args.concurrency, 2, url, tmp)
                cpu0, pg0 = cpu_seconds(collector), postgres_cpu(tmp)
                ok, stored, p50, p99, wall = await drive_wrk(base + "/api/v1/reports", devices, args.records,
                                                             args.concurrency, args.seconds, url, tmp)
            else:
                bodies = make_bodies(devices, args.records, per_device, args.gzip)
                await drive(base + "/api/v1/reports", bodies[: args.concurrency * 20], args.concurrency, 2, args.gzip)
                bodies = bodies[args.concurrency * 20:]
                cpu0, pg0 = cpu_seconds(collector), postgres_cpu(tmp)
                ok, stored, lat, wall = await drive(base + "/api/v1/reports", bodies, args.concurrency,
                                                    args.seconds, args.gzip)
                p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
            cpu = cpu_seconds(collector) - cpu0
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
                scrape = await r.text()
            flush_n = float(re.search(r"^tice_writer_flush_duration_seconds_count (\S+)", scrape, re.M)[1])  # type: ignore[index]
            flush_s = float(re.search(r"^tice_writer_flush_duration_seconds_sum (\S+)", scrape, re.M)[1])  # type: ignore[index]
            flush_r = float(re.search(r"^tice_writer_flush_records_sum (\S+)", scrape, re.M)[1])  # type: ignore[index]
            print(f"  writer so far: {flush_n:.0f} transactions, {1000 * flush_s / flush_n:.2f} ms and "
                  f"{flush_r / flush_n:.0f} records each on average", file=sys.stderr)
            pg_cpu = postgres_cpu(tmp) - pg0
            raw = await raw_copy(url, [uuid.UUID(d["device_id"]) for d in devices], max(stored, 50_000),
                                 args.records)
            results.append({
                "reports_s": ok / wall, "records_s": stored / wall, "p50_ms": p50, "p99_ms": p99, "cpu_pct": 100 * cpu / wall, "pg_cpu_pct": 100 * pg_cpu / wall,
                "cpu_us_report": 1e6 * cpu / max(1, ok), "raw_s": raw, "ratio": (stored / wall) / raw,
            })
            r = results[-1]
            print(f"round {rnd}: {r['reports_s']:,.0f} reports/s, {r['records_s']:,.0f} records/s, "
                  f"raw COPY {r['raw_s']:,.0f} rows/s", file=sys.stderr)
        print()
        print("| round | reports/s | records/s | p50 ms | p99 ms | collector CPU % | CPU µs/report "
              "| postgres CPU % | raw COPY rows/s | records/s ÷ raw |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, r in enumerate(results, 1):
            print(f"| {i} | {r['reports_s']:,.0f} | {r['records_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                  f"| {r['cpu_pct']:.0f} | {r['cpu_us_report']:.0f} | {r['pg_cpu_pct']:.0f} | {r['raw_s']:,.0f} "
                  f"| {r['ratio']:.3f} |")
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"| median | {med['reports_s']:,.0f} | {med['records_s']:,.0f} | {med['p50_ms']:.1f} | "
              f"{med['p99_ms']:.1f} | {med['cpu_pct']:.0f} | {med['cpu_us_report']:.0f} | {med['pg_cpu_pct']:.0f} | "
              f"{med['raw_s']:,.0f} | {med['ratio']:.3f} |")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
