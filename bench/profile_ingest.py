"""Where the collector's time goes under ingest load: py-spy on the running collector.

    python bench/profile_ingest.py [--seconds 20] [--warmup 3] [--shape usage10] [--concurrency 32]
                                   [--rate 0] [--devices 200] [--top 25] [--out prof.txt] [--lines] [--native]

Starts the product as bench/ingest.py does (collector + embedded PostgreSQL, fsync on, devices
enrolled), drives it with wrk and the same reports (closed loop, or `--rate` requests/s), and
after `--warmup` seconds samples the collector with
`py-spy record --pid PID --duration S --format raw --nonblocking --idle --threads --nolineno`
(100 samples/s of wall time; `--nonblocking` reads the process without stopping it).
py-spy: `pip install py-spy` (found on PATH or beside this Python).

Prints the event loop's idle share, the collector's areas (each busy sample in one area; with
the collector's CPU over the same window, an area's share gives its CPU µs per request), and
the top functions by self and cumulative share of busy samples, and what the writer's
PostgreSQL backends were doing meanwhile (`pg_stat_activity` every 5 ms or so: on a CPU, idle
waiting for the next flush, or waiting on an event such as WalSync; the sampling connection's
own CPU is taken off PostgreSQL's figures). `--out` keeps the raw profile (flamegraph.pl and
speedscope read it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _pyspy, _shapes, _wrk  # noqa: E402
from bench._common import exit_on_sigterm, finite_float, run, setting_overrides, uninterrupted  # noqa: E402
from bench._targets import Product, cpu_seconds, postgres_cpu, scrape_value  # noqa: E402


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the process's main thread,
    which runs the event loop (Linux /proc/PID/task/PID/schedstat)."""
    run_ns, wait_ns, _ = (int(x) for x in Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split())
    return run_ns / 1e9, wait_ns / 1e9


@dataclass
class Window:
    """What the collector did while py-spy sampled it."""

    wall_s: float
    requests: int
    user_s: float
    system_s: float
    pg_s: float
    on_cpu_s: float  # event loop thread
    runqueue_s: float  # event loop thread, runnable but waiting for a CPU
    flushes: float
    flush_s: float
    flush_records: float


class BackendStates:
    """Samples, on a thread of its own, what the writer's PostgreSQL backends are doing (their
    `pg_stat_activity` state and wait event, every 5 ms) while the profile runs: on a CPU, idle
    waiting for the next flush, or waiting on something (WalSync: the commit's WAL flush)."""

    QUERY = ("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
             "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND left(query, 5) = 'WITH '")

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.tally: Counter[str] = Counter()
        self.samples = 0
        self.seconds = 0.0
        self.cpu_s = 0.0  # the sampling connection's own PostgreSQL CPU, to take off PostgreSQL's figure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="backend-states")

    def __enter__(self) -> BackendStates:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.db_url)
        backend = psutil.Process(conn.get_server_pid())
        cpu0, started = cpu_seconds(backend), time.perf_counter()
        try:
            while not self._stop.is_set():
                for r in await conn.fetch(self.QUERY):
                    if r["state"] == "active":
                        what = f"{r['wait_event_type']}: {r['wait_event']}" if r["wait_event"] else "on a CPU (no wait event)"
                    else:
                        what = "idle: waiting for the next flush"
                    self.tally[what] += 1
                self.samples += 1
                await asyncio.sleep(0.005)
            self.seconds = time.perf_counter() - started
            self.cpu_s = cpu_seconds(backend) - cpu0
        finally:
            await conn.close()

    def print(self) -> None:
        n = sum(self.tally.values())
        if not n:
            return
        apart = 1000 * self.seconds / max(1, self.samples)
        print(f"\nThe writer's PostgreSQL backends ({self.samples:,} samples of pg_stat_activity, {apart:.1f} ms "
              f"apart; share of backend-samples; the sampling itself used {self.cpu_s / max(self.seconds, 1e-9):.2f} "
              "cores of PostgreSQL, taken off its figures above):\n")
        print("| state | share |")
        print("|---|---:|")
        for what, c in self.tally.most_common(8):
            print(f"| {what} | {pct(c, n)} |")


