"""The sender: moves batches from the spool to the collector, at least once.

The retry rule (the same as OTLP exporters and Prometheus remote write):
* 200: the collector committed the batch; only then are the records deleted from the spool.
* network error, timeout, 408, 429, 5xx: the batch goes back to the spool and is retried after
  max(Retry-After, uniform(0, min(cap, base * factor**attempt))): exponential backoff with
  full jitter, never sooner than the server asked. Other unexpected answers (404, 3xx...) are
  treated the same way: they are configuration problems an admin can fix, so data is kept.
* 400, 403, 413: the collector will never take this batch. Retrying cannot help, so its
  records are removed and counted as dead letters, with the reason from the problem body.
* 401: the token is unknown or revoked. With a kept enrol secret the agent enrols again and
  resends; otherwise it backs off and logs that an administrator must re-enrol the device.
  Credentials damaged (credentials.json unreadable) or missing: the records wait in the spool.
  In these three cases the sender watches credentials.json (inode, mtime, size; every
  CREDENTIALS_CHECK_S while it waits), and sends at once with the new credentials that
  `tice-agent enroll` writes, whatever is left of its backoff.
Every batch taken from the spool is settled whatever happens (acknowledged, dead-lettered or
put back), and put back with what is known of its fate: a request that surely never reached
the collector (refused, no route, 401, 429) lets its records be re-dated if the clock jumps
(agents/tice_agent/spool.py); one that may have been stored (a timeout, a 5xx) does not.
A failure is logged when it starts and when it ends, not at every retry (agents/tice_agent/condition.py).
After an outage the backlog drains at most `drain_batches_per_s` batches per second, and the
first send after start waits a random delay, so a school's laptops that all wake at 8:00 do
not hit the collector in the same second.

HTTP goes through `tice_agent.http` (the standard library in a daemon thread): no aiohttp in the agent.
"""

from __future__ import annotations

import asyncio
import enum
import gzip
import logging
import random
import ssl
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import msgspec

from tice_agent import http
from tice_agent import state as st
from tice_agent.condition import Condition
from tice_agent.config import AgentConfig
from tice_agent.spool import Spool, SpoolBatch
from tice_wire import BatchResult, EnrollRequest, EnrollResult, Problem

log = logging.getLogger("tice.agent.sender")

MAX_RETRY_AFTER_S = 86_400.0  # a bogus header must not park the agent for a year
CREDENTIALS_CHECK_S = 1.0  # how often a sender waiting for new credentials looks (one stat)


def agent_version() -> str:
    """This agent's version, as its distribution declares it (agents/pyproject.toml, the same as
    `tice_agent.__version__`; importlib.metadata would cost the daemon 0.6 MiB of modules)."""
    from tice_agent import __version__

    return __version__


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 900.0

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the wait after `attempt` consecutive failures (0-based)."""
        try:
            return min(self.cap_s, self.base_s * self.factor ** attempt)
        except OverflowError:
            return self.cap_s

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full jitter in [0, ceiling], but never less than what the server asked for."""
        return max(retry_after or 0.0, rng.uniform(0.0, self.ceiling(attempt)))


class Outcome(enum.Enum):
    SENT = "sent"                  # 200: acknowledged and deleted
    EMPTY = "empty"                # nothing to send
    RETRY = "retry"                # kept; back off and try again
    DEAD_LETTER = "dead_letter"    # refused for good; removed and counted
    AUTH = "auth"                  # 401 that re-enrolment did not (or could not) heal
    NOT_ENROLLED = "not_enrolled"  # no credentials yet
    BAD_CREDENTIALS = "bad_credentials"  # credentials.json damaged or unreadable


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status: int | None = None
    records: int = 0
    retry_after: float | None = None
    reason: str = ""


class EnrollError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def ssl_context(ca_bundle: str = "") -> ssl.SSLContext:
    """System trust store plus an optional private CA. Verification is never turned off."""
    ctx = ssl.create_default_context()  # parses every system CA: some 2 MiB, for https only
    if ca_bundle:
        ctx.load_verify_locations(cafile=str(Path(ca_bundle).expanduser()))
    return ctx


