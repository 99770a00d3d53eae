"""A simulated Google Admin domain: the OAuth token endpoint and the Directory API's ChromeOS
device list, over HTTP on aiohttp, for the collector's Google Admin connector (tests and demos).

What it does like Google (discovery document admin.directory_v1, rev 20261104):
- `POST /token` takes a service account's signed JWT (`grant_type=urn:ietf:params:oauth:
  grant-type:jwt-bearer`, `assertion=`), checks its RS256 signature against the service
  account's public key, its issuer, audience (Google's token endpoint), lifetime, scope and subject (the
  delegated administrator), and mints an access token for an hour; errors as Google's
  (`invalid_grant`, `unauthorized_client`).
- `GET /admin/directory/v1/customer/{customer}/devices/chromeos` wants a live bearer token,
  `my_customer` or the customer id, `maxResults` up to 300 (100 by default), and pages with an
  opaque `pageToken`/`nextPageToken`. `projection=FULL` adds the full fields; BASIC gives the
  basic ones. It ignores `fields` and sends everything, user e-mails included (`recentUsers`,
  `annotatedUser`): the worst a client may meet.
- Scripted failures: the next requests answer 403 `userRateLimitExceeded` / `quotaExceeded`,
  429 or 5xx in Google's error shape (`fail_next`).

The domain (`make_domain`) is made up and reproducible from a seed: Chromebooks across school
OUs, with and without `activeTimeRanges`, with fields missing here and there, the deprecated
`autoUpdateExpiration` instead of `autoUpdateThrough` on some, and e-mails on a fake domain.

    python -m tice_collector.simulators.google_admin --port 8099 --devices 1500 --key-out google-key.json

writes a service-account key file whose `token_uri` is the simulator's, for the collector's
google_key_file. Test and demo code: it needs aiohttp and google-auth (the collector's).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

SCOPE = "https://www.googleapis.com/auth/admin.directory.device.chromeos.readonly"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience of a service account's JWT: Google's token endpoint, whatever address the token
# request goes to (google-auth's service_account sets it so).
AUDIENCE = "https://oauth2.googleapis.com/token"
DOMAIN = "ecoles-dijon.example"
OUS = ("/Écoles/Jules Ferry", "/Écoles/Pasteur", "/Écoles/Montchapet/CM1", "/Écoles/Montchapet/CM2",
       "/Écoles/Champollion", "/Réserve")
MODELS = (("Lenovo 100e Chromebook 2nd Gen (MTK)", "2029-06-01T00:00:00Z"),
          ("Acer Chromebook Spin 511 (R753T)", "2031-06-01T00:00:00Z"),
          ("HP Chromebook 11 G8 EE", "2028-06-01T00:00:00Z"),
          ("Dell Chromebook 3100", "2026-06-01T00:00:00Z"))
BASIC = ("kind", "etag", "deviceId", "serialNumber", "status", "annotatedUser", "annotatedLocation",
         "annotatedAssetId", "notes", "model", "orgUnitPath", "lastSync")


# ---------------------------------------------------------------- a service account

def make_key(token_uri: str, email: str = f"tice-connector@tice-{DOMAIN.split('.')[0]}.iam.gserviceaccount.com"
             ) -> tuple[dict[str, Any], bytes]:
    """A new service account key (a real 2048-bit RSA key), as Google's JSON key file holds it,
    and its public key in PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"type": "service_account", "project_id": email.split("@")[1].split(".")[0],
            "private_key_id": secrets.token_hex(20), "private_key": pem, "client_email": email,
            "client_id": str(random.randrange(10**20, 10**21)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com"}
    return info, public


# ---------------------------------------------------------------- a domain

def make_domain(n: int, *, today: date, seed: int = 1, days: int = 30, serials: tuple[str, ...] = (),
                ous: tuple[str, ...] = OUS) -> list[dict[str, Any]]:
    """`n` Chromebooks as the Directory API lists them (projection FULL), reproducible from `seed`.

    The first serials are `serials`, the rest 5CD + 7 digits. About one in eight has no
    `activeTimeRanges` (never used, or its policy does not report activity), one in ten lacks
    its model or health reports, one in six has only the deprecated `autoUpdateExpiration`.
    Activity: on most weekdays of the last `days` days (today included, partial), milliseconds.
    """
    rng = random.Random(seed)
    out = []
    taken = set(serials)
    for i in range(n):
        serial = serials[i] if i < len(serials) else ""
        while not serial or (i >= len(serials) and serial in taken):
            serial = f"5CD{rng.randrange(10**7):07d}"
        taken.add(serial)
        model, aue = rng.choice(MODELS)
        last_sync = datetime.combine(today, datetime.min.time(), UTC) - timedelta(minutes=rng.randrange(60 * 48))
        d: dict[str, Any] = {
            "kind": "admin#directory#chromeosdevice", "etag": f'"{secrets.token_hex(8)}"',
            "deviceId": str(uuid.UUID(int=rng.getrandbits(128))), "serialNumber": serial, "status": "ACTIVE",
            "lastSync": last_sync.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "annotatedUser": f"enseignant.{i}@{DOMAIN}", "annotatedLocation": f"Salle {i % 12 + 1}",
            "annotatedAssetId": f"DIJ-CB-{i:05d}", "notes": f"prêté à eleve.{i}@{DOMAIN}",
            "model": model, "orgUnitPath": ous[i % len(ous)], "osVersion": "128.0.6613.130",
            "platformVersion": "15964.59.0 (Official Build) stable-channel",
            "macAddress": f"{rng.getrandbits(48):012x}", "meid": f"{rng.randrange(10**14):014d}",
            "lastKnownNetwork": [{"ipAddress": f"10.21.{i % 250}.{i % 200 + 2}", "wanIpAddress": "203.0.113.7"}],
            "recentUsers": [{"type": "USER_TYPE_MANAGED", "email": f"eleve.{i}.{k}@{DOMAIN}"} for k in range(3)],
            "autoUpdateThrough": aue,
            "cpuStatusReports": [{"reportTime": last_sync.isoformat().replace("+00:00", "Z"),
                                  "cpuUtilizationPercentageInfo": [rng.randrange(100) for _ in range(4)],
                                  "cpuTemperatureInfo": [{"label": "soc", "temperature": rng.randrange(35, 80)}]}],
            "systemRamTotal": str(4 * 2**30),
            "systemRamFreeReports": [{"reportTime": last_sync.isoformat().replace("+00:00", "Z"),
                                      "systemRamFreeInfo": [str(rng.randrange(2**29, 2**31))]}],
            "diskVolumeReports": [{"volumeInfo": [{"volumeId": "/home/chronos", "storageTotal": str(32 * 10**9),
                                                   "storageFree": str(rng.randrange(10**9, 30 * 10**9))}]}],
        }
        if i % 6 == 5:  # an older record: the deprecated int64 milliseconds only
            del d["autoUpdateThrough"]
            d["autoUpdateExpiration"] = str(int(datetime.fromisoformat(aue).timestamp() * 1000))
        if i % 10 == 9:
            for key in ("model", "cpuStatusReports", "systemRamFreeReports", "diskVolumeReports"):
                d.pop(key, None)
        if i % 8 != 7:
            ranges = []
            for back in range(days, -1, -1):
                day = today - timedelta(days=back)
                if day.weekday() < 5 and rng.random() < 0.85:
                    ranges.append({"date": day.isoformat(), "activeTime": rng.randrange(1, 5 * 3600 * 1000)})
            if ranges:
                d["activeTimeRanges"] = ranges
        out.append(d)
    return out


# ---------------------------------------------------------------- the server

@dataclass
class Failure:
    status: int
    reason: str
    retry_after: str | None = None


QUOTA = (Failure(403, "userRateLimitExceeded"), Failure(403, "quotaExceeded"), Failure(429, "rateLimitExceeded"),
         Failure(503, "backendError"), Failure(500, "backendError"))


@dataclass
class FakeGoogle:
    """The domain's state: a test changes it directly, a demo with `POST /_sim`."""

    devices: list[dict[str, Any]]
    client_email: str
    public_key: bytes  # PEM of the service account's public key
    admin_subject: str = f"admin@{DOMAIN}"
    customer_id: str = "C03az79cb"
    token_ttl_s: int = 3600
    fail_next: list[Failure] = field(default_factory=list)  # served first, in order
    fail_pages: dict[int, list[Failure]] = field(default_factory=dict)  # page offset -> served on that page
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (monotonic)
    token_requests: int = 0
    refused_tokens: list[str] = field(default_factory=list)  # why each refused token request was
    granted_claims: list[dict[str, Any]] = field(default_factory=list)  # the claims of each JWT accepted
    list_requests: list[dict[str, str]] = field(default_factory=list)  # query of every list request
    _pages: dict[str, int] = field(default_factory=dict)  # pageToken -> offset

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/admin/directory/v1/customer/{customer}/devices/chromeos", self._list)
        app.router.add_post("/_sim", self._sim)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        from google.auth import exceptions, jwt

        self.token_requests += 1
        form = await request.post()

        def refuse(status: int, error: str, description: str) -> web.Response:
            self.refused_tokens.append(f"{error}: {description}")
            return web.json_response({"error": error, "error_description": description}, status=status)

        if form.get("grant_type") != JWT_GRANT:
            return refuse(400, "unsupported_grant_type", "Invalid grant_type: " + str(form.get("grant_type")))
        try:
            claims = jwt.decode(str(form.get("assertion", "")), certs=self.public_key, audience=AUDIENCE,
                                clock_skew_in_seconds=30)
        except (ValueError, exceptions.GoogleAuthError) as e:
            return refuse(400, "invalid_grant", f"Invalid JWT: {e}")
        if claims.get("iss") != self.client_email:
            return refuse(401, "invalid_client", f"The OAuth client was not found: {claims.get('iss')}")
        if SCOPE not in str(claims.get("scope", "")).split():
            return refuse(400, "invalid_scope", f"scope must include {SCOPE}")
        if claims.get("sub") != self.admin_subject:
            return refuse(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this "
                          "method, or client not authorized for any of the scopes requested.")
        self.granted_claims.append(claims)
        token = "ya29.sim-" + secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_ttl_s
        return web.json_response({"access_token": token, "expires_in": self.token_ttl_s, "token_type": "Bearer"})

    async def _list(self, request: web.Request) -> web.Response:
        self.list_requests.append(dict(request.query))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or self.tokens.get(token, 0) < time.monotonic():
            return _error(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication credential.")
        if self.fail_next:
            f = self.fail_next.pop(0)
            message = {403: "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user'.",
                       429: "Rate Limit Exceeded", 500: "Backend Error",
                       503: "The service is currently unavailable."}.get(f.status, "Error")
            return _error(f.status, f.reason, message, retry_after=f.retry_after)
        start = 0
        if "pageToken" in request.query:
            if request.query["pageToken"] not in self._pages:
                return _error(400, "invalid", "Invalid Input: pageToken")
            start = self._pages[request.query["pageToken"]]
        if self.fail_pages.get(start):
            f = self.fail_pages[start].pop(0)
            return _error(f.status, f.reason, "Quota exceeded or backend error", retry_after=f.retry_after)
        if request.match_info["customer"] not in ("my_customer", self.customer_id):
            return _error(400, "badRequest", "Bad Request")
        raw = request.query.get("maxResults", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 300:
            return _error(400, "invalid", f"Invalid value '{raw}'. Values must be within the range: [1, 300]")
        size = int(raw)
        full = request.query.get("projection", "BASIC").upper() == "FULL"
        chunk = [d if full else {k: v for k, v in d.items() if k in BASIC}
                 for d in self.devices[start:start + size]]
        body: dict[str, Any] = {"kind": "admin#directory#chromeosdevices", "etag": f'"{secrets.token_hex(8)}"'}
        if chunk:
            body["chromeosdevices"] = chunk
        if start + size < len(self.devices):
            nxt = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
            self._pages[nxt] = start + size
            body["nextPageToken"] = nxt
        return web.json_response(body)

    async def _sim(self, request: web.Request) -> web.Response:
        """`{"fail_next": [[403, "userRateLimitExceeded"], ...]}` from loopback, for demos."""
        if request.remote not in ("127.0.0.1", "::1"):
            raise web.HTTPForbidden()
        try:
            body = await request.json()
            self.fail_next += [Failure(int(s), str(r)) for s, r in body.get("fail_next", [])]
        except (ValueError, TypeError, AttributeError) as e:
            raise web.HTTPBadRequest(text=f"expected {{\"fail_next\": [[status, reason], ...]}}: {e}") from None
        return web.json_response({"fail_next": len(self.fail_next), "devices": len(self.devices)})


def _error(status: int, reason: str, message: str, retry_after: str | None = None) -> web.Response:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
             500: "INTERNAL", 503: "UNAVAILABLE"}
    domain = "usageLimits" if reason in ("userRateLimitExceeded", "quotaExceeded", "rateLimitExceeded") else "global"
    body = {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN"),
                      "errors": [{"message": message, "domain": domain, "reason": reason}]}}
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


class Server:
    """The simulator on a loopback port: `await Server(fake).start()`, then `.url`, `.stop()`."""

    def __init__(self, fake: FakeGoogle, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake, self.host, self.port = fake, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> Server:
        self._runner = web.AppRunner(self.fake.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ---------------------------------------------------------------- command line

async def _serve(server: Server, banner: str) -> None:
    await server.start()
    print(f"Google Admin simulator on {server.url}: {banner}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tice_collector.simulators.google_admin",
                                description="A simulated Google Admin domain of Chromebooks (tests and demos).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--devices", type=int, default=1500, help="Chromebooks in the domain")
    p.add_argument("--serials", default="", help="comma-separated serials for the first Chromebooks")
    p.add_argument("--seed", type=int, default=1, help="the domain is the same for the same seed")
    p.add_argument("--today", default="", help="YYYY-MM-DD: the last day with activity (default: today)")
    p.add_argument("--admin", default=f"admin@{DOMAIN}", help="the administrator the key may act as")
    p.add_argument("--quota-errors", type=int, default=0, help="answer the first N list requests with quota errors")
    p.add_argument("--key-out", default="google-key.json", help="where to write the service account key")
    args = p.parse_args(argv)
    info, public = make_key(f"http://{args.host}:{args.port}/token")
    today = date.fromisoformat(args.today) if args.today else date.today()
    serials = tuple(s for s in args.serials.split(",") if s)
    fake = FakeGoogle(make_domain(args.devices, today=today, seed=args.seed, serials=serials),
                      info["client_email"], public, admin_subject=args.admin)
    fake.fail_next += [QUOTA[i % 2] for i in range(args.quota_errors)]
    key = Path(args.key_out)
    key.write_text(json.dumps(info, indent=2) + "\n")
    key.chmod(0o600)
    banner = (f"{args.devices} Chromebooks, administrator {args.admin}; service account key in {args.key_out}")
    try:
        asyncio.run(_serve(Server(fake, host=args.host, port=args.port), banner))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
