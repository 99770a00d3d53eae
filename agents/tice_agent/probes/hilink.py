"""hilink: a Huawei 3G/4G USB key in HiLink mode (E3372h and kin), read through its web API.

In HiLink mode the key is a small router behind a USB network card, with a web API at
http://192.168.8.1. One poll: a session (the `SessionID` cookie and a request token, from
`GET /` and `/api/webserver/SesTokInfo`, or `/api/webserver/token` on newer firmware), then
`monitoring/status`, `monitoring/traffic-statistics`, `device/signal`, `net/current-plmn`
and `device/information`. A session the key has forgotten (error 125002/125003) is opened
again and the request repeated once; a key that asks for a login (100003) gets one when a
password is configured (user/login with the SHA-256 password encoding, password_type 4, or
base64 for old firmware). Answers are XML strings: "-105dBm", ">=-51dBm", "" for a value
another radio technology would give. Facts and codes: docs/peripherals.md, from
Salamek/huawei-lte-api (its Session, User and enums) and captured answers under
agents/tests/fixtures/hilink/.

Why not huawei-lte-api itself: with it and its dependencies (requests, xmltodict,
pycryptodomex) the agent's site-packages weigh 17.5 MB over a bare venv, 1.8 MB without them
(msgspec and psutil alone), against a budget of 5 MB (measured with pip 23 on Python 3.11:
fresh venvs, `du -s --block-size=1` of site-packages). These few calls on the agent's own HTTP
client (agents/tice_agent/http.py) are all the probe needs.

Privacy (docs/agent.md, "What is collected, and what never is"; ARCHITECTURE.md, privacy by
design): IMSI, ICCID and the phone number (MSISDN) never leave the device, and the IMEI leaves
it only as a salted hash. `device/information` carries all four (and the serial number and MAC
address); the parser keeps the IMEI alone and the probe sends only its hash. Cell and area ids
from `device/signal` are never read. The rule for errors: an error text becomes the `probe`
record's `error`, which is sent and stored, so no error ever quotes the body of an answer, from
any endpoint (a cut-short `device/information` would otherwise carry the IMSI into it): an
unreadable answer is described by its shape and size alone (parse_answer), and a field value
quoted in an error goes through `excerpt`, which masks digit runs and identity-named elements
(probes/_run.py mask_identifiers). The password is never logged nor put in an error.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from tice_agent import http
from tice_agent.probes import register
from tice_agent.probes._identity import check_salt, peripheral_id
from tice_agent.probes._modem import Previous, interval_fields
from tice_agent.probes._run import DeviceErrors, Monotonic, Now, ParseError, excerpt, utc_now
from tice_wire import Modem, Record

log = logging.getLogger("tice.agent.probes.hilink")

Fetch = Callable[..., Awaitable[http.Answer]]  # tice_agent.http.request

MAX_ANSWER = 64 * 1024  # the biggest HiLink answer is a few kB

# <error><code> values (huawei_lte_api.enums.client.ResponseCodeEnum, enums.user.LoginErrorEnum).
NOT_SUPPORTED, LOGIN_REQUIRED, BUSY = 100002, 100003, 100004
SESSION_ERRORS = (125001, 125002, 125003)  # token/session forgotten: handshake again
LOGIN_REFUSED = (108001, 108002, 108006, 108007, 115002)
# After a refused login, wait this long before the next try: repeated wrong passwords make the
# key lock its logins (108007), and the password cannot have changed before a restart anyway.
LOGIN_RETRY_S = 3600.0
ERROR_TEXT = {
    100001: "unknown error", NOT_SUPPORTED: "not supported by this firmware", LOGIN_REQUIRED: "login required",
    BUSY: "key busy", 100005: "request format error", 125001: "wrong token", 125002: "session expired",
    125003: "wrong session token", 108001: "wrong user name", 108002: "wrong password", 108003: "already logged in",
    108006: "wrong user name or password", 108007: "too many login attempts: the key locks logins for a while",
    115002: "the key asks for its password to be changed first",
}

# monitoring/status ConnectionStatus (huawei_lte_api.enums.cradle.ConnectionStatusEnum; 2-33 and
# others are the key's reasons for a failed connection: profile, access or roaming refused).
CONNECTION_STATES: dict[int, str] = {
    900: "connecting", 901: "connected", 902: "disconnected", 903: "disconnecting", 904: "failed",
    905: "unknown", 906: "failed",
    201: "data_limit",  # "connection failed, bandwidth exceeded": the plan's allowance is spent
    # Automatic (re)connection switched off: not connected, and not a failure.
    112: "disconnected", 113: "disconnected", 114: "disconnected", 115: "disconnected",
}

# CurrentNetworkTypeEx, preferred (WCDMA family 41-46, TD-SCDMA family 61-65, LTE 101, LTE with
# carrier aggregation 1011, NR 111); then the older CurrentNetworkType.
NETWORK_TYPES_EX: dict[int, str] = {
    0: "none", 1: "gsm", 2: "gprs", 3: "edge",
    41: "umts", 42: "hsdpa", 43: "hsupa", 44: "hspa", 45: "hspa+", 46: "hspa+",
    61: "umts", 62: "hsdpa", 63: "hsupa", 64: "hspa", 65: "hspa+",
    101: "lte", 1011: "lte", 111: "5gnr",
}
NETWORK_TYPES: dict[int, str] = {
    0: "none", 1: "gsm", 2: "gprs", 3: "edge", 4: "umts", 5: "hsdpa", 6: "hsupa", 7: "hspa", 8: "umts",
    9: "hspa+", 17: "hspa+", 18: "hspa+", 19: "lte",
    41: "umts", 42: "hsdpa", 43: "hsupa", 44: "hspa", 45: "hspa+", 46: "hspa+",
    61: "umts", 62: "hsdpa", 63: "hsupa", 64: "hspa", 65: "hspa+", 101: "lte",
}


class HiLinkError(Exception):
    """The key answered with <error><code>; `code` is the number."""

    def __init__(self, where: str, code: int) -> None:
        super().__init__(f"{where}: error {code} ({ERROR_TEXT.get(code, 'unknown code')})")
        self.where, self.code = where, code


# ------------------------------------------------------------------------------------ parsers

_TAG = re.compile(r"[A-Za-z_][\w.-]{0,30}")


def _shape(text: str, nbytes: int) -> str:
    """What an unreadable answer looks like, never what it says (see Privacy above)."""
    head = text.lstrip().lower()
    if not head:
        return "an empty answer"
    if head.startswith(("<!doctype html", "<html")):
        return f"an HTML page ({nbytes} bytes)"
    if head.startswith("<"):
        return f"XML cut short or not well-formed ({nbytes} bytes)"
    return f"text that is not XML ({nbytes} bytes)"


def parse_answer(body: bytes | str, where: str) -> dict[str, str]:
    """A HiLink answer -> {tag: text} of `<response>`'s children ("" for an empty tag).

    HiLinkError for `<error><code>N</code>`; ParseError for anything that is not one of the
    two (an HTML page, a truncated body). A plain `<response>OK</response>` gives {}.
    A ParseError describes the answer's shape and size, and never quotes it: any answer may
    carry the SIM's identity (device/information does).
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    nbytes = len(body) if isinstance(body, bytes) else len(text.encode())
    if "<!DOCTYPE" in text or "<!ENTITY" in text:  # no entity games from a device on the LAN
        what = "an HTML page" if "<html" in text.lower() else "XML declaring a DOCTYPE or entities, refused"
        raise ParseError(f"{where}: expected a HiLink XML answer, got {what} ({nbytes} bytes)")
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError:
        raise ParseError(f"{where}: expected a HiLink XML answer, got {_shape(text, nbytes)}") from None
    if root.tag == "error":
        code = (root.findtext("code") or "").strip()
        if not code.isdigit():
            raise ParseError(f"{where}: <error> without a numeric <code> ({nbytes} bytes)")
        raise HiLinkError(where, int(code))
    if root.tag.lower() == "html":
        raise ParseError(f"{where}: expected a HiLink XML answer, got an HTML page ({nbytes} bytes)")
    if root.tag != "response":
        tag = root.tag if _TAG.fullmatch(root.tag) else "?"
        raise ParseError(f"{where}: expected a HiLink XML answer, got a <{excerpt(tag, 30)[1:-1]}> "
                         f"document ({nbytes} bytes)")
    return {child.tag: (child.text or "").strip() for child in root}


