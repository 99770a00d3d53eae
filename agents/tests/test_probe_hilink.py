"""The hilink probe: parsers on captured answers (every error and empty form), then the real probe
against the HiLink simulator over loopback HTTP: sessions, logins, faults and the interval."""

from __future__ import annotations

import logging
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent_testing import Clock, roundtrip
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes._modem import interval_fields
from tice_agent.probes._run import DeviceErrors, ParseError
from tice_agent.probes.hilink import (
    HiLinkError,
    HiLinkProbe,
    encode_password,
    parse_answer,
    parse_imei,
    parse_level,
    parse_plmn,
    parse_signal,
    parse_status,
    parse_traffic,
)
from tice_agent.simulators.hilink import HiLinkSimulator, Key
from tice_wire import Modem

FIX = Path(__file__).resolve().parent / "fixtures" / "hilink"
SALT = "5a" * 32
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


def answer(name: str) -> dict[str, str]:
    return parse_answer((FIX / name).read_bytes(), name)


# ---------------------------------------------------------------- parsers

def test_status_lte_connected():
    assert parse_status(answer("status-lte-connected.xml")) == {
        "state": "connected", "technology": "lte", "bars": 4, "signal_ratio": None, "roaming": False}


def test_status_variants():
    assert parse_status(answer("status-dc-hspa-roaming.xml")) == {
        "state": "connected", "technology": "hspa+", "bars": 5, "signal_ratio": 0.8, "roaming": True}
    # Old firmware: no CurrentNetworkTypeEx, the plain code 9 is HSPA+.
    assert parse_status(answer("status-old-firmware.xml"))["technology"] == "hspa+"
    assert parse_status(answer("status-no-service.xml")) == {
        "state": "disconnected", "technology": "none", "bars": 0, "signal_ratio": None, "roaming": False}
    assert parse_status(answer("status-data-limit.xml"))["state"] == "data_limit"
    assert parse_status(answer("status-profile-error.xml"))["state"] == "failed"
    assert parse_status(answer("status-empty.xml")) == {
        "state": "unknown", "technology": None, "bars": None, "signal_ratio": None, "roaming": None}


def test_status_codes_map_to_stable_names():
    def state(code: str) -> str:
        return parse_status({"ConnectionStatus": code})["state"]

    assert [state(c) for c in ("900", "901", "902", "903", "904", "905", "906", "201", "112", "33")] == [
        "connecting", "connected", "disconnected", "disconnecting", "failed", "unknown", "failed", "data_limit",
        "disconnected", "failed"]

    def tech(ex: str, plain: str = "") -> str | None:
        return parse_status({"CurrentNetworkTypeEx": ex, "CurrentNetworkType": plain})["technology"]

    assert [tech(c) for c in ("0", "1", "2", "3", "41", "42", "43", "44", "45", "46", "62", "101", "1011", "111")] == [
        "none", "gsm", "gprs", "edge", "umts", "hsdpa", "hsupa", "hspa", "hspa+", "hspa+", "hsdpa", "lte", "lte",
        "5gnr"]
    assert tech("", "19") == "lte" and tech("", "4") == "umts" and tech("", "17") == "hspa+"
    assert tech("777") == "unknown" and tech("", "13") == "unknown"  # CDMA 1xRTT: not a stable name of ours


def test_signal_levels_with_units_bounds_and_empty_tags():
    assert parse_signal(answer("signal-lte.xml")) == {"rssi_dbm": -71.0, "rsrp_dbm": -105.0, "rsrq_db": -14.0,
                                                      "sinr_db": -7.0}
    # End-of-scale readings: ">=-51dBm" is the bound itself.
    assert parse_signal(answer("signal-strong.xml")) == {"rssi_dbm": -51.0, "rsrp_dbm": -76.0, "rsrq_db": -8.0,
                                                         "sinr_db": 30.0}
    # 3G: the LTE tags are empty.
    assert parse_signal(answer("signal-3g.xml")) == {"rssi_dbm": -69.0, "rsrp_dbm": None, "rsrq_db": None,
                                                     "sinr_db": None}
    assert parse_signal(answer("signal-no-service.xml")) == {"rssi_dbm": None, "rsrp_dbm": None, "rsrq_db": None,
                                                             "sinr_db": None}
    with pytest.raises(ParseError, match="device/signal rsrp: expected a level like -105dBm, got 'very weak'"):
        parse_signal(answer("signal-garbled.xml"))


