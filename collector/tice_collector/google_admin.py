"""Google's Directory API, read-only: every managed Chromebook, one page of 300 at a time.

Auth: a service account with domain-wide delegation acting as a Workspace administrator
(google-auth's service-account credentials: a signed JWT exchanged at the token endpoint for an
access token of the read-only ChromeOS scope). Listing: `GET admin/directory/v1/customer/
{customer}/devices/chromeos?projection=FULL&maxResults=300`, then `pageToken` = the previous
`nextPageToken` until there is none (discovery document admin.directory_v1, rev 20261104).

`fields` asks Google for the device facts used here and nothing else, so user e-mails
(`recentUsers`, `annotatedUser`), locations, notes and network addresses never leave Google;
the parser reads the same fields alone, should a server send more.

Quota errors (403 `userRateLimitExceeded`, `rateLimitExceeded` or `quotaExceeded`; 429) and
server errors (5xx), timeouts and dropped connections are retried with exponential backoff and
full jitter (or Google's Retry-After); anything else is a GoogleError that says what to do.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
from msgspec import Struct

from tice_collector import serials
from tice_collector.settings import Settings

SCOPE = "https://www.googleapis.com/auth/admin.directory.device.chromeos.readonly"
PAGE_SIZE = 300  # the most the Directory API gives per page
RETRY_CAP_S = 64.0
QUOTA_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
DEVICE_FIELDS = ("deviceId", "serialNumber", "status", "orgUnitPath", "annotatedAssetId", "model", "osVersion",
                 "autoUpdateThrough", "autoUpdateExpiration", "lastSync", "activeTimeRanges",
                 "cpuStatusReports", "systemRamTotal", "systemRamFreeReports", "diskVolumeReports",
                 "diskSpaceUsage")
FIELDS = f"nextPageToken,chromeosdevices({','.join(DEVICE_FIELDS)})"
MAX_TEXT = 200  # longest OU path, model, asset id or OS version kept


class GoogleError(Exception):
    """The connector cannot go on; str() says why and what to do. `code`: 2 for the settings or
    the key file (fix them), 1 for Google refusing or unreachable."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- credentials

@dataclass
class Auth:
    """google-auth service-account credentials, and what error messages name."""

    creds: Any
    subject: str
    token_uri: str


def credentials(settings: Settings) -> Auth:
    """google-auth service-account credentials for SCOPE, acting as google_admin_subject.

    Raises GoogleError (code 2) for a missing, unreadable or wrong key file, naming the problem.
    """
    from google.oauth2 import service_account

    if not settings.google_key_file:
        raise GoogleError("google_key_file is not set: the Google Admin connector is off. Create a service "
                          "account key and set google_key_file (docs/chromebooks.md)", 2)
    if not settings.google_admin_subject:
        raise GoogleError("google_admin_subject is not set: name the Workspace administrator the service "
                          "account acts as (domain-wide delegation, docs/chromebooks.md)", 2)
    path = Path(settings.google_key_file).expanduser()
    where = f"google_key_file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GoogleError(f"{where}: not found; download the service account's JSON key from the Google Cloud "
                          "console (docs/chromebooks.md) and point google_key_file at it", 2) from None
    except OSError as e:
        raise GoogleError(f"{where}: cannot read ({e.strerror}); the collector's user must be able to read it",
                          2) from None
    try:
        info = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GoogleError(f"{where}: not a JSON key file ({e}); download the key again as JSON", 2) from None
    if not isinstance(info, dict):
        raise GoogleError(f"{where}: not a JSON key file (expected an object)", 2)
    if info.get("type") != "service_account":
        raise GoogleError(f"{where}: type is {info.get('type')!r}, not 'service_account'; create a key for a "
                          "service account, not an OAuth client (docs/chromebooks.md)", 2)
    if settings.google_token_url:
        info["token_uri"] = settings.google_token_url
    missing = [k for k in ("client_email", "private_key", "token_uri") if not isinstance(info.get(k), str)
               or not info[k]]
    if missing:
        raise GoogleError(f"{where}: missing {', '.join(missing)}; download the key again", 2)
    try:
        creds = service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE], subject=settings.google_admin_subject)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise GoogleError(f"{where}: the private key cannot be read ({type(e).__name__}: "
                          f"{str(e)[:200]}); download the key again", 2) from None
    return Auth(creds, settings.google_admin_subject, info["token_uri"])


