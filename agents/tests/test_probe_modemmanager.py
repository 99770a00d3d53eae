"""The modemmanager probe: mmcli -J parsers on captured answers (unset "--", garbled values), and
the probe over a scripted mmcli: signal set-up, bearers, intervals, re-plug at a new index."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent_testing import Clock, roundtrip
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes._run import CommandError, DeviceErrors, ParseError
from tice_agent.probes.modemmanager import (
    ModemManagerProbe,
    parse_bearer,
    parse_modem,
    parse_modem_list,
    parse_signal,
    pick_bearer,
)

FIX = Path(__file__).resolve().parent / "fixtures" / "modemmanager"
SALT = "7e" * 32
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
M0, M1 = "/org/freedesktop/ModemManager1/Modem/0", "/org/freedesktop/ModemManager1/Modem/1"
B1 = "/org/freedesktop/ModemManager1/Bearer/1"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# ---------------------------------------------------------------- parsers

def test_modem_list():
    assert parse_modem_list(fixture("list-one.json")) == [M0]
    assert parse_modem_list(fixture("list-none.json")) == []
    with pytest.raises(ParseError, match="mmcli -L: expected mmcli JSON, got \"error: couldn't find modem\""):
        parse_modem_list(fixture("not-json.txt"))
    with pytest.raises(ParseError, match="expected a 'modem-list' object"):
        parse_modem_list('{"modems": []}')


def test_connected_modem():
    assert parse_modem(fixture("modem-connected.json")) == {
        "equipment_id": "353338976100015", "state": "connected", "technology": "lte", "signal_ratio": 0.75,
        "plmn": "20801", "roaming": False, "bearers": [B1]}


def test_unset_values_and_other_states():
    disabled = parse_modem(fixture("modem-disabled.json"))
    assert disabled == {"equipment_id": "866680040100012", "state": "disabled", "technology": None,
                        "signal_ratio": None, "plmn": None, "roaming": None, "bearers": []}
    assert parse_modem(fixture("modem-locked.json"))["state"] == "locked"
    roaming = parse_modem(fixture("modem-roaming-3g.json"))
    assert (roaming["state"], roaming["technology"], roaming["roaming"], roaming["plmn"]) == (
        "registered", "hsupa", True, "26202")  # the best of umts, hsdpa, hsupa
    failed = parse_modem(fixture("modem-failed.json"))
    assert failed["state"] == "failed" and failed["equipment_id"] is None  # "--": no identity


def test_garbled_modem_values_name_their_key():
    text = json.loads(fixture("modem-garbled.json"))
    with pytest.raises(ParseError, match=re.escape("modem.generic.access-technologies: expected a list")):
        parse_modem(json.dumps(text))
    text["modem"]["generic"]["access-technologies"] = ["lte"]
    with pytest.raises(ParseError, match=re.escape("modem.generic.signal-quality.value: expected a number, got 'lots'")):
        parse_modem(json.dumps(text))
    text["modem"]["generic"]["signal-quality"]["value"] = "50"
    with pytest.raises(ParseError, match=re.escape("modem.3gpp.operator-code: expected MCC+MNC digits, got 'Orange'")):
        parse_modem(json.dumps(text))


def test_signal():
    assert parse_signal(fixture("signal-lte.json")) == (
        {"rssi_dbm": -69.0, "rsrp_dbm": -104.0, "rsrq_db": -14.0, "sinr_db": 2.0}, True)
    assert parse_signal(fixture("signal-umts.json")) == (
        {"rssi_dbm": -79.0, "rsrp_dbm": None, "rsrq_db": None, "sinr_db": None}, True)
    assert parse_signal(fixture("signal-not-set-up.json")) == (
        {"rssi_dbm": None, "rsrp_dbm": None, "rsrq_db": None, "sinr_db": None}, False)


def test_bearers():
    connected = parse_bearer(fixture("bearer-connected.json"))
    assert connected == {"connected": True, "session_s": 4210, "session_rx_bytes": 48211022,
                         "session_tx_bytes": 3102911, "total_connected_s": 98410, "total_rx_bytes": 901223004,
                         "total_tx_bytes": 61200233}
    down = parse_bearer(fixture("bearer-disconnected.json"))
    assert down["connected"] is False and set(down.values()) == {False, None}
    old = parse_bearer(fixture("bearer-old-mm.json"))
    assert (old["session_rx_bytes"], old["session_s"], old["total_rx_bytes"]) == (1200, 65, None)
    assert pick_bearer([down, connected])["session_rx_bytes"] == 48211022
    assert pick_bearer([down]) == {}
    with pytest.raises(ParseError, match=re.escape("bearer.stats.bytes-rx: expected a count")):
        parse_bearer('{"bearer": {"stats": {"bytes-rx": "-5"}}}')


# ---------------------------------------------------------------- the probe over a scripted mmcli

class Mmcli:
    """Answers mmcli command lines from fixtures; records them."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, ...], str] = {}
        self.calls: list[tuple[str, ...]] = []

    def modem(self, path: str, modem: str = "modem-connected.json", signal: str = "signal-lte.json",
              bearer: str | None = "bearer-connected.json") -> None:
        self.answers[("-m", path, "-J")] = fixture(modem)
        self.answers[("-m", path, "--signal-get", "-J")] = fixture(signal)
        if bearer:
            self.answers[("-b", B1, "-J")] = fixture(bearer)

    def list(self, *paths: str) -> None:
        self.answers[("-L", "-J")] = json.dumps({"modem-list": list(paths)})

    async def __call__(self, argv: list[str], timeout: float) -> str:
        assert argv[0] == "mmcli"
        args = tuple(argv[1:])
        self.calls.append(args)
        if args[-1].startswith("--signal-setup="):
            return "successfully setup extended signal quality information\n"
        if args not in self.answers:
            raise CommandError("mmcli: exit 1: error: couldn't find modem")
        return self.answers[args]