def _tls(url: str) -> bool:
    return url[:8].lower() == "https://"


def _problem(status: int, body: bytes) -> str:
    try:
        p = msgspec.json.decode(body, type=Problem)
        return f"HTTP {status} {p.error}: {p.detail}"[:300]
    except msgspec.MsgspecError:
        text = body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {status}" + (f": {text}" if text else "")


async def enroll(server: str, secret: str, serial: str, kind: str, *, ca_bundle: str = "",
                 timeout_s: float = 30.0) -> EnrollResult:
    """Trade the school's enrol secret for this device's token. Raises EnrollError."""
    body = msgspec.json.encode(EnrollRequest(secret=secret, serial=serial, kind=kind))  # type: ignore[arg-type]
    try:
        answer = await http.post(f"{server}/api/v1/enroll", body, {"Content-Type": "application/json"},
                                 timeout_s=timeout_s, context=ssl_context(ca_bundle) if _tls(server) else None)
    except http.NetworkError as e:
        raise EnrollError(f"cannot reach {server}: {e}") from None
    if answer.status != 201:
        raise EnrollError(_problem(answer.status, answer.body), answer.status)
    try:
        return msgspec.json.decode(answer.body, type=EnrollResult)
    except msgspec.MsgspecError as e:
        raise EnrollError(f"unexpected enrol answer: {e}", answer.status) from None


class _OutBatch(msgspec.Struct):
    """tice_wire.Batch with records already encoded by the spool (embedded as raw JSON)."""

    device_id: uuid.UUID
    spool: uuid.UUID
    sent_at: datetime
    records: list[msgspec.Raw]
    dropped: int
    agent_version: str


Sleep = Callable[[float], Awaitable[None]]