async def refresh(auth: Auth, timeout_s: float) -> None:
    """Get an access token from the token endpoint (google-auth's refresh, in a thread)."""
    import google.auth.exceptions
    import google.auth.transport.requests
    import requests

    session = requests.Session()

    creds = auth.creds

    def run() -> None:
        try:
            creds.refresh(google.auth.transport.requests.Request(session))
        finally:
            session.close()

    try:
        await asyncio.wait_for(asyncio.to_thread(run), timeout_s + 5)
    except google.auth.exceptions.RefreshError as e:
        detail = " ".join(str(a) for a in e.args[:1])[:300]
        raise GoogleError(f"Google refused a token for {creds.service_account_email} acting as "
                          f"{auth.subject}: {detail}. Check domain-wide delegation of the service account's "
                          f"client id with the scope {SCOPE}, and that the subject is an administrator "
                          "(docs/chromebooks.md)") from None
    except (google.auth.exceptions.TransportError, TimeoutError) as e:
        raise GoogleError(f"cannot reach Google's token endpoint {auth.token_uri}: {str(e)[:300]}") from None


# ---------------------------------------------------------------- what is read

Int64 = int | str  # int64 fields are JSON strings in Google's APIs


class _Active(Struct, rename="camel"):
    date: str | None = None
    active_time: int | None = None


class _Temperature(Struct, rename="camel"):
    temperature: int | None = None


class _Cpu(Struct, rename="camel"):
    report_time: str | None = None
    cpu_utilization_percentage_info: list[int] = []
    cpu_temperature_info: list[_Temperature] = []


class _Ram(Struct, rename="camel"):
    report_time: str | None = None
    system_ram_free_info: list[Int64] = []


class _Volume(Struct, rename="camel"):
    volume_id: str | None = None
    storage_free: Int64 | None = None
    storage_total: Int64 | None = None


class _Disk(Struct, rename="camel"):
    volume_info: list[_Volume] = []


class _ByteUsage(Struct, rename="camel"):
    capacity_bytes: Int64 | None = None
    used_bytes: Int64 | None = None


class _Device(Struct, rename="camel"):
    """The fields of FIELDS, nothing else (unknown fields are skipped by the decoder)."""

    device_id: str
    serial_number: str | None = None
    status: str | None = None
    org_unit_path: str | None = None
    annotated_asset_id: str | None = None
    model: str | None = None
    os_version: str | None = None
    auto_update_through: str | None = None
    auto_update_expiration: Int64 | None = None
    last_sync: str | None = None
    active_time_ranges: list[_Active] = []
    cpu_status_reports: list[_Cpu] = []
    system_ram_total: Int64 | None = None
    system_ram_free_reports: list[_Ram] = []
    disk_volume_reports: list[_Disk] = []
    disk_space_usage: _ByteUsage | None = None


class _Page(Struct, rename="camel"):
    chromeosdevices: list[msgspec.Raw] = []
    next_page_token: str | None = None


@dataclass
class Chromebook:
    """One Chromebook as the connector keeps it: device-level facts only."""

    google_id: str
    serial: str
    status: str | None = None
    org_unit_path: str | None = None
    asset_id: str | None = None
    model: str | None = None
    os_version: str | None = None
    auto_update_through: datetime | None = None
    last_sync: datetime | None = None
    cpu_utilization_ratio: float | None = None
    cpu_temperature_c: float | None = None
    ram_total_bytes: int | None = None
    ram_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    active_ms: dict[date, int] = field(default_factory=dict)  # local day -> active milliseconds


@dataclass
class Page:
    number: int
    chromebooks: list[Chromebook]
    no_serial: int = 0  # listed without a usable serial number: cannot be matched
    unreadable: list[str] = field(default_factory=list)  # why each unreadable entry was skipped
    implausible: list[str] = field(default_factory=list)  # daily figures refused, and why


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = "".join(ch for ch in value if ch.isprintable())[:MAX_TEXT]
    return value or None


