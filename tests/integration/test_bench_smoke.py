"""The ingest benchmark runs end to end with a tiny load: both servers, every shape, the raw
COPY and the fixed rate, each request accepted and every acknowledged record stored.

No figure is checked: this is about the bench's code paths, not about speed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("influxd") is None,
                       reason="needs wrk and influxd: apt-get install -y wrk influxdb"),
]


def test_ingest_bench_prints_both_servers_for_every_shape() -> None:
    out = subprocess.run(
        [sys.executable, "bench/ingest.py", "--rounds", "1", "--seconds", "1", "--warmup", "0", "--devices", "8",
         "--concurrency", "4", "--rate", "20", "--rate-connections", "4", "--copy-rows", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr[-3000:]
    report = out.stdout
    for shape in ("usage10", "mixed4", "backlog500"):
        for server in ("tice", "influx"):
            assert f"| {shape} | {server} |" in report, report
        assert re.search(rf"^\| {shape} \| \d+\.\d{{3}}", report, re.MULTILINE), report  # its ratio row
    assert "### Fixed rate: 20 requests/s of usage10" in report
    assert "| tice | " in report and "| influx | " in report
    assert "InfluxDB holds" in out.stderr


@pytest.mark.skipif(shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists(),
                    reason="needs py-spy: pip install py-spy")
def test_profile_prints_areas_and_top_functions() -> None:
    out = subprocess.run(
        [sys.executable, "bench/profile_ingest.py", "--seconds", "2", "--warmup", "1", "--devices", "8",
         "--concurrency", "4", "--top", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| area | share of busy | loop µs/request | CPU µs/request (estimate) |" in out.stdout
    assert "writer: the flush statement" in out.stdout
    assert "Top 5 functions, self" in out.stdout and "Top 5 functions, cumulative" in out.stdout
    assert "The writer's PostgreSQL backends (" in out.stdout
    assert "| idle: waiting for the next flush |" in out.stdout or "| on a CPU (no wait event) |" in out.stdout
