"""pjlink: networked projectors, read with PJLink class 1 (TCP 4352).

Each poll opens one connection per projector and asks, in order, `POWR ?` (power), `LAMP ?`
(hours and on/off per lamp), `ERST ?` (error status of fan, lamp, temperature, cover, filter,
other), `INPT ?` (input), `NAME ?`, `INF1 ?` (manufacturer), `INF2 ?` (model) and `CLSS ?`
(class), then closes. The projector greets with `PJLINK 0` (no password) or `PJLINK 1 <random>`:
the first command is then preceded by md5(random + password) in hex. `PJLINK ERRA` is a
refused password; `ERR1` (undefined command), `ERR2` (out of parameter), `ERR3` (unavailable
now, say in standby) and `ERR4` (projector failure) answer one command and leave its fields
empty. Text is decoded as UTF-8 with replacement characters. Facts: the PJLink class 1
specification (JBMIA), and the notes in docs/peripherals.md.

A projector is contacted at most once a minute (MIN_CONTACT_S): some models wedge when polled
more often. One that refuses the connection is reported up and in standby (many models close
their network service in standby); one that does not answer at all is reported down.

Hand-written on asyncio streams rather than aiopjlink or pypjlink2: the protocol is one page,
both libraries are small and little maintained (aiopjlink decodes strictly and has a bug in its
greeting check; pypjlink2 is synchronous and checks with asserts), and this client is tested
against the simulator in agents/tice_agent/simulators/pjlink.py for every answer the specification lists.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tice_agent.probes import register
from tice_agent.probes._identity import check_salt, peripheral_id
from tice_agent.probes._run import DeviceErrors, Monotonic, Now, ParseError, excerpt, utc_now
from tice_wire import MAX_INTERVAL_S, MAX_LAMPS, MAX_SHORT_TEXT, Projector, Record

log = logging.getLogger("tice.agent.probes.pjlink")

PORT = 4352
MIN_CONTACT_S = 60.0  # never contact a projector more often: some models wedge
MAX_LINE = 256  # class 1 answers are at most 136 bytes
QUERIES = ("POWR", "LAMP", "ERST", "INPT", "NAME", "INF1", "INF2", "CLSS")
COMMAND_ERRORS = {"ERR1": "undefined command", "ERR2": "out of parameter", "ERR3": "unavailable time",
                  "ERR4": "projector failure"}
POWER = {"0": "standby", "1": "on", "2": "cooling", "3": "warming"}
COMPONENTS = ("fan", "lamp", "temperature", "cover", "filter", "other")
LEVELS = {"0": "ok", "1": "warning", "2": "error"}
INPUTS = {"1": "rgb", "2": "video", "3": "digital", "4": "storage", "5": "network", "6": "internal"}

OpenConnection = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class AuthError(Exception):
    """The projector refused our password (PJLINK ERRA), or wants one we do not have."""


# ------------------------------------------------------------------------------------ parsers

def parse_greeting(line: str) -> str | None:
    """"PJLINK 0" -> None (no password); "PJLINK 1 498e4a67" -> "498e4a67" (the random)."""
    parts = line.strip().split(" ")
    if len(parts) >= 2 and parts[0] == "PJLINK":
        if parts[1] == "ERRA":
            raise AuthError("the projector refuses connections (PJLINK ERRA in its greeting)")
        if parts[1] == "0" and len(parts) == 2:
            return None
        if parts[1] == "1" and len(parts) == 3 and len(parts[2]) == 8:
            return parts[2]
    raise ParseError(f"greeting: expected 'PJLINK 0' or 'PJLINK 1 <8 characters>', got {excerpt(line, 40)}")


def auth_digest(random: str, password: str) -> str:
    """md5(random + password) in lowercase hex (specification's example: 498e4a67 and
    JBMIAProjectorLink give 5d8409bc1c3fa39749434aa3a5c38682)."""
    # MD5 is the protocol's own choice (class 1), not ours.
    return hashlib.md5((random + password).encode(), usedforsecurity=False).hexdigest()


def parse_reply(line: str, command: str) -> tuple[str | None, str | None]:
    """"%1POWR=1" -> ("1", None); "%1LAMP=ERR1" -> (None, "ERR1"). ParseError for anything else,
    AuthError for "PJLINK ERRA" (a refused password arrives as the answer to the first command)."""
    text = line.strip("\r\n")
    if text.startswith("PJLINK ERRA"):
        raise AuthError("the projector refused the password (PJLINK ERRA)")
    prefix = f"%1{command}="
    if not text.upper().startswith(prefix):
        raise ParseError(f"{command}: expected '{prefix}...', got {excerpt(text, 40)}")
    value = text[len(prefix):]
    if value.upper() in COMMAND_ERRORS:
        return None, value.upper()
    return value, None


def parse_power(value: str) -> str:
    if value not in POWER:
        raise ParseError(f"POWR: expected 0-3, got {excerpt(value, 20)}")
    return POWER[value]


def parse_lamps(value: str) -> list[tuple[int, bool]]:
    """"1200 1 300 0" -> [(1200, True), (300, False)]: hours 0-99999 and on/off, per lamp."""
    parts = value.split()
    if not parts or len(parts) % 2 or len(parts) > 2 * MAX_LAMPS:
        raise ParseError(f"LAMP: expected pairs of 'hours on/off' for 1 to {MAX_LAMPS} lamps, "
                         f"got {excerpt(value, 40)}")
    lamps = []
    for hours, on in zip(parts[::2], parts[1::2], strict=True):
        if not hours.isdigit() or len(hours) > 5 or on not in ("0", "1"):
            raise ParseError(f"LAMP: expected hours (0-99999) and 0/1, got {excerpt(hours + ' ' + on, 30)}")
        lamps.append((int(hours), on == "1"))
    return lamps


def parse_errors(value: str) -> dict[str, str]:
    """"000120" -> {"fan": "ok", ..., "cover": "warning", "filter": "error", "other": "ok"}."""
    if len(value) != 6 or any(c not in LEVELS for c in value):
        raise ParseError(f"ERST: expected six digits 0-2 (fan, lamp, temperature, cover, filter, other), "
                         f"got {excerpt(value, 20)}")
    return {name: LEVELS[c] for name, c in zip(COMPONENTS, value, strict=True)}


def parse_input(value: str) -> tuple[str, int]:
    """"31" -> ("digital", 1). Class 2 projectors number inputs 1-9 and A-Z."""
    if len(value) != 2 or value[0] not in INPUTS or not (value[1].isdigit() or "A" <= value[1] <= "Z") \
            or value[1] == "0":
        raise ParseError(f"INPT: expected a kind 1-6 and a number 1-9/A-Z, got {excerpt(value, 20)}")
    return INPUTS[value[0]], int(value[1], 36)


def parse_class(value: str) -> int:
    if len(value) != 1 or not value.isdigit() or value == "0":
        raise ParseError(f"CLSS: expected a class number, got {excerpt(value, 20)}")
    return int(value)


def text(value: str, limit: int) -> str | None:
    """A NAME/INF1/INF2 answer: stripped, bounded; None when empty."""
    out = value.strip()[:limit]
    return out or None


# ------------------------------------------------------------------------------------ client

@dataclass
class Session:
    """What one connection gave: answers by command, and the problems met."""

    refused: bool = False
    answers: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def query(host: str, port: int = PORT, *, password: str = "", timeout_s: float = 5.0,
                commands: Sequence[str] = QUERIES,
                open_connection: OpenConnection = asyncio.open_connection) -> Session:
    """One connection: greeting, authentication, each command's answer, close.

    Raises OSError/TimeoutError when no connection can be made (the projector is off the
    network), AuthError when the password is refused or missing, ParseError when the
    projector connects but does not speak PJLink. A refused connection is
    `Session(refused=True)`. A command answered with ERRn or garbage goes to `problems` and the
    next command is still asked; a silence or a closed connection ends the session with what
    was answered.
    """
    try:
        reader, writer = await asyncio.wait_for(open_connection(host, port, limit=MAX_LINE), timeout_s)
    except ConnectionRefusedError:
        return Session(refused=True)
    session = Session()
    try:
        try:
            greeting = await _line(reader, timeout_s, "greeting")
        except TimeoutError:
            raise ParseError(f"greeting: none within {timeout_s:g} s of connecting") from None
        random = parse_greeting(greeting)
        prefix = ""
        if random is not None:
            if not password:
                raise AuthError("the projector wants a PJLink password: set password in [probes.pjlink]")
            prefix = auth_digest(random, password)
        for command in commands:
            try:
                writer.write(f"{prefix}%1{command} ?\r".encode("ascii"))
                prefix = ""
                await writer.drain()
                line = await _line(reader, timeout_s, command)
            except TimeoutError:
                session.problems.append(f"{command}: no answer within {timeout_s:g} s")
                break
            except ConnectionError:
                session.problems.append(f"{command}: the projector closed the connection")
                break
            try:
                value, err = parse_reply(line, command)
            except ParseError as e:
                session.problems.append(str(e))
                continue
            if err is not None:
                # Normal, not problems: ERR3 is "not now" (many models in standby or warming up),
                # and ERR1 to LAMP is a projector without a lamp (laser, LED).
                if err != "ERR3" and (err, command) != ("ERR1", "LAMP"):
                    session.problems.append(f"{command}: {err} ({COMMAND_ERRORS[err]})")
                continue
            assert value is not None
            session.answers[command] = value
    except ConnectionError:
        raise ParseError("greeting: the connection closed before any PJLink exchange") from None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout_s)
        except (OSError, TimeoutError):
            pass
    return session


async def _line(reader: asyncio.StreamReader, timeout_s: float, what: str) -> str:
    """One CR-terminated line, decoded with replacement characters."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r"), timeout_s)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            partial = e.partial.decode("utf-8", "replace")
            raise ParseError(f"{what}: the connection closed mid-answer: {excerpt(partial)}") from None
        raise ConnectionResetError(f"{what}: the projector closed the connection") from None
    except asyncio.LimitOverrunError:
        raise ParseError(f"{what}: answer longer than {MAX_LINE} bytes") from None
    return raw.decode("utf-8", "replace").lstrip("\n")


