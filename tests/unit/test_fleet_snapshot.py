"""The fleet snapshot is one typed struct that the snapshot job writes and /metrics reads."""

from __future__ import annotations

import json
import textwrap
from datetime import date
from pathlib import Path

import msgspec
import pytest
from mypy import api as mypy_api
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tice_collector import snapshot as snap
from tice_collector.metrics import FleetCollector

ROOT = Path(__file__).resolve().parents[2]

# A body as the snapshot job wrote it when it was an untyped dict: a kind row without the
# judged fields (no device judged yet), no "peripherals" nor "google" (older collectors).
STORED_BEFORE = {
    "today": "2026-03-02",
    "devices": [{"school": "0210001A", "kind": "laptop", "status": "active", "n": 3}],
    "kinds": [{"school": "0210001A", "kind": "laptop", "enrolled": 3, "seen_day": 2, "never_seen": 1,
               "spool_dropped": 0, "spool_gaps": 0, "shared_identity": 0, "used_today": 1,
               "used_out_of_hours_today": 0}],
    "schools": [{"school": "0210001A", "zone": "A", "school_day": True, "classes": 0, "classes_regular": 0,
                 "judged": 0, "regular": 0, "regular_ratio": None, "silent": False}],
    "coverage": {"A": True},
    "per_device": [{"device": "7", "school": "0210001A", "kind": "laptop", "last_seen": 1772400000.0,
                    "active_today_s": 1200.0}],
}


def rendered(body: snap.FleetSnapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    fleet = FleetCollector()
    fleet.snapshot, fleet.computed_at = body, 1772400000.0
    registry = CollectorRegistry()
    registry.register(fleet)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_snapshot_stored_by_the_untyped_version_still_renders() -> None:
    body = snap.decode(json.dumps(STORED_BEFORE))
    assert body.today == date(2026, 3, 2) and body.peripherals == [] and body.google is None
    got = rendered(body)
    laptop = (("kind", "laptop"), ("school", "0210001A"))
    assert got[("tice_devices_enrolled", laptop)] == 3
    assert got[("tice_devices_seen_last_day", laptop)] == 2
    assert got[("tice_devices_never_seen", laptop)] == 1
    assert got[("tice_devices_used_today", laptop)] == 1
    assert got[("tice_devices_judged", laptop)] == 0  # absent before: a count of none
    assert got[("tice_device_active_today_seconds",
                (("device", "7"), ("kind", "laptop"), ("school", "0210001A")))] == 1200.0


def test_the_json_form_keeps_its_field_names_and_round_trips() -> None:
    body = snap.FleetSnapshot(
        today=date(2026, 3, 2), devices=[], kinds=[snap.KindFigures("0210001A", "laptop", enrolled=2)],
        schools=[], coverage={"A": False}, per_device=[],
        peripherals=[snap.ModemFigures(peripheral="p1", school="0210001A", host="7", reading_at=None, connected=True,
                                       signal=("rsrp", -95.0), connected_today_s=60.0, technology="lte",
                                       month_bytes=10, quota_ratio=None),
                     snap.DiskFigures(peripheral="p2", school="0210001A", host="7", reading_at=None,
                                      last_connected=None, smart_ok=True, free_bytes=1, size_bytes=2)],
        google=snap.GoogleFigures(sync=snap.GoogleSync(devices_seen=4), models={"m": 1.0}, expiry=[]))
    stored = json.loads(snap.encode(body))
    assert stored["today"] == "2026-03-02"
    assert stored["kinds"][0]["enrolled"] == 2 and stored["kinds"][0]["used_out_of_hours_today"] == 0
    assert [p["kind"] for p in stored["peripherals"]] == ["modem", "disk"]
    assert stored["google"]["sync"]["devices_seen"] == 4
    assert snap.decode(snap.encode(body)) == body
    got = rendered(body)
    assert got[("tice_modem_connected", (("peripheral", "p1"), ("school", "0210001A")))] == 1
    assert got[("tice_google_devices_seen", ())] == 4


def test_a_stored_field_of_the_wrong_type_is_named() -> None:
    bad = {**STORED_BEFORE, "kinds": [{"school": "0210001A", "kind": "laptop", "enrolled": "three"}]}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.kinds\[0\]\.enrolled"):
        snap.decode(json.dumps(bad))


@pytest.mark.slow  # a mypy run: seconds
def test_a_misspelt_figure_fails_the_type_check(tmp_path: Path) -> None:
    code = tmp_path / "reader.py"
    code.write_text(textwrap.dedent("""
        from tice_collector.snapshot import FleetSnapshot

        def enrolled(body: FleetSnapshot) -> int:
            return sum(row.enroled for row in body.kinds)
    """))
    out, _, status = mypy_api.run([str(code), "--no-incremental", "--follow-imports=silent",
                                   "--config-file", str(ROOT / "pyproject.toml")])
    assert status == 1 and '"KindFigures" has no attribute "enroled"' in out, out