_UNIT = re.compile(r"^[<>=]*\s*(-?\d+(?:\.\d+)?)\s*(dBm|dB)?$", re.I)


def parse_level(value: str | None, where: str) -> float | None:
    """"-105dBm", ">=-51dBm", "-14.0dB", "12" -> the number; "" or absent -> None.

    The `>=`/`<=` of a reading at the end of the scale is dropped (">=-51dBm" is -51): the
    reading is the bound itself. Other text is a ParseError naming the field.
    """
    if value is None or value.strip() in ("", "--", "Unknown", "unknown", "N/A"):
        return None
    m = _UNIT.match(value.strip())
    if m is None:
        raise ParseError(f"{where}: expected a level like -105dBm, got {excerpt(value, 30)}")
    return float(m.group(1))


def _int(d: dict[str, str], key: str, where: str, *, signed: bool = False) -> int | None:
    raw = d.get(key, "").strip()
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ParseError(f"{where}: {key} is not a number: {excerpt(raw, 30)}") from None
    if value < 0 and not signed:
        raise ParseError(f"{where}: {key} is negative: {value}")
    return value


def parse_status(d: dict[str, str]) -> dict[str, Any]:
    """monitoring/status -> state, technology, bars (0-5), signal_ratio, roaming."""
    where = "monitoring/status"
    code = _int(d, "ConnectionStatus", where)
    state = "unknown" if code is None else CONNECTION_STATES.get(code, "failed")
    technology = None
    ex, plain = _int(d, "CurrentNetworkTypeEx", where), _int(d, "CurrentNetworkType", where)
    if ex is not None and ex in NETWORK_TYPES_EX:
        technology = NETWORK_TYPES_EX[ex]
    elif plain is not None and plain in NETWORK_TYPES:
        technology = NETWORK_TYPES[plain]
    elif ex is not None or plain is not None:
        log.debug("unknown network type %s/%s", ex, plain)
        technology = "unknown"
    bars = _int(d, "SignalIcon", where)
    top = _int(d, "maxsignal", where) or 5
    if bars is not None:
        bars = max(0, min(5, round(bars * 5 / top)))
    strength = _int(d, "SignalStrength", where)
    roaming = _int(d, "RoamingStatus", where)
    return {"state": state, "technology": technology, "bars": bars,
            "signal_ratio": None if strength is None else min(100, strength) / 100,
            "roaming": None if roaming is None else roaming != 0}