@pytest.mark.parametrize(("text", "value"), [
    ("-105dBm", -105.0), (">=-51dBm", -51.0), ("<=-140dBm", -140.0), ("-14.0dB", -14.0), ("-7dB", -7.0),
    ("12", 12.0), ("  -3 dB ", -3.0), ("", None), (None, None), ("--", None), ("Unknown", None)])
def test_parse_level(text, value):
    assert parse_level(text, "x") == value


def test_traffic_counters():
    assert parse_traffic(answer("traffic.xml")) == {
        "session_s": 170010, "session_rx_bytes": 9845754134, "session_tx_bytes": 318170852,
        "total_connected_s": 175243, "total_rx_bytes": 10211903746, "total_tx_bytes": 350674492}
    assert set(parse_traffic(answer("traffic-cleared.xml")).values()) == {0}
    with pytest.raises(ParseError, match="CurrentUpload is negative: -1"):
        parse_traffic(answer("traffic-negative.xml"))


def test_plmn_and_imei_only():
    assert parse_plmn(answer("plmn.xml")) == "20801"
    assert parse_plmn(answer("plmn-unregistered.xml")) is None
    with pytest.raises(ParseError, match="not an operator code: 'Orange'"):
        parse_plmn({"Numeric": "Orange"})
    info = answer("information.xml")
    assert parse_imei(info) == "864537030000017"
    assert parse_imei({}) is None


@pytest.mark.parametrize("code", [100002, 100003, 100004, 125002, 125003, 108006, 108007])
def test_every_error_code_is_a_hilink_error(code):
    with pytest.raises(HiLinkError) as info:
        answer(f"error-{code}.xml")
    assert info.value.code == code and str(code) in str(info.value)


@pytest.mark.parametrize(("name", "message"), [
    ("redirect-page.html", r"expected a HiLink XML answer, got an HTML page \(\d+ bytes\)"),
    ("truncated.xml", r"expected a HiLink XML answer, got XML cut short or not well-formed \(\d+ bytes\)"),
    ("entity.xml", r"expected a HiLink XML answer, got XML declaring a DOCTYPE or entities, refused"),
])
def test_garbage_is_a_parse_error(name, message):
    with pytest.raises(ParseError, match=message):
        answer(name)


def test_ok_and_session_answers():
    assert answer("ok.xml") == {}
    assert answer("sestokinfo.xml")["TokInfo"] == "Vccg5QdWEvTYgNyoX9w1/p5IPR3cZlOp"
    with pytest.raises(ParseError, match=r"expected a HiLink XML answer, got a <request> document \(27 bytes\)"):
        parse_answer("<request><a>1</a></request>", "x")
    with pytest.raises(ParseError, match=r"got an empty answer"):
        parse_answer(b"", "x")


# The fake identity in the fixtures (fixtures/hilink/README.md) and its pieces: never in an error.
IDENTITY = ("864537030000017", "208011234567890", "89330112345678901234", "+33612345678", "G4PDW17A12345678",
            "0C:5B:8F:27:9A:64")


def assert_no_identity(text: str) -> None:
    assert not re.search(r"\d{6}", text), text
    for value in IDENTITY:
        assert value[:8] not in text and value[-6:] not in text, (value, text)


def test_a_cut_short_information_answer_is_never_quoted():
    """The newcomer's case: an answer cut inside <Iccid> put the IMSI and the ICCID's start
    into the error text, which is sent. Cut at every byte: the error never holds any of it."""
    body = (FIX / "information.xml").read_bytes()
    assert b"208011234567890" in body
    for cut in range(1, len(body) - len(b"</response>\n")):
        with pytest.raises(ParseError) as info:
            parse_answer(body[:cut], "device/information")
        message = str(info.value)
        assert message.startswith("device/information: expected a HiLink XML answer, got ")
        assert_no_identity(message)
    with pytest.raises(ParseError) as info:
        parse_answer("<response><Imsi>208011234567890</Imsi><Iccid>893301123456789", "device/information")
    assert str(info.value) == ("device/information: expected a HiLink XML answer, got XML cut short or not "
                               "well-formed (60 bytes)")


