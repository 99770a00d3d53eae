"""The retry matrix, over real HTTP on loopback against a scripted collector.

Each scenario scripts the collector's answers; the assertions are on what the sender did:
whether it retried, what it asked to wait (through an injected sleep, so no wall-clock
asserts), and what happened to the records in the spool.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from tice_agent import config
from tice_agent import state as st
from tice_agent.sender import Outcome, Sender
from tice_agent.spool import Spool, read_stats
from tice_wire import Batch, BatchResult, EnrollRequest, EnrollResult, Usage

AT = datetime.now(UTC).replace(microsecond=0)
DEVICE = uuid.uuid4()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    spool_in_flight: int | None = None


@dataclass
class Script:
    """The collector's answers, in order. Each item: (status, headers, body) or 'reset' or 'hang'."""

    answers: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    spool_path: Path | None = None
    enroll_answers: list[Any] = field(default_factory=list)


SCRIPT: web.AppKey[Script] = web.AppKey("script", Script)


def problem(code: str, detail: str) -> bytes:
    return msgspec.json.encode({"error": code, "detail": detail})


def ok_body(n: int) -> bytes:
    return msgspec.json.encode(BatchResult(accepted=n, duplicates=0, clock_offset_s=0.0, clock_corrected=False))


async def reports(request: web.Request) -> web.StreamResponse:
    script: Script = request.app[SCRIPT]
    body = await request.read()  # aiohttp decompresses gzip itself
    in_flight = None
    if script.spool_path is not None:
        stats = read_stats(script.spool_path)
        in_flight = stats.in_flight if stats else None
    script.seen.append(Seen(request.path, dict(request.headers), body, in_flight))
    answer = script.answers.pop(0)
    if answer == "reset":  # close the connection in the middle of the response
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = 10_000
        await resp.prepare(request)
        await resp.write(b'{"accepted":')
        assert request.transport is not None
        request.transport.close()
        return resp
    if answer == "hang":  # longer than the client's timeout
        await asyncio.sleep(1.5)
        return web.Response(status=200, body=ok_body(0), content_type="application/json")
    status, headers, payload = answer
    if payload is None:
        batch = msgspec.json.decode(body, type=Batch)
        payload = ok_body(len(batch.records))
    return web.Response(status=status, headers=headers, body=payload, content_type="application/json")


async def enroll(request: web.Request) -> web.Response:
    script: Script = request.app[SCRIPT]
    req = msgspec.json.decode(await request.read(), type=EnrollRequest)
    script.seen.append(Seen(request.path, dict(request.headers), msgspec.json.encode(req)))
    status, body = script.enroll_answers.pop(0)
    return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    app = web.Application()
    app[SCRIPT] = script
    app.router.add_post("/api/v1/reports", reports)
    app.router.add_post("/api/v1/enroll", enroll)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", script
    await runner.cleanup()


class Harness:
    def __init__(self, tmp: Path, url: str, script: Script, *, secret: str | None = None,
                 **send: Any) -> None:
        raw: dict[str, Any] = {"state_dir": str(tmp), "send": {"timeout_s": 0.5, "initial_delay_max_s": 0, **send},
                               "batch": {"max_records": 5}}
        self.cfg = config.parse(raw)
        st.save_credentials(tmp, st.Credentials(server=url, device_id=DEVICE, token="tok-1", school="0210001A",
                                                serial="SN-1", kind="laptop", enrolled_at=AT, secret=secret))
        self.spool = Spool(tmp / st.SPOOL)
        script.spool_path = tmp / st.SPOOL
        self.store = st.StatusStore(tmp)
        self.sleeps: list[float] = []
        self.sender = Sender(self.cfg, self.spool, self.store, sleep=self.sleep)
        self.tmp = tmp

    async def sleep(self, d: float) -> None:
        self.sleeps.append(d)

    def add(self, n: int) -> None:
        self.spool.add([Usage(seq=0, at=AT, duration_s=60, active_s=i % 60) for i in range(n)])

    @property
    def dead(self) -> int:
        return self.spool.stats().dead_letter

    def close(self) -> None:
        self.spool.close()