class Sender:
    def __init__(self, cfg: AgentConfig, spool: Spool, status: st.StatusStore, *,
                 sleep: Sleep = asyncio.sleep, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.spool = spool
        self.store = status
        self.state_dir = cfg.state_path
        self.sleep = sleep
        self.now = now
        self.rng = rng or random.Random()
        s = cfg.send
        self.backoff = Backoff(s.backoff_base_s, s.backoff_factor, s.backoff_cap_s)
        self.version = agent_version()
        self._tls: ssl.SSLContext | None = None
        self._reenrolled = False
        self._auth_logged = False
        self.delays: deque[float] = deque(maxlen=100)  # the latest backoff waits requested
        self.failing = Condition(log, "sending to the collector fails, will retry", logging.WARNING)
        self._stamp: tuple[int, int, int] | None = None  # credentials.json as last read
        self.broken = Condition(log, "sender step failed")

    @property
    def sstatus(self) -> st.SenderStatus:
        return self.store.status.sender

    def _context(self, server: str) -> ssl.SSLContext | None:
        """The TLS context for an https:// collector, made once; None for http:// (loopback)."""
        if not _tls(server):
            return None
        if self._tls is None:
            self._tls = ssl_context(self.cfg.ca_bundle)
        return self._tls

    def _body(self, creds: st.Credentials, batch: SpoolBatch) -> bytes:
        out = _OutBatch(device_id=creds.device_id, spool=batch.spool, sent_at=self.now(),
                        records=[msgspec.Raw(b) for b in batch.bodies], dropped=min(batch.dropped, 2**31),
                        agent_version=self.version[:64])
        return msgspec.json.encode(out)

    async def send_once(self) -> Result:
        """Send one batch and settle its records. Never raises for HTTP or network trouble."""
        self._stamp = st.credentials_stamp(self.state_dir)
        try:
            creds = st.load_credentials(self.state_dir)  # re-read: an admin may have re-enrolled
        except st.CredentialsError as e:
            return Result(Outcome.BAD_CREDENTIALS, reason=str(e))
        if creds is None:
            return Result(Outcome.NOT_ENROLLED, reason="not enrolled: run `tice-agent enroll`")
        batch = self.spool.begin_batch(self.cfg.batch.max_records, self.cfg.batch.max_bytes)
        if not batch.sendable:
            return Result(Outcome.EMPTY)
        server = self.cfg.server or creds.server
        try:
            body = self._body(creds, batch)
            headers = {"Authorization": f"Bearer {creds.token}", "Content-Type": "application/json"}
            if len(body) >= self.cfg.send.gzip_min_bytes:
                body = gzip.compress(body, compresslevel=6)
                headers["Content-Encoding"] = "gzip"
            self.sstatus.last_attempt_at = self.now()
            reply = await http.post(f"{server}/api/v1/reports", body, headers, timeout_s=self.cfg.send.timeout_s,
                                    context=self._context(server))
            status, retry_after, answer = reply.status, reply.header("Retry-After"), reply.body
        except http.NetworkError as e:
            self.spool.release(batch, maybe_stored=e.maybe_sent)
            return Result(Outcome.RETRY, records=len(batch), reason=str(e)[:300])
        except BaseException:
            self.spool.release(batch)  # cancelled at shutdown: resend next time
            raise

        if status == 200:
            self.spool.ack(batch)
            self._settled(answer, len(batch))
            return Result(Outcome.SENT, status, len(batch))
        reason = _problem(status, answer)
        if status in (400, 403, 413):
            n = self.spool.dead_letter(batch, reason)
            log.error("collector refused a batch for good; %d records dropped as dead letters: %s", n, reason)
            return Result(Outcome.DEAD_LETTER, status, n, reason=reason)
        # 401 and 429 are answered before anything is stored; anything else may follow a commit.
        self.spool.release(batch, maybe_stored=status not in (401, 429))
        if status == 401:
            if creds.secret and not self._reenrolled:
                self._reenrolled = True
                if await self._reenroll(creds, server):
                    return await self.send_once()
            return Result(Outcome.AUTH, status, len(batch), reason=reason)
        wait = parse_retry_after(retry_after, self.now())
        if status != 408 and status != 429 and status < 500:
            log.warning("unexpected answer from the collector, will retry: %s", reason)
        return Result(Outcome.RETRY, status, len(batch), retry_after=wait, reason=reason)

    def _settled(self, answer: bytes, n: int) -> None:
        s = self.sstatus
        s.last_success_at = self.now()
        s.batches_sent += 1
        s.records_sent += n
        s.auth_failed = False
        self._reenrolled = False
        self._auth_logged = False
        try:
            res = msgspec.json.decode(answer, type=BatchResult)
        except msgspec.MsgspecError:
            return  # 200 means committed; an odd body does not change that
        s.records_duplicate += res.duplicates
        s.records_rejected += res.rejected
        s.clock_offset_s = res.clock_offset_s
        if res.rejected:
            log.warning("collector stored the batch but rejected %d records: %s", res.rejected,
                        ", ".join(sorted({r.reason for r in res.rejections})))

    async def _reenroll(self, creds: st.Credentials, server: str) -> bool:
        assert creds.secret is not None
        try:
            res = await enroll(server, creds.secret, creds.serial, creds.kind, ca_bundle=self.cfg.ca_bundle,
                               timeout_s=self.cfg.send.timeout_s)
        except EnrollError as e:
            log.error("device token rejected and re-enrolment failed: %s", e)
            return False
        st.save_credentials(self.state_dir, msgspec.structs.replace(
            creds, server=server, device_id=res.device_id, token=res.token, school=res.school,
            enrolled_at=self.now(), peripheral_salt=res.peripheral_salt or creds.peripheral_salt))
        log.warning("device token was rejected; enrolled again as device %s", res.device_id)
        return True

    async def step(self) -> Result:
        """One send, then the wait the rule asks for. `run` is this in a loop."""
        s, cfg = self.sstatus, self.cfg.send
        r = await self.send_once()
        if r.outcome in (Outcome.SENT, Outcome.DEAD_LETTER):
            s.attempt, s.next_attempt_at, s.last_error = 0, None, (r.reason or None)
            self.failing.ok()
            self.store.save()
            if self.spool.depth():
                await self.sleep(1.0 / cfg.drain_batches_per_s)  # drain without a burst
            else:
                await self.sleep(self._idle())
            return r
        if r.outcome is Outcome.EMPTY:
            self.spool.maintain()  # counts a full disk kept in memory reach the file when it can
            await self.sleep(self._idle())
            return r
        if r.outcome in (Outcome.NOT_ENROLLED, Outcome.BAD_CREDENTIALS):
            if not self._auth_logged:
                level = logging.WARNING if r.outcome is Outcome.NOT_ENROLLED else logging.ERROR
                log.log(level, "%s; records are kept in the spool meanwhile", r.reason)
                self._auth_logged = True
            if r.outcome is Outcome.BAD_CREDENTIALS and s.last_error != r.reason:
                s.last_error = r.reason
                self.store.save()
            if await self._pause(self._idle(), wake=True):
                self._new_credentials()
            return r
        if r.outcome is Outcome.AUTH:
            s.auth_failed = True
            if not self._auth_logged:
                log.error("the collector rejects this device's token (%s); an administrator must re-enrol "
                          "this device with `tice-agent enroll`; records are kept meanwhile", r.reason)
                self._auth_logged = True
        else:
            self.failing.fail(r.reason or f"HTTP {r.status}")
        delay = self.backoff.delay(s.attempt, self.rng, r.retry_after)
        self.delays.append(delay)
        s.attempt += 1
        s.last_error = r.reason
        s.next_attempt_at = self.now() + timedelta(seconds=delay)
        self.store.save()
        if await self._pause(delay, wake=r.outcome is Outcome.AUTH):
            self._new_credentials()
        self._reenrolled = False  # after a backoff, a kept secret may be tried once more
        return r

    def _idle(self) -> float:
        return self.cfg.send.interval_s * self.rng.uniform(0.9, 1.1)

    async def _pause(self, delay: float, *, wake: bool) -> bool:
        """Wait `delay` s; with `wake`, stop waiting as soon as credentials.json differs from
        the one last read, and say so (True)."""
        if not wake:
            await self.sleep(delay)
            return False
        sleeper = asyncio.ensure_future(self.sleep(delay))
        watcher = asyncio.ensure_future(self._credentials_changed())
        try:
            done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, watcher):
                task.cancel()
            await asyncio.gather(sleeper, watcher, return_exceptions=True)
        if watcher in done and not watcher.cancelled():
            return True
        sleeper.result()  # the sleep's own exception, if any
        return False

    async def _credentials_changed(self) -> None:
        # Polling: another process writes the file, and a stat a second costs nothing (inotify
        # is Linux-only and would be a dependency).
        while st.credentials_stamp(self.state_dir) == self._stamp:  # noqa: ASYNC110
            await asyncio.sleep(CREDENTIALS_CHECK_S)

    def _new_credentials(self) -> None:
        """`tice-agent enroll` wrote new credentials: the backoff was for the old ones."""
        s = self.sstatus
        log.warning("new credentials in %s: sending now", self.state_dir / st.CREDENTIALS)
        s.attempt, s.next_attempt_at = 0, None
        self._auth_logged = self._reenrolled = False
        self.store.save()

    def _enrolled_since(self, when: datetime | None) -> bool:
        stamp = st.credentials_stamp(self.state_dir)
        return stamp is not None and when is not None and stamp[1] / 1e9 > when.timestamp()

    async def run(self) -> None:
        """Send forever. The backoff exponent survives restarts (kept in status.json)."""
        first = self.rng.uniform(0.0, self.cfg.send.initial_delay_max_s)
        s = self.sstatus
        pending = s.next_attempt_at  # a backoff that a restart must not cut short...
        if pending is not None and not (s.auth_failed and self._enrolled_since(s.last_attempt_at)):
            first = max(first, min((pending - self.now()).total_seconds(), MAX_RETRY_AFTER_S))
        await self.sleep(first)  # ...unless it waited for credentials that came meanwhile
        while True:
            try:
                await self.step()
                self.broken.ok()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug, say: keep the records, try again later
                self.broken.fail(f"{type(e).__name__}: {e}", exc_info=True)
                await self.sleep(self._idle())