def parse_traffic(d: dict[str, str]) -> dict[str, Any]:
    """monitoring/traffic-statistics -> the key's own counters (seconds, bytes)."""
    where = "monitoring/traffic-statistics"
    return {"session_s": _int(d, "CurrentConnectTime", where),
            "session_rx_bytes": _int(d, "CurrentDownload", where),
            "session_tx_bytes": _int(d, "CurrentUpload", where),
            "total_connected_s": _int(d, "TotalConnectTime", where),
            "total_rx_bytes": _int(d, "TotalDownload", where),
            "total_tx_bytes": _int(d, "TotalUpload", where)}


def parse_signal(d: dict[str, str]) -> dict[str, Any]:
    """device/signal -> rssi/rsrp (dBm), rsrq/sinr (dB). Cell and area ids are not read."""
    where = "device/signal"
    return {"rssi_dbm": parse_level(d.get("rssi"), f"{where} rssi"),
            "rsrp_dbm": parse_level(d.get("rsrp"), f"{where} rsrp"),
            "rsrq_db": parse_level(d.get("rsrq"), f"{where} rsrq"),
            "sinr_db": parse_level(d.get("sinr"), f"{where} sinr")}


def parse_plmn(d: dict[str, str]) -> str | None:
    """net/current-plmn -> the operator's code (MCC+MNC, "20801"), None when not registered."""
    numeric = d.get("Numeric", "").strip()
    if numeric == "":
        return None
    if not numeric.isdigit() or len(numeric) not in (5, 6):
        raise ParseError(f"net/current-plmn: Numeric is not an operator code: {excerpt(numeric, 20)}")
    return numeric


def parse_imei(d: dict[str, str]) -> str | None:
    """device/information -> the IMEI alone (IMSI, ICCID and MSISDN in the same answer are
    never read)."""
    imei = d.get("Imei", "").strip()
    return imei or None


def encode_password(username: str, password: str, token: str, password_type: int) -> str:
    """The login's Password field (huawei_lte_api User._encode_password): type 4 is
    base64(sha256_hex(username + base64(sha256_hex(password)) + token)); else base64(password)."""
    if password_type == 4:
        inner = base64.b64encode(hashlib.sha256(password.encode()).hexdigest().encode()).decode()
        return base64.b64encode(hashlib.sha256((username + inner + token).encode()).hexdigest().encode()).decode()
    return base64.b64encode(password.encode()).decode()