@pytest.fixture
async def h(tmp_path: Path, server: tuple[str, Script]) -> AsyncIterator[Harness]:
    url, script = server
    harness = Harness(tmp_path, url, script)
    yield harness
    harness.close()


async def test_200_acknowledges_and_deletes_only_after_the_answer(h: Harness, server: tuple[str, Script]) -> None:
    _, script = server
    h.add(3)
    script.answers = [(200, {}, None)]
    r = await h.sender.step()
    assert r.outcome is Outcome.SENT and r.records == 3
    assert len(script.seen) == 1
    seen = script.seen[0]
    assert seen.spool_in_flight == 3  # while the collector works, the records are still on disk
    assert h.spool.depth() == 0 and h.spool.stats().in_flight == 0  # deleted after the 200
    assert seen.headers["Authorization"] == "Bearer tok-1"
    assert seen.headers["Content-Type"] == "application/json"
    batch = msgspec.json.decode(seen.body, type=Batch)  # the collector's strict type
    assert batch.device_id == DEVICE and batch.spool == h.spool.spool_id
    assert [rec.seq for rec in batch.records] == [1, 2, 3]
    assert abs((batch.sent_at - datetime.now(UTC)).total_seconds()) < 60
    assert h.store.status.sender.last_success_at is not None and h.store.status.sender.records_sent == 3