def test_no_error_quotes_an_answer_from_any_endpoint():
    """Every endpoint the probe reads, garbled in the ways a field can be: whatever text the
    error quotes, identifiers are masked."""
    for where in ("monitoring/status", "monitoring/traffic-statistics", "device/signal", "net/current-plmn",
                  "device/information", "webserver/SesTokInfo", "user/state-login"):
        for bad in ("<html><body>IMSI 208011234567890</body></html>", "208011234567890",
                    "<other><Msisdn>+33612345678</Msisdn></other>",
                    "<error><code>+33612345678 x</code></error>"):
            with pytest.raises(ParseError) as info:
                parse_answer(bad, where)
            assert_no_identity(str(info.value))
    with pytest.raises(ParseError) as info:
        parse_status({"ConnectionStatus": "+33 6 12 34 56 78"})
    assert_no_identity(str(info.value))
    with pytest.raises(ParseError) as info:
        parse_plmn({"Numeric": "208011234567890"})
    assert str(info.value) == "net/current-plmn: Numeric is not an operator code: '[15 digits]'"


def test_password_encoding_matches_huawei_lte_api():
    # Expected values computed with huawei-lte-api 2.0.1 (User._encode_password) for this token.
    token = "Vccg5QdWEvTYgNyoX9w1/p5IPR3cZlOp"
    assert encode_password("admin", "s3cret", token, 4) == (
        "MTBmNjc5MjJjYmM2YjFiNjFkYjA0YzAyODY3M2VhMDAyZWM1MzVhMTVhZWRlN2UzOGZmZmQyYTRiZDBjNDI4MQ==")
    assert encode_password("admin", "s3cret", token, 0) == "czNjcmV0"


def test_interval_parts_never_exceed_the_interval():
    rng = random.Random(11)
    for _ in range(2000):
        before = {"total_rx_bytes": rng.randint(0, 10**6), "total_tx_bytes": rng.randint(0, 10**6),
                  "session_rx_bytes": rng.randint(0, 10**5), "session_tx_bytes": rng.randint(0, 10**5)}
        now = {k: rng.choice([v + rng.randint(0, 10**5), rng.randint(0, 10**4)]) for k, v in before.items()}
        now["session_s"] = rng.choice([None, rng.uniform(0, 10**6)])
        state = rng.choice(["connected", "disconnected", "data_limit"])
        out = interval_fields((100.0, NOW, "k", before), 100.0 + rng.uniform(0, 200), "k", state, now)
        assert out["connected_s"] is None or 0 <= out["connected_s"] <= out["duration_s"]
        assert out["rx_bytes"] >= 0 and out["tx_bytes"] >= 0
    assert interval_fields(None, 5.0, "k", "connected", {}) == {}
    assert interval_fields((0.0, NOW, "other", {}), 60.0, "k", "connected", {}) == {}  # another key: no delta


# ---------------------------------------------------------------- the probe against the simulator

@pytest.fixture
async def sim():
    simulator = await HiLinkSimulator(Key(rx_rate=1000.0, tx_rate=100.0)).start()
    yield simulator
    await simulator.stop()


def probe_for(simulator: HiLinkSimulator, clock: Clock, **options) -> HiLinkProbe:
    wall = iter(NOW + timedelta(seconds=60 * i) for i in range(1000))
    return HiLinkProbe(url=simulator.url, id_salt=SALT, clock=clock, now=lambda: next(wall), **options)


