"""Agent footprint: the real `tice-agent run` side by side with Debian's prometheus-node-exporter.

    python bench/agent_footprint.py [--seconds 180] [--settle 5] [--interval S] [--no-wheel] [--https]

Starts `tice-collector serve` on a fresh embedded PostgreSQL in a temporary directory, builds
the agent's wheels from this checkout and installs them alone in a fresh venv (as a laptop
does), enrols the agent with the real `tice-agent enroll`, then runs `tice-agent run` (its
default config: the default probes and the sender every 60 s; `--interval` makes both faster)
twice: from that venv, and from the venv running this script (a developer's install of the
whole repository, editable: its import hook costs memory too; `--no-wheel` measures this one
only). The collector listens on http:// (loopback), or with `--https` on https:// with a
self-signed certificate made by `openssl` that the agents trust through `ca_bundle`, as a
school's laptops talk to a city's collector (TLS: the agent then loads the system's CAs too). In the same run, an idle `prometheus-node-exporter` (default collectors, listening on
127.0.0.1, not scraped).
After `--settle` seconds both are sampled once a second for `--seconds`: resident memory (RSS,
and PSS where the kernel gives it), and CPU time (user + system; for the agent, plus the
commands its probes ran). Prints a markdown table with both and the ratio agent/node_exporter,
then stops everything and removes the temporary directory.

node_exporter is the anchor: `apt-get install prometheus-node-exporter`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import agent_venv, clean_env, finite_float, free_port, run, wait_http  # noqa: E402
from tice_collector import embedded  # noqa: E402
from tice_collector.auth import digest, new_secret  # noqa: E402
from tice_collector.db.queries import q  # noqa: E402
from tice_collector.db.records import TABLES  # noqa: E402

MiB = 1024 * 1024


def agent_argv(*args: str, script: Path | None = None) -> list[str]:
    script = script or Path(sys.executable).with_name("tice-agent")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "tice_agent.cli", *args]


@dataclass
class Sampler:
    name: str
    proc: psutil.Process
    children: bool = False  # count the CPU of reaped child processes (probe commands)
    rss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    cpu0: float = 0.0
    cpu1: float = 0.0

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system + ((t.children_user + t.children_system) if self.children else 0.0)

    def sample(self) -> None:
        self.rss.append(self.proc.memory_info().rss / MiB)
        try:
            self.pss.append(self.proc.memory_full_info().pss / MiB)
        except (AttributeError, psutil.AccessDenied):
            pass


async def prepare_school(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        secret = new_secret()
        await conn.execute(q("school_insert"), "0210001A", "bench", "A", "elementary", "four_day")
        await conn.fetchval(q("secret_insert"), "0210001A", digest(secret), "bench")
        return secret
    finally:
        await conn.close()


async def stored_records(url: str, device_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(url)
    try:
        return sum([await conn.fetchval(f"SELECT count(*) FROM {t} WHERE device_id = $1", device_id)
                    for t in sorted({t.name for t in TABLES.values()})])
    finally:
        await conn.close()


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def wait_ready(url: str, cafile: Path | None) -> None:
    """wait_http, trusting `cafile` for an https:// URL."""
    if cafile is None:
        wait_http(url)
        return
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after 60 s")


def smaps(pid: int, top: int = 12) -> list[tuple[str, float, float]]:
    """Where a process's resident memory is, from /proc/PID/smaps: (mapping, RSS MiB, of it
    anonymous MiB) per file mapped (the interpreter, each shared library) and for the anonymous
    memory (the heap, malloc arenas, thread stacks), largest first. Linux only."""
    sums: dict[str, list[float]] = {}
    name = "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                name = Path(head[5]).name if len(head) > 5 and head[5].startswith("/") else \
                    (head[5] if len(head) > 5 else "anonymous (heap, malloc arenas, thread stacks)")
            elif head[0] in ("Rss:", "Anonymous:"):
                kb = sums.setdefault(name, [0.0, 0.0])
                kb[head[0] == "Anonymous:"] += int(head[1]) / 1024
    return sorted(((k, v[0], v[1]) for k, v in sums.items()), key=lambda t: -t[1])[:top]


