"""Records that cannot be true, and bodies that repeat a key, as the door sees them."""

from __future__ import annotations

import json
import typing
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from tice_collector import jsonkeys
from tice_wire import (
    MAX_INTERVAL_S,
    PARTS_TOLERANCE_S,
    RECORD_TYPES,
    Batch,
    Display,
    Health,
    Implausible,
    Modem,
    Part,
    ProbeStatus,
    Projector,
    Usage,
    encode,
)

AT = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


def test_parts_of_an_interval_add_up_to_at_most_its_duration():
    # The first case: 3600 s of activity in a 60 s interval.
    bad = Usage(seq=1, at=AT, duration_s=60, active_s=3600).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("active_s", "parts_exceed_interval")
    assert "active_s + idle_s + locked_s + no_session_s + unclassified_s = 3600 s" in bad.detail
    # Each part alone fits, their sum does not: the largest is blamed.
    bad = Usage(seq=1, at=AT, duration_s=60, active_s=20, idle_s=20, locked_s=5, no_session_s=5,
                unclassified_s=40).implausible()
    assert bad is not None and bad.field == "unclassified_s"
    # The rounding tolerance: up to duration + 1 s passes, beyond it does not.
    assert Usage(seq=1, at=AT, duration_s=60, active_s=30.5, idle_s=30.5).implausible() is None
    assert PARTS_TOLERANCE_S == 1.0
    assert Usage(seq=1, at=AT, duration_s=60, active_s=30.5, idle_s=30.51).implausible() is not None
    assert Usage(seq=1, at=AT, duration_s=60, active_s=42, idle_s=18).implausible() is None


def test_an_interval_is_at_most_7500_s():
    # The second case: one record of 31 days.
    bad = Usage(seq=1, at=AT, duration_s=31 * 86400, active_s=31 * 86400).implausible()
    assert bad == Implausible("duration_s", "interval_too_long",
                              "duration_s 2.6784e+06 s is longer than the longest interval a record may cover "
                              "(7500 s)")
    assert MAX_INTERVAL_S == 7500  # twice the longest configurable report interval (3,600 s), plus 300 s
    assert Usage(seq=1, at=AT, duration_s=7500, active_s=7500).implausible() is None
    assert Usage(seq=1, at=AT, duration_s=7500.001, active_s=0).implausible() is not None


def test_display_modem_and_projector_intervals():
    assert Display(seq=1, at=AT, duration_s=60, external_s=61, external_connected=True).implausible() is None
    bad = Display(seq=1, at=AT, duration_s=60, external_s=3600, external_connected=True).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("external_s", "parts_exceed_interval")
    bad = Display(seq=1, at=AT, duration_s=86400, external_s=0, external_connected=False).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("duration_s", "interval_too_long")
    bad = Modem(seq=1, at=AT, up=True, connected_s=600, duration_s=60).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("connected_s", "parts_exceed_interval")
    # Without a duration, connected_s alone is bounded by the longest interval.
    bad = Modem(seq=1, at=AT, up=True, connected_s=7501).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("connected_s", "interval_too_long")
    assert Modem(seq=1, at=AT, up=True, connected_s=60).implausible() is None
    assert Modem(seq=1, at=AT, up=False).implausible() is None
    bad = Projector(seq=1, at=AT, up=True, duration_s=7501).implausible()
    assert bad is not None and (bad.field, bad.reason) == ("duration_s", "interval_too_long")
    assert Projector(seq=1, at=AT, up=True).implausible() is None


def _part_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [name for name, hint in hints.items() if hint in (Part, Part | None)]


