"""The servers the ingest benchmark drives: the product (collector + its PostgreSQL) and InfluxDB.

Each starts on loopback with free ports and its files in a temporary directory, reports the
CPU seconds it has used so far (every process of it), and cleans up after itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from bench._common import clean_env, die_with_parent, free_port, wait_http
from tice_collector import embedded
from tice_collector.auth import digest, new_secret
from tice_collector.db.queries import q
from tice_collector.db.records import TABLES

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def postgres_cpu(pgdata: Path) -> float:
    """CPU seconds of the PostgreSQL serving this data directory: the postmaster, its live
    backends, and (through the postmaster's children times) the backends that already exited,
    so the figure never goes down when a connection closes."""
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    t = postmaster.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children():
        try:
            total += cpu_seconds(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # exited between listing and reading: counted in children times once reaped
    return total


def scrape_value(text: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(m[1]) if m else 0.0


class Product:
    """`tice-collector serve` on a fresh embedded PostgreSQL (fsync and synchronous_commit on),
    with `devices` laptops enrolled over HTTP and the rate limit lifted."""

    name = "tice"
    path = "/api/v1/reports"

    def __init__(self, tmp: Path, devices: int, settings: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.tmp = tmp / "product"
        self.log = log  # the collector's output goes there (None: this terminal)
        self.extra = {f"TICE_{k.upper()}": v for k, v in (settings or {}).items()}
        self.n_devices = devices
        self.devices: list[dict[str, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: Any = None
        self.db_url = ""
        self.base = ""

    @property
    def pgdata(self) -> Path:
        return self.tmp / "pgdata"

    def start(self) -> None:
        self.db_url, self.server = embedded.start(self.tmp)
        port = free_port()
        env = clean_env(TICE_DATABASE_URL=self.db_url, TICE_RATE_LIMIT_PER_MINUTE="1000000",
                        TICE_RATE_LIMIT_BURST="1000000", TICE_LOG_LEVEL="warning",
                        # the bench enrols all its devices from one address with one secret
                        TICE_ENROLL_PER_ADDRESS_PER_MINUTE="1000000", TICE_ENROLL_PER_ADDRESS_BURST="1000000",
                        TICE_ENROLL_PER_SECRET_PER_MINUTE="1000000", TICE_ENROLL_PER_SECRET_BURST="1000000",
                        TICE_ENROLL_SECRET_MAX_DEVICES="1000000", **self.extra)
        out = None if self.log is None else self.log.open("ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tice_collector.cli", "serve", "--listen",
                                          f"127.0.0.1:{port}"], env=env, cwd=ROOT, stdout=out,
                                         stderr=None if out is None else subprocess.STDOUT,
                                         preexec_fn=die_with_parent)
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        self.base = f"http://127.0.0.1:{port}"
        try:
            wait_http(self.base + "/readyz", proc=self.proc)
        except SystemExit as e:
            if self.log is None:
                raise
            tail = self.log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{str(e).replace(': see its lines above', '')}; its last lines ({self.log}):\n{tail}") from None
        asyncio.run(self._enroll())

    async def _enroll(self) -> None:
        conn = await asyncpg.connect(self.db_url)
        try:
            secret = new_secret()
            await conn.execute(q("school_insert"), "0210001A", "bench", "A", "elementary", "four_day")
            await conn.fetchval(q("secret_insert"), "0210001A", digest(secret), "bench")
        finally:
            await conn.close()
        async with aiohttp.ClientSession() as http:
            for i in range(self.n_devices):
                async with http.post(self.base + "/api/v1/enroll",
                                     json={"secret": secret, "serial": f"BENCH-{i}", "kind": "laptop"}) as r:
                    if r.status != 201:
                        raise SystemExit(f"enrolment failed: {r.status} {await r.text()}")
                    self.devices.append(await r.json())

    def settings(self) -> str:
        """The durability settings in force, to print beside the figures."""
        async def read() -> str:
            conn = await asyncpg.connect(self.db_url)
            try:
                names = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "server_version")
                return ", ".join([f"{n}={await conn.fetchval(f'SHOW {n}')}" for n in names])
            finally:
                await conn.close()
        return asyncio.run(read())

    @property
    def url(self) -> str:
        return self.base + self.path

    def collector(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the collector with its worker processes (`workers` > 1), and its PostgreSQL."""
        main = self.collector()
        total = cpu_seconds(main)
        for child in main.children(recursive=True):
            try:
                total += cpu_seconds(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return {"collector": total, "postgres": postgres_cpu(self.pgdata)}

    def scrape(self) -> str:
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            return str(r.read().decode())

    def stored(self) -> float:
        """Records stored so far, counted in the database (every worker process's)."""
        async def count() -> int:
            conn = await asyncpg.connect(self.db_url)
            try:
                return sum([await conn.fetchval(f"SELECT count(*) FROM {t.name}") for t in TABLES.values()])
            finally:
                await conn.close()
        return float(asyncio.run(count()))

    def stop_collector(self) -> None:
        """Stop the collector, keep its PostgreSQL (for a bench that talks to the database alone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stop(self) -> None:
        self.stop_collector()
        if self.server is not None:
            self.server.cleanup()


INFLUX_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  # Every write is fsynced before the answer, as the collector commits before it answers.
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false

[logging]
  level = "warn"
"""


class Influx:
    """Debian's `influxd` (1.6) with the WAL fsynced on every write, database `bench`."""

    name = "influx"
    path = "/write?db=bench"

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "influxdb"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> None:
        binary = shutil.which("influxd")
        if binary is None:
            raise SystemExit("influxd not found: apt-get install -y influxdb (or run with --no-influx)")
        self.dir.mkdir(parents=True)
        http_port, rpc_port = free_port(), free_port()
        conf = self.dir / "influxdb.conf"
        conf.write_text(INFLUX_CONF.format(dir=self.dir, http_port=http_port, rpc_port=rpc_port))
        self.base = f"http://127.0.0.1:{http_port}"
        log = (self.dir / "influxd.log").open("wb")
        self.proc = subprocess.Popen([binary, "run", "-config", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"influxd exited with {self.proc.returncode}:\n"
                                 + (self.dir / "influxd.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(self.base + "/ping", timeout=2) as r:
                    if r.status == 204:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("influxd did not answer /ping within 60 s")
            time.sleep(0.1)
        req = urllib.request.Request(self.base + "/query?q=CREATE+DATABASE+bench", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    @property
    def url(self) -> str:
        return self.base + self.path

    def points(self) -> int:
        """Points stored in database `bench`, all measurements (a count query: slow on big data)."""
        query = urllib.parse.urlencode({"db": "bench", "q": "SELECT count(seq) FROM /.*/"})
        with urllib.request.urlopen(f"{self.base}/query?{query}", timeout=300) as r:
            answer = json.loads(r.read())
        return sum(int(series["values"][0][1]) for result in answer["results"] for series in result.get("series", []))

    def settings(self) -> str:
        out = subprocess.run(["influxd", "version"], capture_output=True, text=True, check=False).stdout.strip()
        return f'{out}, wal-fsync-delay="0s", index inmem'

    def cpu(self) -> dict[str, float]:
        assert self.proc is not None
        return {"influxd": cpu_seconds(psutil.Process(self.proc.pid))}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def device_ids(devices: list[dict[str, str]]) -> list[uuid.UUID]:
    return [uuid.UUID(d["device_id"]) for d in devices]