async def test_large_batches_are_gzipped_and_split_by_count(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    h = Harness(tmp_path, url, script, gzip_min_bytes=600)
    try:
        h.add(12)
        script.answers = [(200, {}, None)] * 3
        for _ in range(3):
            assert (await h.sender.step()).outcome is Outcome.SENT
        assert [len(msgspec.json.decode(s.body, type=Batch).records) for s in script.seen] == [5, 5, 2]
        assert script.seen[0].headers.get("Content-Encoding") == "gzip"
        assert "Content-Encoding" not in script.seen[2].headers  # small bodies are not worth it
        # Draining a backlog: between batches the sender waits 1 / drain_batches_per_s, no burst.
        assert h.sleeps[:2] == [0.5, 0.5]
    finally:
        h.close()


@pytest.mark.parametrize(("status", "code"), [(400, "invalid"), (403, "wrong_device"), (413, "body_too_large")])
async def test_never_retried_dead_letters_with_reason(h: Harness, server: tuple[str, Script], status: int,
                                                      code: str, caplog: pytest.LogCaptureFixture) -> None:
    _, script = server
    h.add(7)
    script.answers = [(status, {}, problem(code, "nope, never")), (200, {}, None)]
    r = await h.sender.step()
    assert r.outcome is Outcome.DEAD_LETTER and r.status == status
    assert h.dead == 5 and h.spool.depth() == 2  # the batch of 5 is gone, counted; the rest waits
    assert f"HTTP {status} {code}: nope, never" in caplog.text
    assert h.spool.stats().last_dead_letter == f"HTTP {status} {code}: nope, never"
    assert h.sender.delays == type(h.sender.delays)()  # no backoff at all
    r = await h.sender.step()  # the next batch goes normally; the refused one is never sent again
    assert r.outcome is Outcome.SENT and r.records == 2
    seqs = [[x.seq for x in msgspec.json.decode(s.body, type=Batch).records] for s in script.seen]
    assert seqs == [[1, 2, 3, 4, 5], [6, 7]]


@pytest.mark.parametrize("answer", [
    (500, {}, problem("internal", "x")),
    (502, {}, b"<html>bad gateway</html>"),
    (503, {}, problem("unavailable", "database down")),
    (504, {}, b""),
    (408, {}, b""),
    (429, {}, problem("rate_limited", "slow down")),
    "reset",
    pytest.param("hang", marks=pytest.mark.slow),  # waits out the sender's timeout
], ids=["500", "502", "503", "504", "408", "429-no-header", "reset", "timeout"])
async def test_retried_keeps_records_and_backs_off(h: Harness, server: tuple[str, Script], answer: Any) -> None:
    _, script = server
    h.add(3)
    script.answers = [answer, (200, {}, None)]
    r = await h.sender.step()
    assert r.outcome is Outcome.RETRY
    assert h.spool.depth() == 3 and h.spool.stats().in_flight == 0 and h.dead == 0
    assert len(h.sender.delays) == 1 and 0 <= h.sender.delays[0] <= 5.0  # attempt 0: [0, base]
    assert h.sleeps == list(h.sender.delays)
    assert h.store.status.sender.attempt == 1
    r = await h.sender.step()
    assert r.outcome is Outcome.SENT
    # The same records, with the same delivery keys, were sent twice: the collector dedups.
    assert len(script.seen) == 2
    first, second = (msgspec.json.decode(s.body, type=Batch) for s in script.seen)
    assert [x.seq for x in first.records] == [x.seq for x in second.records] == [1, 2, 3]
    assert first.spool == second.spool
    assert h.spool.depth() == 0 and h.store.status.sender.attempt == 0


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_a_floor(h: Harness, server: tuple[str, Script], status: int) -> None:
    _, script = server
    h.add(1)
    script.answers = [(status, {"Retry-After": "120"}, problem("busy", "later"))]
    r = await h.sender.step()
    assert r.outcome is Outcome.RETRY and r.retry_after == 120
    assert len(h.sleeps) == 1 and h.sleeps[0] >= 120 and h.spool.depth() == 1


async def test_retry_after_http_date(h: Harness, server: tuple[str, Script]) -> None:
    _, script = server
    h.add(1)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    script.answers = [(503, {"Retry-After": when}, problem("unavailable", "later"))]
    r = await h.sender.step()
    assert r.outcome is Outcome.RETRY and r.retry_after is not None and 295 <= r.retry_after <= 300
    assert h.sleeps[0] >= 295


async def test_backoff_grows_across_consecutive_failures_then_resets(h: Harness, server: tuple[str, Script]) -> None:
    _, script = server
    h.add(2)
    script.answers = [(503, {}, b""), "reset", (500, {}, b""), (502, {}, b""), (429, {"Retry-After": "1"}, b""),
                      (200, {}, None)]
    outcomes = [(await h.sender.step()).outcome for _ in range(6)]
    assert outcomes == [Outcome.RETRY] * 5 + [Outcome.SENT]
    ceilings = [5, 10, 20, 40, 80]
    assert all(0 <= d <= c for d, c in zip(h.sender.delays, ceilings, strict=True))
    assert h.sender.delays[4] >= 1
    assert len(script.seen) == 6 and h.spool.depth() == 0 and h.store.status.sender.attempt == 0


async def test_401_without_kept_secret_waits_and_keeps_records(h: Harness, server: tuple[str, Script],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    _, script = server
    h.add(2)
    script.answers = [(401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, problem("invalid_token", "x"))] * 2
    assert (await h.sender.step()).outcome is Outcome.AUTH
    assert (await h.sender.step()).outcome is Outcome.AUTH
    assert h.spool.depth() == 2 and h.dead == 0
    assert len(h.sender.delays) == 2 and h.store.status.sender.auth_failed
    assert "an administrator must re-enrol" in caplog.text
    assert "tok-1" not in caplog.text
    assert all(s.path == "/api/v1/reports" for s in script.seen)  # no enrolment attempted


async def test_401_picks_up_a_new_token_written_by_enroll(h: Harness, server: tuple[str, Script]) -> None:
    _, script = server
    h.add(1)
    script.answers = [(401, {}, problem("invalid_token", "x")), (200, {}, None)]
    assert (await h.sender.step()).outcome is Outcome.AUTH
    creds = st.load_credentials(h.tmp)
    assert creds is not None
    st.save_credentials(h.tmp, msgspec.structs.replace(creds, token="tok-2"))  # `tice-agent enroll` ran
    assert (await h.sender.step()).outcome is Outcome.SENT
    assert script.seen[-1].headers["Authorization"] == "Bearer tok-2"


async def test_401_with_kept_secret_reenrols_and_resends(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    h = Harness(tmp_path, url, script, secret="school-secret-123")
    try:
        h.add(2)
        new_device = uuid.uuid4()
        script.answers = [(401, {}, problem("invalid_token", "x")), (200, {}, None)]
        script.enroll_answers = [(201, msgspec.json.encode(EnrollResult(device_id=new_device, token="tok-new",
                                                                         school="0210001A")))]
        r = await h.sender.step()
        assert r.outcome is Outcome.SENT and h.spool.depth() == 0
        assert [s.path for s in script.seen] == ["/api/v1/reports", "/api/v1/enroll", "/api/v1/reports"]
        enrol = msgspec.json.decode(script.seen[1].body, type=EnrollRequest)
        assert (enrol.secret, enrol.serial, enrol.kind) == ("school-secret-123", "SN-1", "laptop")
        assert script.seen[2].headers["Authorization"] == "Bearer tok-new"
        assert msgspec.json.decode(script.seen[2].body, type=Batch).device_id == new_device
        creds = st.load_credentials(tmp_path)
        assert creds is not None and creds.token == "tok-new" and creds.secret == "school-secret-123"
        assert len(h.sender.delays) == 0  # healed without a backoff
    finally:
        h.close()


async def test_401_with_kept_secret_refused_backs_off(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    h = Harness(tmp_path, url, script, secret="school-secret-123")
    try:
        h.add(1)
        script.answers = [(401, {}, problem("invalid_token", "x"))]
        script.enroll_answers = [(401, problem("invalid_secret", "unknown or revoked enrol secret"))]
        r = await h.sender.step()
        assert r.outcome is Outcome.AUTH and h.spool.depth() == 1
        assert len(h.sender.delays) == 1
        assert [s.path for s in script.seen] == ["/api/v1/reports", "/api/v1/enroll"]
    finally:
        h.close()


async def test_run_loop_waits_the_random_initial_delay_first(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    h = Harness(tmp_path, url, script, initial_delay_max_s=30)

    class Stop(Exception):
        pass

    async def sleep(d: float) -> None:
        h.sleeps.append(d)
        if len(h.sleeps) >= 3:
            raise Stop

    h.sender.sleep = sleep
    h.add(1)
    script.answers = [(503, {"Retry-After": "42"}, b""), (200, {}, None)]
    with pytest.raises(Stop):
        await h.sender.run()
    assert 0 <= h.sleeps[0] <= 30  # random initial delay before the first request
    assert h.sleeps[1] >= 42  # Retry-After honoured
    assert 54 <= h.sleeps[2] <= 66  # sent; nothing left: idle interval (60 s ± 10 %)
    assert h.spool.depth() == 0
    h.spool.close()


# -- what the sender tells the spool about a failed send ----------------------------------------
# A record that may be stored at the collector keeps the time it was sent with (a new one would
# make it a new record there); one surely not stored may be re-dated if the clock jumps.
# Across processes, `in_flight` counts exactly the records that may be stored.

@pytest.mark.slow  # waits out the sender's timeout
async def test_a_timeout_may_have_been_stored_and_is_remembered(h: Harness, server: tuple[str, Script]) -> None:
    _, script = server
    h.add(3)
    script.answers = ["hang"]
    assert (await h.sender.step()).outcome is Outcome.RETRY
    stats = read_stats(h.tmp / st.SPOOL)
    assert stats is not None and stats.in_flight == 3 and h.spool.depth() == 3


@pytest.mark.parametrize("answer", [(429, {}, problem("rate_limited", "slow down")),
                                    (401, {}, problem("invalid_token", "x"))], ids=["429", "401"])
async def test_an_answer_before_any_storing_is_surely_not_stored(h: Harness, server: tuple[str, Script],
                                                                 answer: Any) -> None:
    _, script = server
    h.add(3)
    script.answers = [answer]
    await h.sender.step()
    stats = read_stats(h.tmp / st.SPOOL)
    assert stats is not None and stats.in_flight == 0 and h.spool.depth() == 3


async def test_a_refused_connection_is_surely_not_stored(tmp_path: Path, server: tuple[str, Script]) -> None:
    from tests.helpers import free_port

    _, script = server
    h = Harness(tmp_path, f"http://127.0.0.1:{free_port()}", script)  # nothing listens there
    try:
        h.add(3)
        r = await h.sender.step()
        assert r.outcome is Outcome.RETRY and "ConnectionRefusedError" in r.reason
        stats = read_stats(tmp_path / st.SPOOL)
        assert stats is not None and stats.in_flight == 0 and h.spool.depth() == 3
    finally:
        h.close()
