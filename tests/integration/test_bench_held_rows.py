"""bench/held_rows.py runs end to end with a tiny fleet: a row held, its device answered 503
"being changed", the others never 503, and every acknowledged record stored once.

No figure is checked: this is about the bench's code paths, not about speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_held_rows_bench_reports_the_held_device_apart_and_checks_every_record() -> None:
    # A lock timeout well inside the hold: the held device meets its row held whatever the load.
    out = subprocess.run(
        [sys.executable, "bench/held_rows.py", "--devices", "6", "--held", "1", "--warmup", "1", "--hold-seconds", "6",
         "--settle", "1", "--retry-after", "0.2", "--set", "writer_lock_timeout_s=0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = out.stdout
    assert "| held (1) | 503 this device's data is being changed by another operation; send again later |" in report, report
    assert "| others (5) | 200 |" in report, report
    assert "NOTE:" not in report, report  # no other device answered 503
    assert "| acknowledged but not in the database | 0 |" in report, report
    assert "| stored more than once | 0 |" in report, report
    assert "OK: rows stored equal the records acknowledged" in report, report
    assert "1 device rows held" in out.stderr and "released" in out.stderr, out.stderr
