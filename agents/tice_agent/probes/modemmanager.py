"""modemmanager: 3G/4G keys in "stick" mode on Linux, read through ModemManager's `mmcli -J`.

A key in stick mode is a modem that ModemManager drives (a key in HiLink mode is a USB network
card instead: see the hilink probe). One poll: `mmcli -L -J` lists the modems; for each,
`mmcli -m <path> -J` (state, access technologies, signal quality, operator code, registration),
`mmcli -m <path> --signal-get -J` (RSSI/RSRP/RSRQ/SNR per radio technology; empty until
`--signal-setup=<rate>`, which the probe asks once per modem and again after a re-plug), and
`mmcli -b <bearer> -J` (the connection's byte and time counters). Every value is a string and
"--" means unset: each is parsed on its own, and a value that is neither is a ParseError naming
its key. Facts: ModemManager cli/mmcli-output.c and include/ModemManager-enums.h, captured
answers under agents/tests/fixtures/modemmanager/.

The modem index in the D-Bus path changes on every re-plug: modems are keyed by their equipment
identifier (the IMEI), which leaves the PC only as a salted hash. The SIM's numbers
(`own-numbers`, the SIM object) and the modem's location are never read.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from tice_agent.probes import register
from tice_agent.probes._identity import check_salt, peripheral_id, usable
from tice_agent.probes._modem import Previous, interval_fields
from tice_agent.probes._run import (
    CommandError,
    DeviceErrors,
    Monotonic,
    Now,
    ParseError,
    RunCmd,
    excerpt,
    run_cmd,
    utc_now,
)
from tice_wire import Modem, Record

log = logging.getLogger("tice.agent.probes.modemmanager")

UNSET = "--"
# MMModemState names -> the wire's (enabling/enabled: looking for a network).
STATES = {"failed": "failed", "unknown": "unknown", "initializing": "unknown", "locked": "locked",
          "disabled": "disabled", "disabling": "disabled", "enabling": "searching", "enabled": "searching",
          "searching": "searching", "registered": "registered", "disconnecting": "disconnecting",
          "connecting": "connecting", "connected": "connected"}
# MMModemAccessTechnology names, best first; a modem lists every one it uses (umts, hsdpa, hsupa).
TECHNOLOGIES = (("5gnr", "5gnr"), ("lte", "lte"), ("lte-cat-m", "lte"), ("lte-nb-iot", "lte"),
                ("hspa-plus", "hspa+"), ("hspa", "hspa"), ("hsupa", "hsupa"), ("hsdpa", "hsdpa"),
                ("umts", "umts"), ("edge", "edge"), ("gprs", "gprs"), ("gsm", "gsm"), ("gsm-compact", "gsm"))


def _json(text: str, what: str, top: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise ParseError(f"{what}: expected mmcli JSON, got {excerpt(text)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(top), (dict, list)):
        raise ParseError(f"{what}: expected a {top!r} object, got {excerpt(text)}")
    return doc


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)  # type: ignore[assignment]
    return doc


def _str(value: Any, key: str) -> str | None:
    """A string value; None for "--" or absent; ParseError for another JSON type."""
    if value is None or value == UNSET:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{key}: expected a string, got {excerpt(json.dumps(value), 30)}")
    return value.strip() or None


def _num(value: Any, key: str) -> float | None:
    text = _str(value, key)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ParseError(f"{key}: expected a number, got {excerpt(text, 30)}") from None


def _count(value: Any, key: str) -> int | None:
    n = _num(value, key)
    if n is None:
        return None
    if n < 0 or n != int(n):
        raise ParseError(f"{key}: expected a count, got {value!r}")
    return int(n)


def parse_modem_list(text: str) -> list[str]:
    """`mmcli -L -J` -> the modems' D-Bus paths (none is an empty list)."""
    paths = _json(text, "mmcli -L", "modem-list")["modem-list"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ParseError(f"mmcli -L: expected a list of modem paths, got {excerpt(text)}")
    return paths


def parse_modem(text: str) -> dict[str, Any]:
    """`mmcli -m N -J` -> equipment_id (raw, for the hash), state, technology, signal_ratio,
    plmn, roaming and bearer paths. Nothing else is read."""
    modem = _json(text, "mmcli -m", "modem")["modem"]
    generic = _get(modem, "generic") or {}
    state = _str(generic.get("state"), "modem.generic.state")
    techs = generic.get("access-technologies", [])
    if not isinstance(techs, list):
        raise ParseError(f"modem.generic.access-technologies: expected a list, got {excerpt(json.dumps(techs), 30)}")
    technology = next((wire for name, wire in TECHNOLOGIES if name in techs), "unknown" if techs else None)
    quality = _count(_get(generic, "signal-quality", "value"), "modem.generic.signal-quality.value")
    recent = _str(_get(generic, "signal-quality", "recent"), "modem.generic.signal-quality.recent")
    plmn = _str(_get(modem, "3gpp", "operator-code"), "modem.3gpp.operator-code")
    if plmn is not None and (not plmn.isdigit() or len(plmn) not in (5, 6)):
        raise ParseError(f"modem.3gpp.operator-code: expected MCC+MNC digits, got {excerpt(plmn, 20)}")
    registration = _str(_get(modem, "3gpp", "registration-state"), "modem.3gpp.registration-state")
    bearers = generic.get("bearers", [])
    return {
        "equipment_id": usable(_str(generic.get("equipment-identifier"), "modem.generic.equipment-identifier")),
        "state": STATES.get(state or "unknown", "unknown"),
        "technology": technology,
        # A reading that is not recent is a stale one: absent rather than wrong.
        "signal_ratio": None if quality is None or recent != "yes" else min(quality, 100) / 100,
        "plmn": plmn,
        "roaming": {"roaming": True, "home": False}.get(registration or ""),
        "bearers": [b for b in bearers if isinstance(b, str) and b != UNSET] if isinstance(bearers, list) else [],
    }


def parse_signal(text: str) -> tuple[dict[str, float | None], bool]:
    """`mmcli -m N --signal-get -J` -> (rssi/rsrp/rsrq/sinr of the best technology with values,
    whether extended signal is set up: a refresh rate of 0 means `--signal-setup` is needed)."""
    signal = _get(_json(text, "mmcli --signal-get", "modem"), "modem", "signal") or {}
    rate = _num(_get(signal, "refresh", "rate"), "modem.signal.refresh.rate")
    out: dict[str, float | None] = {"rssi_dbm": None, "rsrp_dbm": None, "rsrq_db": None, "sinr_db": None}
    for tech in ("5g", "lte", "umts", "gsm"):
        values = signal.get(tech) or {}
        got = {"rssi_dbm": _num(values.get("rssi"), f"modem.signal.{tech}.rssi"),
               "rsrp_dbm": _num(values.get("rsrp"), f"modem.signal.{tech}.rsrp"),
               "rsrq_db": _num(values.get("rsrq"), f"modem.signal.{tech}.rsrq"),
               "sinr_db": _num(values.get("snr"), f"modem.signal.{tech}.snr")}
        if any(v is not None for v in got.values()):
            out = got
            break
    return out, bool(rate)


def parse_bearer(text: str) -> dict[str, Any]:
    """`mmcli -b N -J` -> connected, and the session/total counters (absent ones are None)."""
    bearer = _json(text, "mmcli -b", "bearer")["bearer"]
    stats = bearer.get("stats") or {}
    connected = _str(_get(bearer, "status", "connected"), "bearer.status.connected")
    return {
        "connected": connected == "yes",
        "session_s": _count(stats.get("duration"), "bearer.stats.duration"),
        "session_rx_bytes": _count(stats.get("bytes-rx", stats.get("rx-bytes")), "bearer.stats.bytes-rx"),
        "session_tx_bytes": _count(stats.get("bytes-tx", stats.get("tx-bytes")), "bearer.stats.bytes-tx"),
        "total_connected_s": _count(stats.get("total-duration"), "bearer.stats.total-duration"),
        "total_rx_bytes": _count(stats.get("total-bytes-rx"), "bearer.stats.total-bytes-rx"),
        "total_tx_bytes": _count(stats.get("total-bytes-tx"), "bearer.stats.total-bytes-tx"),
    }


def pick_bearer(bearers: list[dict[str, Any]]) -> dict[str, Any]:
    """The connected bearer's counters, else the first with any; {} when none has counters."""
    for b in sorted(bearers, key=lambda b: not b["connected"]):
        counters = {k: v for k, v in b.items() if k != "connected"}
        if any(v is not None for v in counters.values()):
            return counters
    return {}


@register("modemmanager")
class ModemManagerProbe:
    """One `Modem` record per modem ModemManager knows, and one with `up` false for a modem
    seen earlier in this run that is gone (unplugged).

    Options: `interval_s` (60), `mmcli` ("mmcli"), `signal_rate_s` (30: the refresh rate asked
    with `--signal-setup`; 0 = never ask, and extended signal stays empty), `timeout_s` (10 per
    command), `id_salt` (filled in by the agent). Tests inject `run`, `clock` and `now`.
    """

    name = "modemmanager"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, mmcli: str = "mmcli", signal_rate_s: int = 30,
                 timeout_s: float = 10.0, id_salt: str = "", run: RunCmd = run_cmd, clock: Monotonic = time.monotonic,
                 now: Now = utc_now) -> None:
        if not 0 <= signal_rate_s <= 3600:
            raise ValueError(f"signal_rate_s must be between 0 and 3600, got {signal_rate_s!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.interval_s = interval_s
        self.mmcli, self.signal_rate_s, self.timeout_s = mmcli, signal_rate_s, timeout_s
        self.salt = check_salt(id_salt)
        self._run, self._clock, self._now = run, clock, now
        # Per equipment id (memory only, never sent): the previous reading, and whether signal
        # was set up since the modem appeared.
        self._prev: dict[str, Previous] = {}
        self._set_up: set[str] = set()
        self._seen: dict[str, str | None] = {}  # equipment id -> its modem_id

    async def _mmcli(self, *args: str) -> str:
        return await self._run([self.mmcli, *args], self.timeout_s)

    async def collect(self) -> list[Record]:
        now = self._now()
        paths = parse_modem_list(await self._mmcli("-L", "-J"))  # no mmcli/ModemManager: the run fails
        records: list[Record] = []
        problems: list[str] = []
        present: set[str] = set()
        for path in paths:
            try:
                record, key = await self._read(path, now, problems)
            except (CommandError, ParseError) as e:
                problems.append(f"{path.rsplit('/', 1)[-1]}: {e}")  # vanished between two calls, garbled
                continue
            records.append(record)
            if key is not None:
                present.add(key)
        for key, modem_id in list(self._seen.items()):
            if key not in present:  # unplugged since: down, and its interval restarts when it returns
                records.append(Modem(seq=0, at=now, up=False, modem_id=modem_id))
                self._prev.pop(key, None)
                self._set_up.discard(key)
                del self._seen[key]
        if problems:
            raise DeviceErrors(records, problems)
        return records

    async def _read(self, path: str, now: datetime, problems: list[str]) -> tuple[Modem, str | None]:
        mono = self._clock()
        modem = parse_modem(await self._mmcli("-m", path, "-J"))
        key: str | None = modem.pop("equipment_id")
        bearer_paths: list[str] = modem.pop("bearers")
        modem_id = peripheral_id(self.salt, "modem", key)
        signal: dict[str, Any] = {}
        try:
            signal, ready = parse_signal(await self._mmcli("-m", path, "--signal-get", "-J"))
            if not ready and self.signal_rate_s and key not in self._set_up:
                await self._mmcli("-m", path, f"--signal-setup={self.signal_rate_s}")
                if key is not None:
                    self._set_up.add(key)
        except (CommandError, ParseError) as e:
            problems.append(f"signal: {e}")  # often: no permission to set up signal (polkit)
        bearers = []
        for bearer in bearer_paths:
            try:
                bearers.append(parse_bearer(await self._mmcli("-b", bearer, "-J")))
            except (CommandError, ParseError) as e:
                problems.append(f"bearer: {e}")
        traffic = pick_bearer(bearers)
        at = now
        interval: dict[str, Any] = {}
        if key is not None:
            self._seen[key] = modem_id
            prev = self._prev.get(key)
            interval = interval_fields(prev, mono, key, modem["state"], traffic)
            if prev is not None and interval:
                at = prev[1]
            self._prev[key] = (mono, now, key, traffic)
        return Modem(seq=0, at=at, up=True, modem_id=modem_id, **modem, **signal, **traffic, **interval), key
