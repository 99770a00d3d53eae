"""Run wrk with bench/wrk_reports.lua and read what it measured."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk_reports.lua"
THREADS = 2


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answers received, whatever their status
    duration_s: float  # wrk's own measuring window
    status_errors: int  # answers with a status >= 400
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    late: int  # paced mode: requests sent more than 1 ms after their slot
    late_max_ms: float
    cpu_s: float  # wrk's own CPU (user + system)

    @property
    def ok(self) -> int:
        return self.requests - self.status_errors


def parse(stdout: str, cpu_s: float = 0.0) -> WrkResult:
    """The "BENCH key=value ..." line printed by the script's done()."""
    m = re.search(r"^BENCH (.*)$", stdout, re.MULTILINE)
    if not m:
        raise ValueError(f"no BENCH line in wrk's output:\n{stdout[-2000:]}")
    kv = dict(part.split("=", 1) for part in m[1].split())
    us = {k: int(kv[k]) / 1000 for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}
    return WrkResult(requests=int(kv["requests"]), duration_s=int(kv["duration_us"]) / 1e6,
                     status_errors=int(kv["status_errors"]), socket_errors=int(kv["socket_errors"]),
                     p50_ms=us["p50_us"], p90_ms=us["p90_us"], p99_ms=us["p99_us"], p999_ms=us["p999_us"],
                     max_ms=us["max_us"], late=int(kv["late"]), late_max_ms=float(kv["late_max_ms"]), cpu_s=cpu_s)


def command(url: str, *, target: str, devices_file: Path, templates_file: Path, records: int, spool: str,
            base_epoch: int, path: str, connections: int, seconds: float) -> list[str]:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    return [binary, f"-t{THREADS}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "--latency",
            "-s", str(SCRIPT), url, "--", target, str(devices_file), str(templates_file), str(records), spool,
            str(base_epoch), str(THREADS), path]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Wrk:
    """One wrk process: `start()`, then `finish()` waits for it (bounded) and returns its result
    with its own CPU time (the CPU of the children this process reaped meanwhile: wrk alone,
    as long as the caller starts no other child in between)."""

    def __init__(self, cmd: list[str], rate: float | None = None) -> None:
        self.cmd = cmd
        self.rate = rate
        self.proc: subprocess.Popen[str] | None = None
        self._cpu0 = 0.0

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("WRK_RATE", None)
        if self.rate:
            env["WRK_RATE"] = f"{self.rate:g}"
        self._cpu0 = _children_cpu()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def stop(self) -> None:
        """Kill wrk if it still runs (the bench stopped early: Ctrl-C, SIGTERM, an error)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def finish(self, timeout: float) -> WrkResult:
        assert self.proc is not None
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise SystemExit(f"wrk did not finish within {timeout:g} s") from None
        except BaseException:  # Ctrl-C, SIGTERM: no wrk left behind
            self.stop()
            raise
        if self.proc.returncode != 0:
            raise SystemExit(f"wrk failed ({self.proc.returncode}): {stderr.strip() or stdout[-2000:]}")
        return parse(stdout, _children_cpu() - self._cpu0)
