"""Debian's Prometheus and Alertmanager on loopback ports, run with the repository's configuration.

The configuration is the committed one (dashboards/prometheus/prometheus.yml, the rules,
dashboards/alertmanager/alertmanager.yml) with only what a test machine needs changed: scrape
targets on loopback, short intervals, absolute rule paths, and for Alertmanager receivers that
deliver to loopback instead of the example mail relay and webhooks.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.helpers import free_port, required_tool, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
ALERTMANAGER_CONFIG = ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"


class Service:
    """A server in a child process with its output in a log file (quoted when it fails); stop()
    ends it (its process group, by pid) and removes its working directory."""

    def __init__(self, argv: list[str], workdir: Path, port: int, ready_path: str,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = workdir / f"{Path(argv[0]).name}.log"
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 90) -> None:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(self.url + self.ready_path) as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(ready, f"{self.proc.args[0]} ready on {self.url}", timeout=timeout, every=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def immediate_rules(workdir: Path) -> list[str]:
    """Copies of the repository's rule files in `workdir` without their `for` durations, so an
    alert whose condition holds fires at the next evaluation rather than minutes later; the
    expressions, labels and annotations stay as committed."""
    out = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        copy_path = workdir / f"rules-{path.name}"
        copy_path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        out.append(str(copy_path))
    return out


def prometheus_config(targets: dict[str, list[str]], *, interval: str = "2s",
                      alertmanager: str | None = None, rule_files: list[str] | None = None) -> dict[str, Any]:
    """The repository's prometheus.yml for a test: `targets` maps scrape jobs of that file to
    loopback HOST:PORTs (jobs left out are dropped), every scrape and evaluation every `interval`,
    the rules by absolute path (or `rule_files`)."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    assert not unknown, f"no scrape job {sorted(unknown)} in prometheus.yml (it has {sorted(jobs)})"
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = rule_files or [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    config["scrape_configs"] = []
    for name, hosts in targets.items():
        job = {k: v for k, v in jobs[name].items() if not k.endswith("_sd_configs") and k != "static_configs"}
        config["scrape_configs"].append({**job, "static_configs": [{"targets": hosts}]})
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    else:
        config.pop("alerting", None)
    return config


class Prometheus(Service):
    """`prometheus` (Debian's package) with prometheus_config(...), its TSDB in a temp dir;
    `immediate`: the rules without their `for` (immediate_rules)."""

    def __init__(self, targets: dict[str, list[str]], *, interval: str = "2s", alertmanager: str | None = None,
                 immediate: bool = False) -> None:
        binary = required_tool("prometheus", "prometheus")
        workdir = Path(tempfile.mkdtemp(prefix="tice-prometheus-"))
        config = workdir / "prometheus.yml"
        rules = immediate_rules(workdir) if immediate else None
        config.write_text(yaml.safe_dump(prometheus_config(targets, interval=interval, alertmanager=alertmanager,
                                                           rule_files=rules)), encoding="utf-8")
        port = free_port()
        super().__init__([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                         workdir, port, "/-/ready")

    async def api(self, http: aiohttp.ClientSession, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; the `data` of a success, or AssertionError with Prometheus' error."""
        async with http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus /api/v1/{path} {params}: {resp.status} {body}")
        return body["data"]

    async def query(self, http: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        data = await self.api(http, "query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [
            {"metric": {}, "value": data["result"]}]
        return result


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The repository's alertmanager.yml with every receiver delivering to `webhook_url` (on
    loopback): routes, grouping, inhibitions and time intervals stay as committed."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config = copy.deepcopy(config)
    config["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
                           for r in config["receivers"]]
    return config


class Alertmanager(Service):
    """`prometheus-alertmanager` (Debian's package) alone (no cluster), its data in a temp dir."""

    def __init__(self, webhook_url: str) -> None:
        binary = required_tool("prometheus-alertmanager", "prometheus-alertmanager")
        workdir = Path(tempfile.mkdtemp(prefix="tice-alertmanager-"))
        config = workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(alertmanager_config(webhook_url)), encoding="utf-8")
        port = free_port()
        super().__init__([binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
                         workdir, port, "/-/ready")


class Demo(Service):
    """`tice-collector demo` (the simulated city) on a loopback port; ready when it has printed
    where to look, after its backfill and first verdicts."""

    def __init__(self, *, seed: int = 1, backfill_days: int = 21, tick_s: float = 5.0) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="tice-demo-test-"))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
        super().__init__([sys.executable, "-m", "tice_collector.cli", "demo", "--listen", f"127.0.0.1:{port}",
                          "--seed", str(seed), "--backfill-days", str(backfill_days), "--tick", str(tick_s)],
                         workdir, port, "/readyz", env=env)

    async def wait_city(self, timeout: float = 900) -> str:
        """Wait until the demo says where to look; its first lines of output."""
        def printed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"tice-collector demo exited {self.proc.returncode}:\n{self.log_tail()}")
            return "  metrics:" in self.log_text()

        await wait_until(printed, "the demo's city enrolled, backfilled and judged", timeout=timeout, every=1.0)
        return "\n".join(line for line in self.log_text().splitlines() if not line[:4].isdigit())