async def test_a_reading_and_an_interval(sim):
    clock = Clock()
    probe = probe_for(sim, clock)
    [first] = roundtrip(await probe.collect())
    assert isinstance(first, Modem)
    assert first.up and first.state == "connected" and first.technology == "lte" and first.bars == 4
    assert (first.rssi_dbm, first.rsrp_dbm, first.rsrq_db, first.sinr_db) == (-71.0, -105.0, -14.0, -7.0)
    assert first.plmn == "20801" and first.roaming is False
    assert first.modem_id == peripheral_id(SALT, "modem", "864537030000017")
    assert first.duration_s is None and first.connected_s is None and first.rx_bytes is None  # no interval yet
    sim.key.advance(60)
    clock.t += 60
    [second] = roundtrip(await probe.collect())
    assert second.at == first.at + timedelta(seconds=0) and second.duration_s == 60
    assert second.connected_s == 60 and (second.rx_bytes, second.tx_bytes) == (60_000, 6_000)
    assert (second.session_rx_bytes, second.total_rx_bytes, second.total_connected_s) == (60_000, 60_000, 60)
    # Connected only for the last 20 s of the next minute: the part stays inside the interval.
    sim.key.disconnect()
    sim.key.connect()
    sim.key.advance(20)
    clock.t += 60
    [third] = roundtrip(await probe.collect())
    assert third.duration_s == 60 and third.connected_s == 20 and third.rx_bytes == 20_000


async def test_session_expiry_is_healed_by_a_new_handshake(sim):
    clock = Clock()
    probe = probe_for(sim, clock)
    await probe.collect()
    sim.expire_sessions()
    sim.key.advance(30)
    clock.t += 30
    [reading] = await probe.collect()
    assert reading.up and reading.state == "connected" and reading.rx_bytes == 30_000
    assert probe.client.handshakes == 2
    # The second handshake came after the key answered 125002 to our old session.
    assert sum(1 for m, p, *_ in sim.requests if p == "/api/monitoring/status") == 3


async def test_newer_firmware_token_api_and_csrf_page(sim):
    sim.key.ses_tok_info = False
    [reading] = await probe_for(sim, Clock()).collect()
    assert reading.up and reading.state == "connected"
    sim.key.ses_tok_info, sim.key.csrf_in_page, sim.key.password = True, True, "pw-12345"
    [reading] = await probe_for(sim, Clock(), password="pw-12345").collect()
    assert reading.modem_id is not None  # logged in with a token taken from the page
    sim.key.home_page = False  # no home page: SesTokInfo gives the session cookie itself
    [reading] = await probe_for(sim, Clock(), password="pw-12345").collect()
    assert reading.up and reading.modem_id is not None


async def test_login_when_the_key_asks_and_the_password_never_shows(sim, caplog):
    caplog.set_level(logging.DEBUG)
    password = "Tr0ub4dor-unique"
    sim.key.password = password
    probe = probe_for(sim, Clock(), password=password)
    [reading] = await probe.collect()
    assert reading.modem_id == peripheral_id(SALT, "modem", sim.key.imei) and probe.client.logins == 1
    logins = [b for m, p, h, b in sim.requests if p == "/api/user/login"]
    assert len(logins) == 1 and password.encode() not in logins[0]  # sent as the SHA-256 encoding only
    sent = msgspec.json.encode(reading)
    assert password.encode() not in sent and password not in caplog.text


async def test_without_the_password_the_identity_is_missing_and_said_once(sim, caplog):
    sim.key.password = "pw-12345"
    probe = probe_for(sim, Clock())
    [first] = await probe.collect()
    [second] = await probe.collect()
    assert first.up and first.modem_id is None and second.modem_id is None
    assert first.rsrp_dbm == -105.0  # the rest of the reading is there
    assert caplog.text.count("device/information: error 100003 (login required)") == 1
    assert "set the key's password" in caplog.text


async def test_a_wrong_password_keeps_the_reading_reports_and_is_not_retried_at_once(sim, caplog):
    caplog.set_level(logging.DEBUG)
    sim.key.password = "the-right-one"
    clock = Clock()
    probe = probe_for(sim, clock, password="a-wrong-one")
    for _ in range(3):
        with pytest.raises(DeviceErrors) as info:
            await probe.collect()
        [reading] = info.value.records
        assert reading.up and reading.state == "connected" and reading.modem_id is None
        assert "108006 (wrong user name or password)" in str(info.value)
        clock.t += 60
    assert probe.client.logins == 1 and sim.login_failures == 1  # the key never locks us out
    clock.t += 3600
    with pytest.raises(DeviceErrors):
        await probe.collect()
    assert probe.client.logins == 2
    assert "a-wrong-one" not in caplog.text and "a-wrong-one" not in str(info.value)