def row(name: str, s: Sampler, window: float) -> dict[str, float | str]:
    cpu = s.cpu1 - s.cpu0
    return {"name": name, "rss": s.rss[-1], "rss_max": max(s.rss), "pss": s.pss[-1] if s.pss else float("nan"),
            "cpu_h": cpu / window * 3600, "cpu_pct": 100 * cpu / window}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=finite_float, default=180.0, help="measurement window (default 180)")
    ap.add_argument("--settle", type=finite_float, default=5.0, help="seconds after start before measuring (default 5)")
    ap.add_argument("--interval", type=finite_float, default=None,
                    help="probe and send interval in seconds (default: the agent's own, 60)")
    ap.add_argument("--smaps", action="store_true",
                    help="at the end, print where each agent's RSS is (per mapping, from /proc/PID/smaps)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="run one more agent (this venv's) under tracemalloc, not sampled, and print its "
                         "Python heap by file when it stops")
    ap.add_argument("--https", action="store_true",
                    help="the collector on https:// (a self-signed certificate, trusted by the agents' ca_bundle)")
    ap.add_argument("--no-wheel", action="store_true",
                    help="measure only the agent of this venv (no wheel built, no venv made)")
    args = ap.parse_args()
    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        sys.exit("agent_footprint: prometheus-node-exporter not found; apt-get install prometheus-node-exporter")

    tmp = Path(tempfile.mkdtemp(prefix="tice-footprint-"))
    server = collector = node = traced = None
    agents: list[subprocess.Popen[bytes]] = []
    try:
        print(f"starting embedded PostgreSQL in {tmp}", file=sys.stderr)
        url, server = embedded.start(tmp)
        port = free_port()
        tls: dict[str, str] = {}
        cert = tmp / "cert.pem"
        if args.https:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", str(tmp / "key.pem"), "-out", str(cert)], check=True, capture_output=True)
            tls = {"TICE_TLS_CERT_FILE": str(cert), "TICE_TLS_KEY_FILE": str(tmp / "key.pem")}
        collector = subprocess.Popen(
            [sys.executable, "-m", "tice_collector.cli", "serve", "--listen", f"127.0.0.1:{port}"],
            env=clean_env(TICE_DATABASE_URL=url, TICE_LOG_LEVEL="warning", **tls), cwd=ROOT)
        base = f"{'https' if args.https else 'http'}://127.0.0.1:{port}"
        wait_ready(base + "/readyz", cert if args.https else None)
        secret = asyncio.run(prepare_school(url))

        scripts = {"tice-agent run, this venv": Path(sys.executable).with_name("tice-agent")}
        if not args.no_wheel:
            print("building the agent's wheels and a venv holding them alone", file=sys.stderr)
            scripts = {"tice-agent run, its wheel alone": agent_venv(ROOT, tmp / "wheel"), **scripts}
        def enrol(n: int, script: Path) -> tuple[Path, uuid.UUID]:
            state = tmp / f"agent-state-{n}"
            config = tmp / f"agent-{n}.toml"
            text = f'server = "{base}"\nstate_dir = "{state}"\n' + (f'ca_bundle = "{cert}"\n' if args.https else "")
            if args.interval:
                text += f"[send]\ninterval_s = {args.interval}\n" + "".join(
                    f"[probes.{p}]\ninterval_s = {args.interval}\n" for p in ("usage", "health", "network", "display"))
            config.write_text(text)
            enrolled = subprocess.run(agent_argv("--config", str(config), "enroll", "--secret", "-",
                                                 "--serial", f"FOOTPRINT-{n}", script=script),
                                      input=secret + "\n", env=clean_env(), capture_output=True, text=True, timeout=60)
            if enrolled.returncode != 0:
                raise SystemExit(f"agent_footprint: enrolment failed: {enrolled.stderr.strip()}")
            return config, uuid.UUID(json.loads((state / "credentials.json").read_text())["device_id"])

        configs: dict[str, Path] = {}
        devices: list[uuid.UUID] = []
        for i, (name, script) in enumerate(scripts.items(), 1):
            configs[name], device = enrol(i, script)
            devices.append(device)
        if args.tracemalloc:  # one more agent, from this venv, under tracemalloc: not sampled
            traced_config, _ = enrol(len(scripts) + 1, scripts["tice-agent run, this venv"])
            traced_out = tmp / "tracemalloc.md"
            traced = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_traced_agent.py"), str(traced_out),
                                       "--config", str(traced_config), "run"],
                                      env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        node_port = free_port()
        node_cmd = [exporter, f"--web.listen-address=127.0.0.1:{node_port}"]
        node = subprocess.Popen(node_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, script in scripts.items():
            agents.append(subprocess.Popen(agent_argv("--config", str(configs[name]), "run", script=script),
                                           env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{node_port}/")  # one request to /, never /metrics: idle
        time.sleep(args.settle)
        for p, what in (*zip(agents, scripts, strict=True), (node, "node_exporter")):
            if p.poll() is not None:
                raise SystemExit(f"agent_footprint: {what} exited with {p.returncode}")

        samplers = [*(Sampler(name, psutil.Process(a.pid), children=True)
                      for name, a in zip(scripts, agents, strict=True)),
                    Sampler("node", psutil.Process(node.pid))]
        print(f"measuring for {args.seconds:g} s", file=sys.stderr)
        for s in samplers:
            s.cpu0 = s.cpu()
        started = time.monotonic()
        deadline = started + args.seconds
        while (now := time.monotonic()) < deadline:
            for s in samplers:
                s.sample()
            time.sleep(min(1.0, max(0.0, deadline - now)))
        window = time.monotonic() - started
        for s in samplers:
            s.cpu1 = s.cpu()
            s.sample()
        maps = {name: smaps(a.pid) for name, a in zip(scripts, agents, strict=True)} if args.smaps else {}
        views = [json.loads(subprocess.run(agent_argv("--config", str(configs[name]), "status", "--json", script=script),
                                           env=clean_env(), capture_output=True, text=True, timeout=60).stdout)
                 for name, script in scripts.items()]
        stored = [asyncio.run(stored_records(url, d)) for d in devices]

        rows = [row(s.name, s, window) for s in samplers[:-1]]
        n = row("prometheus-node-exporter, idle", samplers[-1], window)
        print()
        for name, view, count in zip(scripts, views, stored, strict=True):
            print(f"window {window:.0f} s; {name}: {view['sender']['batches_sent']} batches, {count} records stored "
                  f"by the collector, {sum(p['runs'] for p in view['probes'].values())} probe runs; "
                  f"probe and send interval {args.interval or 60:g} s")
        print()
        print("| process | RSS MiB (end) | RSS MiB (max) | PSS MiB (end) | CPU s per hour | CPU % of a core |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in (*rows, n):
            print(f"| {r['name']} | {r['rss']:.1f} | {r['rss_max']:.1f} | {r['pss']:.1f} | {r['cpu_h']:.2f} "
                  f"| {r['cpu_pct']:.3f} |")

        def ratio(a: dict[str, float | str], k: str) -> str:
            return f"{a[k] / n[k]:.2f}x" if n[k] else "n/a (node_exporter used 0)"  # type: ignore[operator]

        for ar in rows:
            print(f"| ratio: {ar['name']} / node_exporter | {ratio(ar, 'rss')} | {ratio(ar, 'rss_max')} | "
                  f"{ratio(ar, 'pss')} | {ratio(ar, 'cpu_h')} | {ratio(ar, 'cpu_pct')} |")
        print()
        print(f"collector over {'https (TLS, the agents trusting its certificate by ca_bundle)' if args.https else 'http'}")
        print(f"commands: `tice-agent --config agent.toml run` ({'interval ' + format(args.interval, 'g') + ' s' if args.interval else 'default config'}) · "
              f"`{Path(node_cmd[0]).name} {node_cmd[1]}`")
        if traced is not None:
            stop(traced)
            print()
            print("tice-agent run under tracemalloc (this venv), at its end:")
            print(traced_out.read_text() if traced_out.exists() else "(no tracemalloc output: the agent did not exit cleanly)")
        for name, mapped in maps.items():
            print()
            print(f"| {name}: mapping | RSS MiB | of it anonymous MiB |")
            print("|---|---:|---:|")
            for m, rss, anon in mapped:
                print(f"| {m} | {rss:.2f} | {anon:.2f} |")
    finally:
        for a in agents:
            stop(a)
        stop(traced)
        stop(node)
        stop(collector)
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