# ------------------------------------------------------------------------------------ probe

@dataclass
class Target:
    host: str
    port: int
    password: str
    projector_id: str | None
    last_contact: float | None = None  # monotonic
    last_at: datetime | None = None


def _targets(projectors: Sequence[Any], password: str) -> list[tuple[str, int, str]]:
    out = []
    for i, entry in enumerate(projectors):
        if isinstance(entry, str):
            entry = {"host": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("host"), str) or not entry["host"]:
            raise ValueError(f"projectors[{i}]: expected \"host\", \"host:port\" or {{host = ..., password = ...}}")
        unknown = set(entry) - {"host", "port", "password"}
        if unknown:
            raise ValueError(f"projectors[{i}]: unknown key {sorted(unknown)[0]!r} (known: host, port, password)")
        host, port = entry["host"], entry.get("port", PORT)
        if "port" not in entry and host.count(":") == 1:
            host, _, p = host.partition(":")
            port = int(p) if p.isdigit() else -1
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"projectors[{i}]: port must be 1-65535")
        pw = entry.get("password", password)
        if not isinstance(pw, str):
            raise ValueError(f"projectors[{i}]: password must be a string")
        out.append((host, port, pw))
    return out


@register("pjlink")
class PjlinkProbe:
    """One `Projector` record per projector contacted.

    Options: `interval_s` (90), `projectors` (a list of "host", "host:port" or tables with
    host, port and password), `password` (the PJLink password of every projector that has no
    own; "" = none), `timeout_s` (5, per answer), `send_name` (true: the NAME the installer gave
    the projector; false when names could name people). Filled in by the agent: `school` and
    `id_salt` (the projector's identity). Tests inject `open_connection`, `clock`, `now`.
    """

    name = "pjlink"
    interval_s = 90.0

    def __init__(self, *, interval_s: float = 90.0, projectors: Sequence[Any] = (), password: str = "",
                 timeout_s: float = 5.0, send_name: bool = True, school: str = "", id_salt: str = "",
                 open_connection: OpenConnection = asyncio.open_connection, clock: Monotonic = time.monotonic,
                 now: Now = utc_now) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        salt = check_salt(id_salt)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.send_name = send_name
        # The projector's identity: the school and the address it is polled at (class 1 has no
        # serial number); two PCs of a school polling one projector give it the same id.
        self.targets = [Target(h, p, pw, peripheral_id(salt, "projector", f"{school}|{h}:{p}") if school else None)
                        for h, p, pw in _targets(projectors, password)]
        self._open, self._clock, self._now = open_connection, clock, now

    async def collect(self) -> list[Record]:
        due = [t for t in self.targets if t.last_contact is None or self._clock() - t.last_contact >= MIN_CONTACT_S]
        results = await asyncio.gather(*(self._read(t) for t in due))
        records: list[Record] = [r for r, _ in results]
        problems = [p for _, ps in results for p in ps]
        if problems:
            raise DeviceErrors(records, problems)
        return records

    async def _read(self, t: Target) -> tuple[Projector, list[str]]:
        mono, now = self._clock(), self._now()
        # After a gap longer than any interval the collector takes (the agent was stopped), the
        # time in between is not known: no interval, dated now, as a first reading.
        gap = None if t.last_contact is None else mono - t.last_contact
        duration = None if gap is None or gap > MAX_INTERVAL_S else round(gap, 3)
        at = t.last_at if duration is not None and t.last_at is not None else now  # dated from its start
        t.last_contact, t.last_at = mono, now
        where = f"{t.host}:{t.port}"
        base: dict[str, Any] = {"seq": 0, "at": at, "projector_id": t.projector_id, "duration_s": duration}
        try:
            session = await query(t.host, t.port, password=t.password, timeout_s=self.timeout_s,
                                  open_connection=self._open)
        except AuthError as e:
            return Projector(up=True, **base), [f"{where}: {e}"]  # it answered: up, but nothing read
        except ParseError as e:
            return Projector(up=True, **base), [f"{where}: {e}"]
        except (OSError, TimeoutError) as e:
            log.debug("pjlink %s: no answer: %s", where, e)
            return Projector(up=False, **base), []  # switched off at the mains or unplugged: data
        if session.refused:
            return Projector(up=True, power="standby", **base), []
        fields, problems = readings(session.answers, send_name=self.send_name)
        return Projector(up=True, **base, **fields), [f"{where}: {p}" for p in session.problems + problems]


def readings(answers: dict[str, str], *, send_name: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The record's fields from a session's answers; a garbled answer leaves its fields empty
    and becomes a problem."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    parsers: dict[str, Callable[[str], dict[str, Any]]] = {
        "POWR": lambda v: {"power": parse_power(v)},
        "LAMP": _lamp_fields,
        "ERST": parse_errors,
        "INPT": lambda v: dict(zip(("input_kind", "input_number"), parse_input(v), strict=True)),
        "NAME": lambda v: {"name": text(v, MAX_SHORT_TEXT)} if send_name else {},
        "INF1": lambda v: {"manufacturer": text(v, 32)},
        "INF2": lambda v: {"model": text(v, 32)},
        "CLSS": lambda v: {"pjlink_class": parse_class(v)},
    }
    for command, value in answers.items():
        try:
            out.update(parsers[command](value))
        except ParseError as e:
            problems.append(str(e))
    return out, problems


def _lamp_fields(value: str) -> dict[str, Any]:
    lamps = parse_lamps(value)
    return {"lamps_hours": [h for h, _ in lamps], "lamps_on": [on for _, on in lamps],
            "lamp_hours": max(h for h, _ in lamps), "lamp_on": any(on for _, on in lamps)}
