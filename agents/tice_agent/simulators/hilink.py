"""A simulated Huawei HiLink 3G/4G key (E3372h class): its web API over HTTP, on aiohttp.

What it does like the real key: `GET /` sets a `SessionID` cookie; `/api/webserver/SesTokInfo`
gives a session and a token (`/api/webserver/token` on newer firmware, `csrf_token` meta tags
in the page on others); API calls without a live session answer error 125002; a POST needs
the session's token (125003 otherwise); `user/state-login` and `user/login` (password_type 4:
SHA-256, or 0: base64), with new single-use tokens in `__RequestVerificationTokenone/two`
after a login, 108006 for a wrong password and 108007 after too many; values are strings
with units ("-105dBm", ">=-51dBm"), empty tags for values of other radio technologies.

Scriptable (the `Key` state, changed by a test directly or over HTTP with `POST /_sim`):
signal, network type, connection state and data-limit refusal, traffic counters growing at a
rate while connected, connection drops, session expiry, a login password, garbage, error codes,
slow answers, answers cut short (`short`) or cut off, and the key unplugged (the server stops
listening).

    python -m tice_agent.simulators.hilink --port 8088 [--password PW] [--rx-rate 20000]

Test and demo code: the agent itself never imports aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field, fields
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
GARBAGE = b"<html><head><title>302 Found</title></head><body>moved</body></html>"


def error(code: int) -> str:
    return f"{XML_HEAD}<error>\n<code>{code}</code>\n<message></message>\n</error>\n"


def response(values: dict[str, Any]) -> str:
    body = "".join(f"<{k}>{escape(str(v))}</{k}>\n" for k, v in values.items())
    return f"{XML_HEAD}<response>\n{body}</response>\n"


@dataclass
class Key:
    """The key's state. Counters grow with `advance()` (or with real time when `live`)."""

    # Radio and network
    connection_status: int = 901  # 901 connected, 902 disconnected, 201 data allowance spent...
    network_type_ex: int | None = 101
    network_type: int = 19
    signal_icon: int = 4
    signal_strength: str = ""
    rssi: str = "-71dBm"
    rsrp: str = "-105dBm"
    rsrq: str = "-14.0dB"
    sinr: str = "-7dB"
    rscp: str = ""
    ecio: str = ""
    mode: str = "7"
    roaming: int = 0
    plmn: str = "20801"
    operator: str = "Orange F"
    # Identity: fake numbers with a valid shape. The agent must send none of them but a hash.
    imei: str = "864537030000017"
    imsi: str = "208011234567890"
    iccid: str = "89330112345678901234"
    msisdn: str = "+33612345678"
    serial: str = "G4PDW17A12345678"
    cell_id: str = "136003329"
    # Traffic: counters in bytes and seconds, growing at these rates while connected.
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    session_s: float = 0.0
    session_rx: float = 0.0
    session_tx: float = 0.0
    total_s: float = 0.0
    total_rx: float = 0.0
    total_tx: float = 0.0
    live: bool = False  # counters follow real time between requests
    # Sessions and login
    password: str | None = None  # None: the key asks for no login
    username: str = "admin"
    password_type: int = 4
    login_required: set[str] = field(default_factory=lambda: {"device/information"})
    ses_tok_info: bool = True  # older firmware; False: only /api/webserver/token
    csrf_in_page: bool = False  # firmware that puts two csrf_token meta tags in the page
    home_page: bool = True  # False: GET / answers 404 (the session comes from SesTokInfo alone)
    max_login_failures: int = 3
    # Faults
    slow_s: float = 0.0  # every answer waits this long
    garbage: set[str] = field(default_factory=set)  # endpoints (or "*") answering an HTML page
    errors: dict[str, int] = field(default_factory=dict)  # endpoint -> error code answered
    cut: bool = False  # close every connection without an answer
    # endpoint -> the answer cut short after this many bytes (odd firmware, a link dropping
    # mid-answer), sent as a complete HTTP answer: `{"device/information": 120}`
    short: dict[str, int] = field(default_factory=dict)

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass: a connected key counts time and bytes."""
        if self.connection_status != 901 or seconds <= 0:
            return
        for name, rate in (("s", 1.0), ("rx", self.rx_rate), ("tx", self.tx_rate)):
            setattr(self, f"session_{name}", getattr(self, f"session_{name}") + rate * seconds)
            setattr(self, f"total_{name}", getattr(self, f"total_{name}") + rate * seconds)

    def disconnect(self, status: int = 902) -> None:
        """The connection drops (902), or is refused (201: data allowance spent; 904: failed)."""
        self.connection_status = status
        self.session_s = self.session_rx = self.session_tx = 0.0

    def connect(self) -> None:
        self.connection_status = 901
        self.session_s = self.session_rx = self.session_tx = 0.0

    def clear_traffic(self) -> None:
        self.total_s = self.total_rx = self.total_tx = 0.0
        self.session_s = self.session_rx = self.session_tx = 0.0


@dataclass
class Session:
    token: str
    logged_in: bool = False


class HiLinkSimulator:
    """The key's web server. `await start()`, `url`, `expire_sessions()`, `unplug()`/`plug()`."""

    def __init__(self, key: Key | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.key = key or Key()
        self.host, self.port = host, port
        self.sessions: dict[str, Session] = {}
        self.login_failures = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers, body
        self.handshakes = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._last = time.monotonic()
        self.app = web.Application(middlewares=[self._faults])
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/html/home.html", self.page)
        self.app.router.add_post("/_sim", self.control)
        self.app.router.add_route("*", "/api/{endpoint:.+}", self.api)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> HiLinkSimulator:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await self.plug()
        return self

    async def plug(self) -> None:
        """Listen (again) on the same port."""
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def unplug(self) -> None:
        """The key is pulled out: nothing listens any more (connection refused)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def expire_sessions(self) -> None:
        """The key forgets every session (it does after some minutes idle, or on reboot)."""
        self.sessions.clear()

    # ---------------------------------------------------------------- plumbing

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        if request.path == "/_sim":
            return await handler(request)  # type: ignore[no-any-return]
        if self.key.live:
            now = time.monotonic()
            self.key.advance(now - self._last)
            self._last = now
        if self.key.slow_s:
            await asyncio.sleep(self.key.slow_s)
        if self.key.cut:
            assert request.transport is not None
            request.transport.abort()  # the USB network link drops mid-request
            return web.Response(status=500)
        return await handler(request)  # type: ignore[no-any-return]

    def _cookie(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get("SessionID", ""))

    def _new_session(self, resp: web.StreamResponse | None = None) -> tuple[str, Session]:
        cookie = base64.b64encode(secrets.token_bytes(96)).decode()
        session = self.sessions[cookie] = Session(token=secrets.token_hex(16))
        if resp is not None:
            resp.set_cookie("SessionID", cookie, path="/", httponly=True)
        self.handshakes += 1
        return cookie, session

    @staticmethod
    def _xml(text: str, *, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(text=text, content_type="text/xml", headers=headers)

    # ---------------------------------------------------------------- handlers

    async def page(self, request: web.Request) -> web.Response:
        if not self.key.home_page:
            return web.Response(status=404, text="Not Found")
        resp = web.Response(content_type="text/html")
        _, session = self._new_session(resp)
        meta = ""
        if self.key.csrf_in_page:
            second = secrets.token_hex(16)
            meta = (f'<meta name="csrf_token" content="{session.token}"/>'
                    f'<meta name="csrf_token" content="{second}"/>')
        resp.text = f"<!DOCTYPE html><html><head>{meta}<title>HUAWEI</title></head><body></body></html>"
        return resp

    async def control(self, request: web.Request) -> web.Response:
        """`{"set": {field: value}, "do": ["expire_sessions" | "disconnect" | "connect" | ...]}`."""
        try:
            body = json.loads(await request.read() or b"{}")
            names = {f.name for f in fields(Key)}
            for name, value in body.get("set", {}).items():
                if name not in names:
                    raise ValueError(f"unknown key field {name!r}")
                setattr(self.key, name, set(value) if name in ("garbage", "login_required") else value)
            for action in body.get("do", []):
                if action == "expire_sessions":
                    self.expire_sessions()
                elif action in ("disconnect", "connect", "clear_traffic"):
                    getattr(self.key, action)()
                else:
                    raise ValueError(f"unknown action {action!r}")
        except (ValueError, TypeError, AttributeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"ok": True})

    async def api(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        key = self.key
        if endpoint in key.garbage or "*" in key.garbage:
            return web.Response(body=GARBAGE, content_type="text/html")
        if endpoint in key.errors:
            return self._xml(error(key.errors[endpoint]))
        if endpoint == "webserver/SesTokInfo":
            if not key.ses_tok_info:
                return self._xml(error(100002))
            cookie = request.cookies.get("SessionID", "")
            session = self.sessions.get(cookie)
            if session is None:
                cookie, session = self._new_session()
            return self._xml(response({"SesInfo": f"SessionID={cookie}", "TokInfo": session.token}))
        if endpoint == "webserver/token":
            session = self._cookie(request)
            if session is None:
                return self._xml(error(125002))
            return self._xml(response({"token": session.token}))
        session = self._cookie(request)
        if session is None:
            return self._xml(error(125002))
        if request.method == "POST":
            return await self._post(request, endpoint, session)
        if endpoint == "user/state-login":
            return self._xml(response({"State": 0 if session.logged_in else -1, "Username": "",
                                       "password_type": key.password_type}))
        if key.password is not None and endpoint in key.login_required and not session.logged_in:
            return self._xml(error(100003))
        answer = self._data(endpoint)
        if answer is None:
            return self._xml(error(100002))
        if endpoint in key.short:
            return web.Response(body=response(answer).encode()[:key.short[endpoint]], content_type="text/xml")
        return self._xml(response(answer))

    async def _post(self, request: web.Request, endpoint: str, session: Session) -> web.Response:
        if request.headers.get("__RequestVerificationToken") != session.token:
            return self._xml(error(125003))
        if endpoint != "user/login":
            return self._xml(error(100002))
        if self.login_failures >= self.key.max_login_failures:
            return self._xml(error(108007))
        text = (await request.read()).decode("utf-8", "replace")
        given = text.partition("<Password>")[2].partition("</Password>")[0]
        user = text.partition("<Username>")[2].partition("</Username>")[0]
        if self.key.password is None or user != self.key.username or given != self._encoded(session.token):
            self.login_failures += 1
            return self._xml(error(108006))
        self.login_failures = 0
        del self.sessions[request.cookies["SessionID"]]
        resp = self._xml(f"{XML_HEAD}<response>OK</response>\n")
        _, fresh = self._new_session(resp)
        fresh.logged_in = True
        one, two = secrets.token_hex(16), secrets.token_hex(16)
        fresh.token = one
        resp.headers["__RequestVerificationTokenone"] = one
        resp.headers["__RequestVerificationTokentwo"] = two
        return resp

    def _encoded(self, token: str) -> str:
        key = self.key
        assert key.password is not None
        if key.password_type == 4:  # what the key's web page computes in JavaScript
            inner = base64.b64encode(hashlib.sha256(key.password.encode()).hexdigest().encode()).decode()
            outer = hashlib.sha256((key.username + inner + token).encode()).hexdigest()
            return base64.b64encode(outer.encode()).decode()
        return base64.b64encode(key.password.encode()).decode()

    def _data(self, endpoint: str) -> dict[str, Any] | None:
        k = self.key
        if endpoint == "monitoring/status":
            out: dict[str, Any] = {
                "ConnectionStatus": k.connection_status, "WifiConnectionStatus": "",
                "SignalStrength": k.signal_strength, "SignalIcon": k.signal_icon,
                "CurrentNetworkType": k.network_type, "CurrentServiceDomain": 3,
                "RoamingStatus": k.roaming, "BatteryStatus": "", "BatteryLevel": "", "simlockStatus": 0,
                "WanIPAddress": "10.42.17.3" if k.connection_status == 901 else "", "WanIPv6Address": "",
                "PrimaryDns": "192.0.2.53", "SecondaryDns": "192.0.2.54", "CurrentWifiUser": "", "TotalWifiUser": "",
                "currenttotalwifiuser": 0, "ServiceStatus": 2, "SimStatus": 1, "WifiStatus": "",
                "maxsignal": 5, "wifiindooronly": 0, "wififrequence": 0, "classify": "hilink", "flymode": 0,
                "cellroam": 1}
            if k.network_type_ex is not None:
                out["CurrentNetworkTypeEx"] = k.network_type_ex
            return out
        if endpoint == "monitoring/traffic-statistics":
            return {"CurrentConnectTime": int(k.session_s), "CurrentUpload": int(k.session_tx),
                    "CurrentDownload": int(k.session_rx), "CurrentDownloadRate": int(k.rx_rate),
                    "CurrentUploadRate": int(k.tx_rate), "TotalUpload": int(k.total_tx),
                    "TotalDownload": int(k.total_rx), "TotalConnectTime": int(k.total_s), "showtraffic": 1}
        if endpoint == "device/signal":
            return {"pci": 144, "sc": "", "cell_id": k.cell_id, "rsrq": k.rsrq, "rsrp": k.rsrp, "rssi": k.rssi,
                    "sinr": k.sinr, "rscp": k.rscp, "ecio": k.ecio, "mode": k.mode, "ulbandwidth": "20MHz",
                    "dlbandwidth": "20MHz", "txpower": "PPusch:-3dBm", "tdd": "", "ul_mcs": "", "dl_mcs": "",
                    "earfcn": "DL:1650 UL:19650", "rrc_status": "", "rac": "", "lac": "", "tac": "4321",
                    "band": 3, "nei_cellid": "", "plmn": k.plmn, "ims": "", "wdlfreq": "", "lteulfreq": "",
                    "ltedlfreq": "", "transmode": "", "enodeb_id": "0531263", "cqi0": "", "cqi1": "", "ulfrequency": "",
                    "dlfrequency": ""}
        if endpoint == "net/current-plmn":
            registered = k.plmn != ""
            return {"State": 0 if registered else 1, "FullName": k.operator if registered else "",
                    "ShortName": k.operator.split()[0] if registered else "", "Numeric": k.plmn,
                    "Rat": {19: 7, 101: 7}.get(k.network_type, 2) if registered else ""}
        if endpoint == "device/information":
            return {"DeviceName": "E3372h-320", "SerialNumber": k.serial, "Imei": k.imei, "Imsi": k.imsi,
                    "Iccid": k.iccid, "Msisdn": k.msisdn, "HardwareVersion": "CL4E3372HM",
                    "SoftwareVersion": "22.328.62.00.1217", "WebUIVersion": "WEBUI 17.100.21.03.1217",
                    "MacAddress1": "0C:5B:8F:27:9A:64", "MacAddress2": "", "ProductFamily": "LTE",
                    "Classify": "hilink", "supportmode": "LTE|WCDMA|GSM", "workmode": "LTE"}
        return None


async def _serve(args: argparse.Namespace) -> None:
    key = Key(password=args.password, rx_rate=args.rx_rate, tx_rate=args.tx_rate, live=True,
              rsrp=f"{args.rsrp}dBm", session_s=0.0)
    sim = await HiLinkSimulator(key, host=args.host, port=args.port).start()
    print(f"HiLink simulator on {sim.url} (password: {'set' if args.password else 'none'}); "
          f"POST {sim.url}/_sim to script it; Ctrl-C to stop", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tice_agent.simulators.hilink",
                                description="A simulated Huawei HiLink 3G key (tests and demos).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8088)
    p.add_argument("--password", default=None, help="ask for a login before device/information")
    p.add_argument("--rx-rate", type=float, default=20_000.0, help="bytes/s received while connected")
    p.add_argument("--tx-rate", type=float, default=2_000.0, help="bytes/s sent while connected")
    p.add_argument("--rsrp", type=int, default=-95, help="RSRP in dBm")
    args = p.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