_CSRF_META = re.compile(r'name="csrf_token"\s+content="(\S+)"')
_SESSION_COOKIE = re.compile(r"SessionID=([^;\s]+)")


# ------------------------------------------------------------------------------------ client

class HiLinkClient:
    """The session and the few calls the probe makes. Raises http.NetworkError (no answer),
    HiLinkError (an error code the caller must know) and ParseError (not the HiLink API)."""

    def __init__(self, base_url: str, *, username: str = "admin", password: str = "", timeout_s: float = 5.0,
                 fetch: Fetch = http.request, clock: Monotonic = time.monotonic) -> None:
        self.base = base_url.rstrip("/")
        self._clock = clock
        self._refused: tuple[float, HiLinkError] | None = None  # (until, the key's refusal)
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._cookie: str | None = None
        self._tokens: list[str] = []
        self.handshakes = 0
        self.logins = 0

    @property
    def open(self) -> bool:
        return self._cookie is not None or bool(self._tokens)

    async def _http(self, method: str, path: str, body: bytes | None = None) -> http.Answer:
        headers = {"Accept": "*/*", "X-Requested-With": "XMLHttpRequest"}
        if self._cookie:
            headers["Cookie"] = f"SessionID={self._cookie}"
        if self._tokens:
            # After a login tokens are single-use (POSTs take the next one); before, one token serves.
            headers["__RequestVerificationToken"] = self._tokens.pop(0) if len(self._tokens) > 1 and body \
                else self._tokens[0]
        if body is not None:
            headers["Content-Type"] = "application/xml"
        answer = await self._fetch(method, self.base + path, body, headers, timeout_s=self.timeout_s, proxy=False,
                                   max_bytes=MAX_ANSWER)
        cookie = _SESSION_COOKIE.search(answer.header("set-cookie") or "")
        if cookie:
            self._cookie = cookie.group(1)
        fresh = [t for t in (answer.header("__requestverificationtokenone"),
                             answer.header("__requestverificationtokentwo")) if t]
        if fresh:
            self._tokens = fresh
        elif answer.header("__requestverificationtoken") and body is not None:
            self._tokens = [str(answer.header("__requestverificationtoken"))]
        if answer.status != 200:
            raise ParseError(f"{path}: HTTP {answer.status} instead of a HiLink answer")
        return answer

    async def handshake(self) -> None:
        """A new session: the cookie from `GET /`, the token from the page or the API."""
        self._cookie, self._tokens = None, []
        self.handshakes += 1
        try:
            page = await self._http("GET", "/")
        except ParseError:  # no home page (an HTTP error): the API alone can open the session
            page = None
        if page is not None:
            self._tokens = _CSRF_META.findall(page.body[:MAX_ANSWER].decode("utf-8", "replace"))[:2]
            if self._tokens:
                return
        try:
            ses = parse_answer((await self._http("GET", "/api/webserver/SesTokInfo")).body, "webserver/SesTokInfo")
        except HiLinkError as e:
            if e.code != NOT_SUPPORTED:
                raise
            tok = parse_answer((await self._http("GET", "/api/webserver/token")).body, "webserver/token")
            self._tokens = [tok["token"]] if tok.get("token") else []
            return
        cookie = _SESSION_COOKIE.search(ses.get("SesInfo", ""))
        if cookie:
            self._cookie = cookie.group(1)
        if ses.get("TokInfo"):
            self._tokens = [ses["TokInfo"]]

    async def login(self) -> None:
        """Log in with the configured password; HiLinkError 108xxx when the key refuses it, and
        then no new try for LOGIN_RETRY_S (the same refusal is raised meanwhile)."""
        if not self._password:
            raise HiLinkError("user/login", LOGIN_REQUIRED)
        if self._refused is not None:
            until, refusal = self._refused
            if self._clock() < until:
                raise refusal
            self._refused = None
        self.logins += 1
        state = parse_answer((await self._http("GET", "/api/user/state-login")).body, "user/state-login")
        if state.get("State") == "0":  # already logged in
            return
        kind = int(state["password_type"]) if state.get("password_type", "").isdigit() else 0
        token = self._tokens[0] if self._tokens else ""
        secret = encode_password(self.username, self._password, token, kind)
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><request>"
                f"<Username>{_xml_text(self.username)}</Username><Password>{secret}</Password>"
                f"<password_type>{kind}</password_type></request>").encode()
        try:
            parse_answer((await self._http("POST", "/api/user/login", body)).body, "user/login")
        except HiLinkError as e:
            if e.code in LOGIN_REFUSED:
                self._refused = (self._clock() + LOGIN_RETRY_S, e)
            raise

    async def get(self, endpoint: str) -> dict[str, str]:
        """GET /api/<endpoint>: one new session when the key forgot ours, one login when it asks."""
        if not self.open:
            await self.handshake()
        retried = logged_in = False
        while True:
            try:
                return parse_answer((await self._http("GET", f"/api/{endpoint}")).body, endpoint)
            except HiLinkError as e:
                if e.code in SESSION_ERRORS and not retried:
                    retried = True
                    await self.handshake()
                    continue
                if e.code == LOGIN_REQUIRED and self._password and not logged_in:
                    logged_in = True
                    await self.login()
                    continue
                raise


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------ probe

