"""bench/flush_statement.py runs end to end with a tiny load: every variant at every flush size,
each flush's rows stored (the script checks the count itself and exits non-zero if not).

No figure is checked: this is about the bench's code paths, not about speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.flush_statement import VARIANTS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_variant_is_measured_at_every_flush_size() -> None:
    out = subprocess.run(
        [sys.executable, "bench/flush_statement.py", "--sizes", "1,3", "--requests", "6", "--rounds", "1",
         "--devices", "4"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| 1 |", "| 3 |"))]
    assert [(r.split(" | ")[0], r.split(" | ")[1]) for r in rows] == [
        (f"| {size}", name) for size in (1, 3) for name in VARIANTS], out.stdout
    # The baseline's own ratio, in every size.
    assert all(r.split(" | ")[3] == "1.00" for r in rows if r.split(" | ")[1] == next(iter(VARIANTS))), out.stdout
    assert "6 requests of 10 usage records per variant and size, one connection; 1 round" in out.stdout