async def test_an_unplugged_key_or_a_cut_link_is_data(sim):
    probe = probe_for(sim, Clock())
    [seen] = await probe.collect()
    sim.key.cut = True
    [cut] = roundtrip(await probe.collect())
    assert not cut.up and cut.modem_id == seen.modem_id and cut.state == "unknown"
    sim.key.cut = False
    await sim.unplug()
    [gone] = roundtrip(await probe.collect())
    assert not gone.up and gone.modem_id == seen.modem_id
    await sim.plug()
    [back] = await probe.collect()
    assert back.up and back.duration_s is None  # no interval across an absence


@pytest.mark.slow  # waits out the probe's timeout
async def test_a_slow_key_times_out_as_not_answering(sim):
    sim.key.slow_s = 2.0
    [reading] = await probe_for(sim, Clock(), timeout_s=0.3).collect()
    assert not reading.up


async def test_garbage_busy_and_data_limit(sim):
    probe = probe_for(sim, Clock())
    sim.key.garbage = {"monitoring/status"}
    with pytest.raises(ParseError, match=r"monitoring/status: expected a HiLink XML answer, got an HTML page"):
        await probe.collect()
    sim.key.garbage = {"device/signal"}  # one part garbled: the rest is kept and the run reports it
    with pytest.raises(DeviceErrors, match="device/signal: expected a HiLink XML answer") as info:
        await probe.collect()
    [partial] = info.value.records
    assert partial.up and partial.state == "connected" and partial.rsrp_dbm is None and partial.plmn == "20801"
    sim.key.garbage = set()
    sim.key.errors = {"monitoring/status": 100004}
    with pytest.raises(HiLinkError, match=re.escape("monitoring/status: error 100004 (key busy)")):
        await probe.collect()
    sim.key.errors = {}
    sim.key.disconnect(201)
    [refused] = await probe.collect()
    assert refused.state == "data_limit" and refused.connected_s == 0


async def test_a_cut_short_information_answer_keeps_the_reading_and_no_identity(sim, caplog):
    """The key cuts `device/information` inside <Iccid>: the reading is kept (with the key's id
    from before), the run reports the part it missed, and the report holds no identity."""
    probe = probe_for(sim, Clock())
    [first] = await probe.collect()
    body = (FIX / "information.xml").read_text()
    sim.key.short = {"device/information": len(
        '<?xml version="1.0" encoding="UTF-8"?>\n') + body.index("<Iccid>") - body.index("<response>") + 15}
    with caplog.at_level(logging.DEBUG), pytest.raises(DeviceErrors) as info:
        await probe.collect()
    [partial] = info.value.records
    assert partial.up and partial.modem_id == first.modem_id == peripheral_id(SALT, "modem", sim.key.imei)
    assert str(info.value).startswith("device/information: expected a HiLink XML answer, got XML cut short")
    from tice_agent.runner import describe_error

    assert_no_identity(describe_error(info.value))
    assert_no_identity(caplog.text)


async def test_traffic_cleared_between_two_readings(sim):
    clock = Clock()
    probe = probe_for(sim, clock)
    sim.key.advance(100)
    await probe.collect()
    sim.key.clear_traffic()
    sim.key.advance(10)
    clock.t += 60
    [reading] = await probe.collect()
    assert reading.rx_bytes == 10_000 and reading.tx_bytes == 1_000  # counted from the reset, never negative


def test_options_are_checked():
    with pytest.raises(ValueError, match="url: expected http://address of the key"):
        HiLinkProbe(url="192.168.8.1")
    with pytest.raises(ValueError, match="id_salt: expected the 64 hex digits"):
        HiLinkProbe(id_salt="not-hex")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        HiLinkProbe(timeout_s=0)