# The smallest valid value of each required field, to build any record type.
REQUIRED = {"seq": 1, "at": AT, "duration_s": 60.0, "active_s": 0.0, "external_s": 0.0, "up": True,
            "external_connected": True, "interface": "wifi", "link_up": True, "present": True, "probe": "p",
            "ok": True}


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)
def test_every_seconds_within_an_interval_field_is_checked(cls):
    """Any field typed `Part` (seconds within an interval) beyond its 60 s interval is refused."""
    base = {f.name: REQUIRED[f.name] for f in msgspec.structs.fields(cls) if f.required}
    if "duration_s" in cls.__struct_fields__:
        base["duration_s"] = 60.0
    assert cls(**base).implausible() is None
    for name in _part_fields(cls):
        bad = cls(**{**base, name: 60.0 + 2 * PARTS_TOLERANCE_S}).implausible()
        assert bad is not None and (bad.field, bad.reason) == (name, "parts_exceed_interval"), name


def test_the_parts_are_the_ones_the_wire_declares():
    assert _part_fields(Usage) == ["active_s", "idle_s", "locked_s", "no_session_s", "unclassified_s"]
    assert _part_fields(Display) == ["external_s"] and _part_fields(Modem) == ["connected_s"]


# ---------------------------------------------------------------- repeated keys

def _batch(records: list) -> bytes:
    return encode(Batch(device_id=uuid.uuid4(), spool=uuid.uuid4(), sent_at=AT, records=records, agent_version="t"))


def test_the_agents_own_body_needs_no_second_parse(tmp_path):
    """What the agent sends (spool rows embedded in its batch) is byte for byte the canonical
    encoding of what the collector decodes: the repeated-key check costs one encode, no parse."""
    from tice_agent.sender import _OutBatch
    from tice_agent.spool import Spool

    spool = Spool(tmp_path / "s.sqlite")
    spool.add([Usage(seq=0, at=AT, duration_s=60.012, active_s=41.5, idle_s=18.512, source="x11"),
               Display(seq=0, at=AT, duration_s=60.004, external_s=0.0, external_connected=False, displays=1),
               Health(seq=0, at=AT, cpu_load_ratio=0.25, memory_used_ratio=0.5, disk_free_bytes=10**9,
                      disk_total_bytes=10**10, uptime_s=3600.5),
               ProbeStatus(seq=0, at=AT, probe="usage", ok=True, duration_s=0.012)])
    bodies = spool.begin_batch(10, 1 << 20).bodies
    body = msgspec.json.encode(_OutBatch(device_id=uuid.uuid4(), spool=spool.spool_id, sent_at=AT,
                                         records=[msgspec.Raw(b) for b in bodies], dropped=0, agent_version="0.1"))
    spool.close()
    decoded = msgspec.json.decode(body, type=Batch)
    assert encode(decoded) == body
    jsonkeys.check(body, encode(decoded))


def test_a_repeated_key_is_found_with_the_object_it_is_in():
    # The fourth case: "active_s": 42, "active_s": 86400 (msgspec keeps the last).
    good = json.loads(_batch([Usage(seq=i, at=AT, duration_s=60.0, active_s=1.0) for i in range(3)]))
    body = json.dumps(good).replace('"active_s": 1.0', '"active_s": 42, "active_s": 86400', 1).encode()
    decoded = msgspec.json.decode(body, type=Batch)
    assert decoded.records[0].active_s == 86400  # what msgspec alone would have stored
    with pytest.raises(jsonkeys.RepeatedKey) as info:
        jsonkeys.check(body, encode(decoded))
    assert (info.value.key, info.value.index) == ("active_s", 0)
    # In the third record, and in the batch itself (its object closes after its 3 records).
    third = json.dumps(good).replace('"seq": 2', '"seq": 2, "seq": 2').encode()
    with pytest.raises(jsonkeys.RepeatedKey) as info:
        jsonkeys.check(third, b"")
    assert (info.value.key, info.value.index) == ("seq", 2)
    envelope = json.dumps(good).replace('"dropped": 0', '"dropped": 0, "dropped": 0').encode()
    with pytest.raises(jsonkeys.RepeatedKey) as info:
        jsonkeys.check(envelope, b"")
    assert (info.value.key, info.value.index) == ("dropped", 3)
    # The same document with each key once, written differently (spaces), passes the slow path.
    jsonkeys.check(json.dumps(good, indent=1).encode(), b"")
