"""`serve` with workers = 2: two processes on one port, each answering after its own commits."""

from __future__ import annotations

import asyncio
import signal
import uuid

import aiohttp
import psutil
import pytest

from tests.helpers import CollectorProcess, add_school, auth, usage_batch, wait_until

pytestmark = pytest.mark.slow  # starts collector processes and their workers


def _workers(collector: CollectorProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(collector.proc.pid).children() if p.status() != psutil.STATUS_ZOMBIE]


class _Held(tuple):
    """Connections held by (the first, the second) process: true when both hold some."""

    def __bool__(self) -> bool:
        return min(self) > 0


def _serving(proc: psutil.Process, port: int) -> int:
    """Established connections the process holds on the collector's port."""
    try:
        return sum(1 for c in proc.net_connections(kind="tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    except psutil.NoSuchProcess:
        return 0


async def test_two_workers_share_the_port_store_every_answered_record_and_drain_on_sigterm(database_url, db):
    secret = await add_school(db)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_WORKERS": "2",
                                      "TICE_RATE_LIMIT_PER_MINUTE": "100000", "TICE_RATE_LIMIT_BURST": "100000"})
    answered: list[tuple[str, int, int]] = []  # (spool, first seq, count) of every 200 answer
    sessions: list[aiohttp.ClientSession] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await collector.wait_ready()
        await wait_until(lambda: len(_workers(collector)) == 1, "the second worker process to start")
        (worker,) = _workers(collector)
        async with aiohttp.ClientSession() as http:
            devices = []
            for i in range(16):
                async with http.post(collector.url + "/api/v1/enroll",
                                     json={"secret": secret, "serial": f"WORKERS-{i}", "kind": "laptop"}) as r:
                    assert r.status == 201, await r.text()
                    devices.append(await r.json())
        # One keep-alive connection per device: the kernel spreads them over both processes.
        sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in devices]
        stop = asyncio.Event()

        async def pump(dev: dict, http: aiohttp.ClientSession) -> None:
            spool, seq = str(uuid.uuid4()), 1
            while not stop.is_set():
                body = usage_batch(dev["device_id"], 10, start_seq=seq, spool=spool)
                try:
                    async with http.post(collector.url + "/api/v1/reports", json=body,
                                         headers=auth(dev["token"])) as r:
                        if r.status == 200:
                            result = await r.json()
                            assert result["accepted"] == 10, result
                            answered.append((spool, seq, 10))
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.01)
                seq += 10

        tasks = [asyncio.create_task(pump(d, s)) for d, s in zip(devices, sessions, strict=True)]
        await wait_until(lambda: len(answered) >= 32, "answered requests from both processes")
        first = psutil.Process(collector.proc.pid)

        def held() -> _Held:
            return _Held((_serving(first, collector.port), _serving(worker, collector.port)))

        # 16 connections, each placed by the kernel's hash on one of the two listening sockets:
        # all on one side has odds of 2 in 65,536. A connection the kernel gave the second process
        # waits in its socket's backlog until that process, still starting under load, accepts it.
        await wait_until(held, "connections held by both processes (first, second)", timeout=180)
        collector.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(collector.proc.wait, 90)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in sessions:
            await s.close()
        code, err = collector.stop()
    assert code == 0, err
    assert err.count("writer drained") == 2, err
    assert "Traceback" not in err, err
    assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE
    for spool, seq, count in answered:
        stored = await db.fetchval("SELECT count(*) FROM usage_records WHERE spool = $1 AND seq >= $2 AND seq < $3",
                                   uuid.UUID(spool), seq, seq + count)
        assert stored == count, (spool, seq)


async def test_a_dead_worker_is_started_again_and_none_outlives_the_first(database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_WORKERS": "2"})
    try:
        await collector.wait_ready()
        await wait_until(lambda: len(_workers(collector)) == 1, "the second worker process to start")
        (worker,) = _workers(collector)
        worker.kill()
        await wait_until(lambda: [p.pid for p in _workers(collector)] not in ([], [worker.pid]),
                         f"a new worker in place of pid {worker.pid}")
        (again,) = _workers(collector)
        # The first process dies without any clean-up: the kernel stops its worker.
        collector.proc.kill()
        await asyncio.to_thread(collector.proc.wait, 60)
        await wait_until(lambda: not psutil.pid_exists(again.pid) or again.status() == psutil.STATUS_ZOMBIE,
                         f"the worker (pid {again.pid}) to stop with the first process")
    finally:
        _, err = collector.stop()
    assert f"(pid {worker.pid}) exited with code -9; starting it again" in err, err


async def test_with_workers_a_busy_port_is_still_one_clear_line(database_url, db):
    first = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_JOBS_ENABLED": "false",
                                  "TICE_WORKERS": "2"})
    try:
        await first.wait_ready()
        # SO_REUSEPORT would let a second collector of the same user join the port unnoticed.
        second = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_WORKERS": "2"}, port=first.port)
        code, err = await asyncio.to_thread(second.wait_exit)
        assert code == 1, err
        assert err.splitlines() == [f"tice-collector: cannot listen on 127.0.0.1:{first.port}: Address already in use"]
        assert await db.fetchval("SELECT count(*) FROM job_runs") == 0
    finally:
        code, err = first.stop()
    assert code == 0, err
