"""Drive the real `tice-agent` CLI in child processes: configs, commands, status, waits.

The agent runs with its real probes (usage, health, network, display)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

from agent_testing import SmallFilesystem, wait_until
from tice_collector.db.records import TABLES

__all__ = ["SmallFilesystem", "wait_until"]

# probe name -> the table its records land in
PROBE_TABLES = {"usage": "usage_records", "health": "health_records", "network": "link_records",
                "display": "display_records"}


def agent_argv(*args: str) -> list[str]:
    """The installed `tice-agent` script, else the module run by this interpreter."""
    script = Path(sys.executable).with_name("tice-agent")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "tice_agent.cli", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}


def write_config(path: Path, state_dir: Path, *, server: str | None = None, probes: bool = True,
                 every: float = 0.3, spool_max_bytes: int = 50 * 1024 * 1024) -> Path:
    """A fast agent: probes every `every` seconds (or none at all: a drain-only agent)."""
    sections = "".join(
        f"[probes.{name}]\nenabled = {'true' if probes else 'false'}\ninterval_s = {every}\n"
        + ("sample_every_s = 0.5\n" if name in ("usage", "display") and probes else "")
        for name in PROBE_TABLES)
    path.write_text((f'server = "{server}"\n' if server else "") + f'''state_dir = "{state_dir}"
[spool]
max_bytes = {spool_max_bytes}
[send]
interval_s = 0.3
timeout_s = 10.0
backoff_base_s = 0.2
backoff_cap_s = 1.0
initial_delay_max_s = 0.0
drain_batches_per_s = 20.0
[batch]
max_records = 40
''' + sections)
    return path


def run_cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_argv(*args), env=_env(), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def enrol(config: Path, secret: str, serial: str) -> uuid.UUID:
    """`tice-agent enroll`, the secret on stdin; the device id it was given (its credentials file)."""
    r = run_cli("--config", str(config), "enroll", "--secret", "-", "--serial", serial, stdin=secret)
    assert r.returncode == 0, r.stderr
    state = Path(tomllib.loads(config.read_text())["state_dir"])
    return uuid.UUID(json.loads((state / "credentials.json").read_text())["device_id"])


class Daemon:
    """`tice-agent run` in a child process, its log in a file (a pipe nobody reads could fill)."""

    def __init__(self, config: Path) -> None:
        n = len(list(config.parent.glob(f"{config.stem}-*.log")))
        self.log_path = config.with_name(f"{config.stem}-{n}.log")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(agent_argv("--config", str(config), "run"), env=_env(), text=True,
                                     stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.log_path.read_text()

    def running(self) -> bool:
        """Started and ready: the daemon logs this line after installing its signal handlers."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}: {self.log()[-2000:]}")
        return "tice-agent running:" in self.log()

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM; the daemon must exit 0, without a traceback, within `timeout` s. Returns its log."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the agent did not stop within {timeout:g} s of SIGTERM; its log ends: "
                                     f"{self.log()[-1500:]}") from None
            log = self.log()
            assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {log[-2000:]}"
            assert "Traceback" not in log, log[-2000:]
            return log
        finally:
            self.kill()

    def kill(self) -> None:
        """For finally blocks: make sure the child is gone, whatever happened."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def status(config: Path) -> dict[str, Any]:
    """`tice-agent status --json`."""
    r = run_cli("--config", str(config), "status", "--json")
    assert r.returncode == 0, r.stderr
    view: dict[str, Any] = json.loads(r.stdout)
    return view


def spool_depth(view: dict[str, Any]) -> int:
    return int(view["spool"]["depth"]) if view["spool"] else 0


def drained(view: dict[str, Any]) -> bool:
    return view["spool"] is not None and view["spool"]["depth"] == 0 and view["spool"]["in_flight"] == 0


def last_seq(spool_path: Path) -> int:
    """The highest seq the spool ever gave out (its AUTOINCREMENT counter), read-only."""
    con = sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True, timeout=5.0)
    try:
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


async def stored_rows(db: Any, device_id: uuid.UUID) -> list[tuple[int, Any, uuid.UUID]]:
    """(seq, received_at, spool) of every record the collector stored for the device."""
    rows: list[tuple[int, Any, uuid.UUID]] = []
    for table in sorted({t.name for t in TABLES.values()}):
        rows += [(r["seq"], r["received_at"], r["spool"]) for r in
                 await db.fetch(f"SELECT seq, received_at, spool FROM {table} WHERE device_id = $1", device_id)]
    return rows


def collector_env(database_url: str) -> dict[str, str]:
    """A collector whose per-device rate limit does not slow an agent sending every 0.3 s."""
    return {"TICE_DATABASE_URL": database_url, "TICE_RATE_LIMIT_PER_MINUTE": "100000",
            "TICE_RATE_LIMIT_BURST": "100000"}