@register("hilink")
class HiLinkProbe:
    """One `Modem` record per collect, for the key at `url`.

    Options: `interval_s` (60), `url` ("http://192.168.8.1"), `username` ("admin"), `password`
    ("": most keys need none; give it when the key asks for a login), `timeout_s` (5, per
    request), `id_salt` (filled in by the agent from its enrolment). Tests inject `fetch` (the
    HTTP call), `clock` (monotonic, for the interval) and `now` (the wall clock for `at`).
    """

    name = "hilink"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, url: str = "http://192.168.8.1", username: str = "admin",
                 password: str = "", timeout_s: float = 5.0, id_salt: str = "", fetch: Fetch = http.request,
                 clock: Monotonic = time.monotonic, now: Now = utc_now) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: expected http://address of the key, got {url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.interval_s = interval_s
        self.salt = check_salt(id_salt)
        self.client = HiLinkClient(url, username=username, password=password, timeout_s=timeout_s, fetch=fetch,
                                   clock=clock)
        self._clock, self._now = clock, now
        self._warned: set[str] = set()
        # The previous reading: monotonic and wall time, the key's id and its byte counters.
        self._prev: Previous | None = None
        self._last_id: str | None = None

    async def _optional(self, endpoint: str, parse: Callable[[dict[str, str]], Any],
                        problems: list[str]) -> Any:
        """A part the record can do without: None when this firmware lacks it or wants a login
        we cannot give (said once in the log), or when it fails (said in `problems`)."""
        try:
            return parse(await self.client.get(endpoint))
        except HiLinkError as e:
            if e.code in (NOT_SUPPORTED, LOGIN_REQUIRED):
                if endpoint not in self._warned:
                    self._warned.add(endpoint)
                    hint = " (set the key's password in [probes.hilink])" if e.code == LOGIN_REQUIRED else ""
                    log.warning("hilink: %s%s; its fields stay empty", e, hint)
                return None
            problems.append(f"{endpoint}: {e}" if e.where != endpoint else str(e))
        except ParseError as e:
            problems.append(str(e))
        return None

    async def collect(self) -> list[Record]:
        now, mono = self._now(), self._clock()
        problems: list[str] = []
        try:
            status = parse_status(await self.client.get("monitoring/status"))
            traffic = await self._optional("monitoring/traffic-statistics", parse_traffic, problems) or {}
            signal = await self._optional("device/signal", parse_signal, problems) or {}
            plmn = await self._optional("net/current-plmn", parse_plmn, problems)
            imei = await self._optional("device/information", parse_imei, problems)
        except http.NetworkError as e:
            log.debug("hilink: no answer: %s", e)
            self._prev = None
            # The key last seen here: unplugged, or its USB link down. Data, not an error.
            return [Modem(seq=0, at=now, up=False, modem_id=self._last_id)]
        modem_id = peripheral_id(self.salt, "modem", imei)
        if modem_id is None and imei is None:
            modem_id = self._last_id  # information unreadable this time: the same key as before
        self._last_id = modem_id
        at, interval = now, interval_fields(self._prev, mono, modem_id, status["state"], traffic)
        if self._prev is not None and interval:
            at = self._prev[1]  # an interval record is dated from its start
        self._prev = (mono, now, modem_id, traffic)
        record = Modem(seq=0, at=at, up=True, modem_id=modem_id, plmn=plmn, **status, **signal, **traffic,
                       **interval)
        if problems:  # the record keeps what the key did give; the run reports the rest
            raise DeviceErrors([record], problems)
        return [record]