def _int(value: Int64 | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if 0 <= n < 2**63 else None


def _time(value: str | None) -> datetime | None:
    """An RFC 3339 date-time (or a date: midnight UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def day_length_s(day: date, tz: ZoneInfo) -> float:
    """Seconds in a local day: 86,400, or 82,800 / 90,000 on the days the clocks change."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = start + timedelta(days=1)
    return (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds()


def parse_device(raw: bytes, tz: ZoneInfo, today: date) -> tuple[Chromebook | None, list[str]]:
    """One `chromeosdevices[]` entry: (the Chromebook or None when it has no serial, the daily
    figures refused and why). Raises msgspec.ValidationError/DecodeError on a wrong shape."""
    d = msgspec.json.decode(raw, type=_Device)
    refused: list[str] = []
    try:
        serial = serials.normalise(d.serial_number or "")
    except serials.SerialError:
        return None, refused
    book = Chromebook(google_id=d.device_id[:200], serial=serial, status=_text(d.status),
                      org_unit_path=_text(d.org_unit_path), asset_id=_text(d.annotated_asset_id),
                      model=_text(d.model), os_version=_text(d.os_version), last_sync=_time(d.last_sync))
    book.auto_update_through = _time(d.auto_update_through)
    if book.auto_update_through is None and (ms := _int(d.auto_update_expiration)) is not None:
        book.auto_update_through = datetime.fromtimestamp(ms / 1000, UTC)  # the deprecated int64 field
    for r in d.active_time_ranges:
        try:
            day = date.fromisoformat(r.date or "")
        except ValueError:
            refused.append(f"{serial}: activeTimeRanges date {str(r.date)[:40]!r} is not a date")
            continue
        ms = r.active_time
        if ms is None or ms < 0 or ms > day_length_s(day, tz) * 1000:
            refused.append(f"{serial}: {day} activeTime {ms} ms is not within the day")
        elif day > today + timedelta(days=1):
            refused.append(f"{serial}: {day} is in the future")
        else:
            book.active_ms[day] = max(ms, book.active_ms.get(day, 0))
    _health(book, d)
    return book, refused


def _health(book: Chromebook, d: _Device) -> None:
    """The latest CPU, RAM and disk reports."""
    cpu = max(d.cpu_status_reports, key=lambda r: _time(r.report_time) or datetime.min.replace(tzinfo=UTC),
              default=None)
    if cpu is not None:
        pcts = [p for p in cpu.cpu_utilization_percentage_info if 0 <= p <= 100]
        if pcts:
            book.cpu_utilization_ratio = sum(pcts) / len(pcts) / 100
        temps = [t.temperature for t in cpu.cpu_temperature_info if t.temperature is not None]
        if temps:
            book.cpu_temperature_c = float(max(temps))
    book.ram_total_bytes = _int(d.system_ram_total)
    ram = max(d.system_ram_free_reports, key=lambda r: _time(r.report_time) or datetime.min.replace(tzinfo=UTC),
              default=None)
    if ram is not None:
        free = [n for n in map(_int, ram.system_ram_free_info) if n is not None]
        if free:
            book.ram_free_bytes = free[-1]
    usage = d.disk_space_usage
    capacity, used = (_int(usage.capacity_bytes), _int(usage.used_bytes)) if usage else (None, None)
    if capacity is not None and used is not None and used <= capacity:
        book.disk_total_bytes, book.disk_free_bytes = capacity, capacity - used
        return
    # Older devices: the largest volume of the latest report (the user data partition).
    volumes = [v for report in d.disk_volume_reports[-1:] for v in report.volume_info
               if _int(v.storage_total) is not None]
    if volumes:
        v = max(volumes, key=lambda v: _int(v.storage_total) or 0)
        book.disk_total_bytes, book.disk_free_bytes = _int(v.storage_total), _int(v.storage_free)


# ---------------------------------------------------------------- the API

def retry_delay(attempt: int, base_s: float, retry_after: str | None) -> float:
    """Seconds before retry number `attempt` (0 = the first): Google's Retry-After when it gives
    seconds, else full jitter, uniform in [0, min(64, base * 2**attempt)]."""
    if retry_after is not None and retry_after.strip().isdigit():
        return min(float(retry_after.strip()), RETRY_CAP_S)
    return random.uniform(0, min(RETRY_CAP_S, base_s * 2**attempt))


def _reasons(body: bytes) -> tuple[set[str], str]:
    """Google's error reasons and message, from {"error": {"errors": [{"reason"}], "message"}}."""
    try:
        err = json.loads(body).get("error", {})
        reasons = {e.get("reason", "") for e in err.get("errors", []) if isinstance(e, dict)}
        return reasons, str(err.get("message", ""))[:300]
    except (ValueError, AttributeError, TypeError):
        return set(), body[:200].decode("utf-8", "replace")


class Directory:
    """The ChromeOS devices of one customer, page after page. Use as `async with`.

    `retries` counts the requests retried after a quota or server error, a timeout or a
    dropped connection; `on_retry(attempt, why, delay)` hears each one.
    """

    def __init__(self, settings: Settings, auth: Auth, *,
                 on_retry: Callable[[int, str, float], None] | None = None) -> None:
        self.settings = settings
        self.auth = auth
        self.retries = 0
        self.on_retry = on_retry
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Directory:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.google_timeout_s),
                                           raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    @property
    def url(self) -> str:
        base = self.settings.google_directory_url.rstrip("/")
        return f"{base}/admin/directory/v1/customer/{self.settings.google_customer_id}/devices/chromeos"

    async def pages(self, tz: ZoneInfo, today: date) -> AsyncIterator[Page]:
        """Every page of Chromebooks, parsed. Raises GoogleError."""
        token: str | None = None
        number = 0
        while True:
            number += 1
            params = {"projection": "FULL", "maxResults": str(PAGE_SIZE), "fields": FIELDS}
            if token:
                params["pageToken"] = token
            body = await self._get(params, number)
            try:
                page = msgspec.json.decode(body, type=_Page)
            except msgspec.DecodeError as e:
                raise GoogleError(f"page {number} of the Directory API answer is not the documented JSON: {e}") \
                    from None
            out = Page(number, [])
            for raw in page.chromeosdevices:
                try:
                    book, refused = parse_device(bytes(raw), tz, today)
                except msgspec.DecodeError as e:
                    out.unreadable.append(f"page {number}: a device entry skipped: {e}")
                    continue
                out.implausible += refused
                if book is None:
                    out.no_serial += 1
                else:
                    out.chromebooks.append(book)
            yield out
            token = page.next_page_token
            if not token:
                return

    async def _get(self, params: dict[str, str], number: int) -> bytes:
        assert self._http is not None
        attempt = 0
        refreshed = False
        while True:
            creds = self.auth.creds
            if not creds.valid:
                await refresh(self.auth, self.settings.google_timeout_s)
            why: str
            retry_after = None
            try:
                async with self._http.get(self.url, params=params,
                                          headers={"Authorization": f"Bearer {creds.token}"}) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as e:
                status, body = 0, b""
                why = f"{type(e).__name__} {str(e)[:100]}".strip()
            if status == 200:
                return body
            if status:
                reasons, message = _reasons(body)
                why = f"{status} {', '.join(sorted(reasons)) or message}"
                if status == 401 and not refreshed:  # the token expired early: one new token
                    creds.token = None
                    refreshed = True
                    continue
                quota = status == 429 or status >= 500 or (status == 403 and reasons & QUOTA_REASONS)
                if not quota:
                    raise GoogleError(self._refusal(status, reasons, message, number))
            if attempt >= self.settings.google_max_retries:
                raise GoogleError(f"the Directory API still fails after {attempt} retries (page {number}: {why}); "
                                  "the next sync starts again from the first page")
            delay = retry_delay(attempt, self.settings.google_retry_base_s, retry_after)
            self.retries += 1
            if self.on_retry is not None:
                self.on_retry(attempt + 1, why, delay)
            attempt += 1
            await asyncio.sleep(delay)

    def _refusal(self, status: int, reasons: set[str], message: str, number: int) -> str:
        said = f"{status} {message or ', '.join(sorted(reasons))}".strip()
        if status == 403:
            return (f"Google refused to list Chromebooks ({said}): the administrator "
                    f"{self.settings.google_admin_subject} needs the admin privilege to read ChromeOS devices, "
                    "and the Admin SDK API must be on in the service account's Cloud project (docs/chromebooks.md)")
        if status == 404 or status == 400:
            return (f"Google refused to list Chromebooks ({said}): check google_customer_id "
                    f"({self.settings.google_customer_id!r}; 'my_customer' is the administrator's own)")
        return f"Google refused page {number} of the Chromebook list ({said})"