def probe_for(mmcli: Mmcli, clock: Clock) -> ModemManagerProbe:
    wall = iter(NOW + timedelta(seconds=60 * i) for i in range(1000))
    return ModemManagerProbe(id_salt=SALT, run=mmcli, clock=clock, now=lambda: next(wall))


async def test_a_connected_key_then_an_interval():
    mmcli, clock = Mmcli(), Clock()
    mmcli.list(M0)
    mmcli.modem(M0)
    probe = probe_for(mmcli, clock)
    [first] = roundtrip(await probe.collect())
    assert first.up and first.state == "connected" and first.technology == "lte" and first.signal_ratio == 0.75
    assert (first.rssi_dbm, first.rsrp_dbm, first.rsrq_db, first.sinr_db) == (-69.0, -104.0, -14.0, 2.0)
    assert (first.session_s, first.total_rx_bytes) == (4210, 901223004) and first.duration_s is None
    assert first.modem_id == peripheral_id(SALT, "modem", "353338976100015")
    sent = msgspec.json.encode(first)
    assert b"353338976100015" not in sent and b"33612345678" not in sent  # no IMEI, no own number
    bearer = json.loads(fixture("bearer-connected.json"))
    stats = bearer["bearer"]["stats"]
    for key, grow in (("duration", 60), ("total-duration", 60), ("bytes-rx", 5000), ("total-bytes-rx", 5000),
                      ("bytes-tx", 700), ("total-bytes-tx", 700)):
        stats[key] = str(int(stats[key]) + grow)
    mmcli.answers[("-b", B1, "-J")] = json.dumps(bearer)
    clock.t += 60
    [second] = roundtrip(await probe.collect())
    assert (second.duration_s, second.connected_s, second.rx_bytes, second.tx_bytes) == (60, 60, 5000, 700)
    assert second.at == first.at


async def test_signal_is_set_up_once_and_again_after_a_replug_at_a_new_index():
    mmcli, clock = Mmcli(), Clock()
    mmcli.list(M0)
    mmcli.modem(M0, signal="signal-not-set-up.json")
    probe = probe_for(mmcli, clock)
    [first] = await probe.collect()
    assert first.rsrp_dbm is None
    await probe.collect()
    setups = [c for c in mmcli.calls if c[-1] == "--signal-setup=30"]
    assert setups == [("-m", M0, "--signal-setup=30")]  # asked once, not every poll
    # Unplugged: reported down once, by its identity.
    mmcli.list()
    [gone] = roundtrip(await probe.collect())
    assert not gone.up and gone.modem_id == first.modem_id
    assert await probe.collect() == []
    # Plugged back: a new index, the same identity, signal set up again, no interval across the gap.
    mmcli.list(M1)
    mmcli.modem(M1, signal="signal-not-set-up.json")
    clock.t += 60
    [back] = await probe.collect()
    assert back.up and back.modem_id == first.modem_id and back.duration_s is None
    assert ("-m", M1, "--signal-setup=30") in mmcli.calls


async def test_a_modem_without_identity_disabled_locked_and_garbled():
    mmcli = Mmcli()
    mmcli.list(M0, M1, "/org/freedesktop/ModemManager1/Modem/2")
    mmcli.modem(M0, modem="modem-failed.json", bearer=None)
    mmcli.modem(M1, modem="modem-locked.json", bearer=None)
    mmcli.answers[("-m", "/org/freedesktop/ModemManager1/Modem/2", "-J")] = fixture("modem-garbled.json")
    with pytest.raises(DeviceErrors, match=re.escape("2: modem.generic.access-technologies: expected a list")) as info:
        await probe_for(mmcli, Clock()).collect()
    failed, locked = roundtrip(info.value.records)
    assert failed.state == "failed" and failed.modem_id is None
    assert locked.state == "locked" and locked.modem_id is not None


async def test_no_modem_is_no_record_and_a_missing_mmcli_is_an_error():
    mmcli = Mmcli()
    mmcli.list()
    assert await probe_for(mmcli, Clock()).collect() == []
    with pytest.raises(CommandError, match="no-such-mmcli: not installed"):
        await ModemManagerProbe(mmcli="no-such-mmcli").collect()


def test_options_are_checked():
    with pytest.raises(ValueError, match="signal_rate_s must be between 0 and 3600"):
        ModemManagerProbe(signal_rate_s=-1)
    with pytest.raises(ValueError, match="id_salt"):
        ModemManagerProbe(id_salt="xyz")