def measure(product: Product) -> dict[str, float]:
    collector = product.collector()
    t = collector.cpu_times()
    on_cpu, runqueue = schedstat(collector.pid)
    scrape = product.scrape()
    return {"wall": time.perf_counter(), "user": t.user, "system": t.system, "pg": postgres_cpu(product.pgdata),
            "on_cpu": on_cpu, "runqueue": runqueue,
            "stored": scrape_value(scrape, "tice_ingest_records_total", '{outcome="stored"}'),
            "flushes": scrape_value(scrape, "tice_writer_flush_duration_seconds_count"),
            "flush_s": scrape_value(scrape, "tice_writer_flush_duration_seconds_sum"),
            "flush_records": scrape_value(scrape, "tice_writer_flush_records_sum")}


def window(before: dict[str, float], after: dict[str, float], records_per_request: int) -> Window:
    d = {k: after[k] - before[k] for k in before}
    return Window(wall_s=d["wall"], requests=round(d["stored"] / records_per_request), user_s=d["user"],
                  system_s=d["system"], pg_s=d["pg"], on_cpu_s=d["on_cpu"], runqueue_s=d["runqueue"],
                  flushes=d["flushes"], flush_s=d["flush_s"], flush_records=d["flush_records"])


def print_profile(threads: dict[str, list[_pyspy.Stack]], top: int, w: Window) -> None:
    s = _pyspy.summarize(threads)
    stacks = threads[s.thread]
    busy = _pyspy.busy(stacks)
    n_busy = _pyspy.total(busy)
    per_req = max(1, w.requests)
    # The event loop's time per request: wall time it was not waiting in select(). That is what
    # bounds one process's request rate, whether it was computing or waiting for a CPU.
    loop_us = 1e6 * w.wall_s * (n_busy / max(1, s.samples)) / per_req
    cpu = w.user_s + w.system_s
    print(f"- requests stored during the profile: {w.requests / w.wall_s:,.0f}/s; writer: "
          f"{w.flushes / w.wall_s:,.0f} transactions/s, {w.flush_records / max(1, w.flushes):,.0f} records and "
          f"{1000 * w.flush_s / max(1, w.flushes):.1f} ms each")
    print(f"- collector CPU: {cpu / w.wall_s:.2f} cores ({pct(w.system_s, cpu)} in the kernel), "
          f"{1e6 * cpu / per_req:,.0f} µs per request; its PostgreSQL: {w.pg_s / w.wall_s:.2f} cores, "
          f"{1e6 * w.pg_s / per_req:,.0f} µs per request")
    print(f"- event loop thread ({s.samples:,} samples): waiting in select {pct(s.idle, s.samples)}, "
          f"busy {pct(n_busy, s.samples)}; by the kernel's account it was on a CPU {pct(w.on_cpu_s, w.wall_s)} "
          f"and runnable but waiting for a CPU {pct(w.runqueue_s, w.wall_s)} of the time; "
          f"other threads' busy samples: {s.other_threads_busy:,}")
    n_send = _pyspy.in_socket_send(stacks)
    user_us, system_us = 1e6 * w.user_s / per_req, 1e6 * w.system_s / per_req
    print(f"- loop time per request (busy wall time: on a CPU or waiting for one): {loop_us:,.0f} µs; "
          f"{pct(n_send, n_busy)} of the busy samples are inside a socket send")
    print("- CPU µs/request is an estimate that sums to the measured CPU: the collector's user-mode CPU spread "
          "over the busy samples outside socket sends, its kernel CPU over those inside (where a sender that "
          "wakes its receiver is often preempted, so their wall share overstates their CPU)\n")
    print("| area | share of busy | loop µs/request | CPU µs/request (estimate) |")
    print("|---|---:|---:|---:|")
    for name, c, sends in _pyspy.areas(stacks):
        est = (c - sends) / max(1, n_busy - n_send) * user_us + sends / max(1, n_send) * system_us
        print(f"| {name} | {pct(c, n_busy)} | {loop_us * c / max(1, n_busy):,.0f} | {est:,.0f} |")
    for title, rows in (("self (innermost Python frame)", _pyspy.top_self(busy, top)),
                        ("cumulative (anywhere on the stack)", _pyspy.top_cumulative(busy, top))):
        print(f"\nTop {top} functions, {title}:\n")
        print("| function | share of busy |")
        print("|---|---:|")
        for frame, c in rows:
            print(f"| `{frame}` | {pct(c, n_busy)} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=finite_float, default=20, help="profiled seconds")
    ap.add_argument("--warmup", type=finite_float, default=3, help="load before the profile starts")
    ap.add_argument("--shape", default="usage10", choices=list(_shapes.SHAPES))
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=finite_float, default=0, help="fixed requests/s (0: closed loop)")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="keep the raw profile here")
    ap.add_argument("--lines", action="store_true", help="keep line numbers (top functions by line)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a collector setting (repeatable), e.g. --set event_loop=asyncio")
    ap.add_argument("--native", action="store_true",
                    help="also sample C/Cython frames (py-spy then pauses the collector at each sample)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.devices < max(args.concurrency, _wrk.THREADS):
        ap.error("need --seconds > 0, --warmup >= 0 and --devices >= --concurrency (one request in flight per device)")
    if args.concurrency < _wrk.THREADS or args.rate < 0 or args.top < 1:
        ap.error(f"need --concurrency >= {_wrk.THREADS} (wrk's threads), --rate >= 0 and --top >= 1")
    settings = setting_overrides(ap, args.set)
    spy = py_spy()
    exit_on_sigterm()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tice-profile-"))
    product = Product(tmp, args.devices, settings)
    wrk: _wrk.Wrk | None = None
    try:
        print(f"starting the product in {tmp}", file=sys.stderr)
        product.start()
        shape = _shapes.SHAPES[args.shape]
        devices = tmp / "devices.txt"
        devices.write_text("".join(f"{d['device_id']} {d['token']}\n" for d in product.devices))
        templates = tmp / "templates.txt"
        _shapes.write_templates(templates, shape)
        load_s = args.warmup + args.seconds + 2
        wrk = _wrk.Wrk(_wrk.command(product.url, target="tice", devices_file=devices, templates_file=templates,
                                    records=shape.records, spool=str(uuid.uuid4()), base_epoch=int(time.time()) - 3700,
                                    path=product.path, connections=args.concurrency, seconds=load_s),
                       args.rate or None)
        prof = tmp / "profile.txt"
        wrk.start()
        time.sleep(args.warmup)
        collector = product.collector()
        before = measure(product)
        cmd = [spy, "record", "--pid", str(collector.pid), "--duration", f"{args.seconds:g}", "--format", "raw",
               "--nonblocking", "--idle", "--threads", "--nolineno", "-o", str(prof)]
        if args.lines:
            cmd.remove("--nolineno")
        if args.native:
            cmd.remove("--nonblocking")
            cmd.append("--native")
        with BackendStates(product.db_url) as states:
            spied = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
        w = window(before, measure(product), shape.records)
        w.pg_s -= states.cpu_s
        result = wrk.finish(load_s + 60)
        if spied.returncode != 0 or not prof.exists():
            raise SystemExit(f"py-spy failed ({spied.returncode}): {spied.stderr.strip()[-2000:]}")
        print(f"## bench/profile_ingest.py: {shape.what}, {args.concurrency} connections, "
              f"{'rate ' + format(args.rate, 'g') + ' requests/s' if args.rate else 'closed loop'}, "
              f"py-spy {args.seconds:g} s\n")
        print(f"- machine: {os.cpu_count()} CPUs; load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
              f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"- load over the whole wrk run: {result.ok / result.duration_s:,.0f} requests/s, p50 {result.p50_ms:.1f} ms, "
              f"p99 {result.p99_ms:.1f} ms, {result.status_errors + result.socket_errors} errors")
        print_profile(_pyspy.parse(prof.read_text()), args.top, w)
        states.print()
        if args.out:
            shutil.copyfile(prof, args.out)
            print(f"\nraw profile kept in {args.out}")
    finally:
        with uninterrupted():
            if wrk is not None:
                wrk.stop()
            product.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
