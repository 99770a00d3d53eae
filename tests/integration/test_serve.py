"""The real `tice-collector serve` process: embedded default, readiness, SIGTERM under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from tests.helpers import CollectorProcess, add_school, auth, usage_batch, wait_until

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


def _naming(pgdata: Path) -> list[psutil.Process]:
    """The processes whose command line names `pgdata` (the postmaster: `postgres -D PGDATA`)."""
    return [p for p in psutil.process_iter(["cmdline"]) if str(pgdata) in " ".join(p.info["cmdline"] or [])]


def leave_no_server(pgdata: Path) -> None:
    """Terminate whatever still runs on `pgdata`: what a failed test left behind."""
    for proc in _naming(pgdata):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()


@pytest.fixture
def data_dir(data_root: Path) -> Iterator[Path]:
    """A `--data-dir` for the collector; no PostgreSQL runs on it after the test."""
    data_dir = data_root / "data"
    yield data_dir
    leave_no_server(data_dir / "pgdata")


@pytest.fixture
async def serving(data_dir: Path) -> AsyncIterator[CollectorProcess]:
    """`tice-collector serve --data-dir DIR` and nothing else configured, ready; stopped after the
    test unless the test stopped it (for its exit code and log)."""
    collector = CollectorProcess("--data-dir", str(data_dir))
    try:
        await collector.wait_ready()
        yield collector
    finally:
        collector.stop()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}


def _school_list(data_dir: Path) -> list[str]:
    """An admin command on the embedded PostgreSQL of `data_dir`."""
    return [sys.executable, "-m", "tice_collector.cli", "school", "list", "--data-dir", str(data_dir)]


def _start_school_list(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(_school_list(data_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _database_url(data_dir: Path) -> str:
    """The collector's database on its embedded PostgreSQL, by the socket directory the pid file names."""
    return f"postgresql://postgres@/tice?host={(data_dir / 'pgdata' / 'postmaster.pid').read_text().split()[4]}"


async def test_serve_with_nothing_configured_uses_embedded_postgres(data_dir, serving):
    async with aiohttp.ClientSession() as http, http.get(serving.url + "/readyz") as resp:
        assert (await resp.json()) == {"status": "ready"}
    pg_pid = _postmaster_pid(data_dir)
    assert psutil.pid_exists(pg_pid)
    code, err = serving.stop()
    assert code == 0, err
    assert f"data in {data_dir / 'pgdata'}" in err
    assert "serving on http://127.0.0.1:" in err
    # Stopping the collector stopped the PostgreSQL it started.
    await wait_until(lambda: _gone(pg_pid), f"the embedded PostgreSQL (pid {pg_pid}) to stop with the collector")
    assert "Traceback" not in err


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _postmaster_pid(data_dir) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


async def test_a_second_serve_on_the_same_data_dir_is_refused_in_one_line(data_dir, serving):
    second = CollectorProcess("--data-dir", str(data_dir))
    code, err = await asyncio.to_thread(second.wait_exit)
    assert code == 1, err
    assert err.splitlines() == [
        f"tice-collector: another tice-collector (pid {serving.proc.pid}) is already serving from data "
        f"directory {data_dir}; stop it, or give this one its own with --data-dir DIR"]
    # Admin commands still use the serving collector's PostgreSQL, and the first one serves on.
    listed = subprocess.run(_school_list(data_dir), capture_output=True, text=True, timeout=120, env=_env())
    assert listed.returncode == 0, listed.stderr
    async with aiohttp.ClientSession() as http, http.get(serving.url + "/readyz") as resp:
        assert resp.status == 200
    code, err = serving.stop()
    assert code == 0, err

    # Stopped, it releases the data directory: the next serve starts there.
    again = CollectorProcess("--data-dir", str(data_dir))
    try:
        await again.wait_ready()
    finally:
        code, err = again.stop()
    assert code == 0, err


async def test_postgresql_orphaned_by_kill_9_is_reused_by_the_next_serve_which_stops_it(data_dir, serving):
    pg_pid = _postmaster_pid(data_dir)
    assert _handles(data_dir) == [serving.proc.pid]
    serving.proc.kill()  # SIGKILL: no clean-up; its PostgreSQL keeps running, its lock is gone
    serving.proc.communicate(timeout=60)
    assert psutil.pid_exists(pg_pid)
    second = CollectorProcess("--data-dir", str(data_dir))
    try:
        await second.wait_ready()
        assert _postmaster_pid(data_dir) == pg_pid  # joined, not a new server
        # The dead collector no longer counts as a user of that PostgreSQL.
        assert _handles(data_dir) == [second.proc.pid]
    finally:
        code, err = second.stop()
    assert code == 0, err
    assert "embedded PostgreSQL stopped" in err and "left running" not in err
    # Stopping the collector stops the PostgreSQL it joined (README).
    await wait_until(lambda: _gone(pg_pid), f"the PostgreSQL (pid {pg_pid}) to stop with the second collector")
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert _handles(data_dir) == []


def _handles(data_dir) -> list[int]:
    """The processes embedded-postgres counts as using the server (it stops with the last)."""
    import json

    return json.loads((data_dir / "pgdata" / ".handle_pids.json").read_text())


async def test_a_handle_pid_reused_by_another_program_is_forgotten(data_root):
    from tice_collector import embedded

    pgdata = data_root / "pgdata"
    pgdata.mkdir()
    sleeper = subprocess.Popen(["sleep", "600"])  # alive, but not the process that joined
    try:
        me = os.getpid()
        (pgdata / embedded.HANDLES).write_text(f"[{me}, {sleeper.pid}, 999999999]")
        (pgdata / embedded.STARTS).write_text(f'{{"{me}": {psutil.Process(me).create_time()}, '
                                              f'"{sleeper.pid}": {psutil.Process(sleeper.pid).create_time() - 5}}}')
        assert embedded.forget_dead_handles(pgdata) == [me]
        assert _handles(data_root) == [me]
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_sigterm_on_an_admin_command_lets_go_of_the_embedded_postgresql(data_dir, serving):
    pg_pid = _postmaster_pid(data_dir)
    # A lock held by this test makes the admin command wait in the database, as a long one would.
    url = _database_url(data_dir)
    conn, watcher = await asyncpg.connect(url), await asyncpg.connect(url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE schools IN ACCESS EXCLUSIVE MODE")
    serving.proc.kill()  # and the collector died with -9: the admin command is the last live user
    serving.proc.communicate(timeout=60)
    admin = _start_school_list(data_dir)

    async def waiting() -> bool:
        if admin.poll() is not None:
            raise AssertionError(f"the admin command ended: {admin.communicate()}")
        # Asked in a transaction of its own: a transaction sees one snapshot of pg_stat_activity.
        return bool(await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))

    await wait_until(waiting, "the admin command waiting for the schools table")
    admin.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(admin.communicate, timeout=120)
    assert admin.returncode == 130, err  # as Ctrl-C
    assert "Traceback" not in err, err
    await wait_until(lambda: _gone(pg_pid), f"the PostgreSQL (pid {pg_pid}) to stop with the admin command")
    assert _handles(data_dir) == []
    for c in (conn, watcher):
        c.terminate()


@pytest.mark.parametrize("when", ["initdb", "server starting"])
async def test_sigterm_while_an_admin_command_starts_the_embedded_postgresql_leaves_none_running(data_dir, when):
    # The command is stopped inside embedded.start: while initdb makes the data directory, or once
    # the postmaster has written its pid file but before the command holds its handle.
    pgdata = data_dir / "pgdata"
    admin = _start_school_list(data_dir)
    marker = pgdata / ("PG_VERSION" if when == "initdb" else "postmaster.pid")
    try:
        def started() -> bool:
            if admin.poll() is not None:
                raise AssertionError(f"the admin command ended first: {admin.communicate()}")
            return marker.exists()

        await wait_until(started, f"{marker.name} in {pgdata}", every=0.005)
        admin.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(admin.communicate, timeout=120)
        assert admin.returncode == 130, err  # as Ctrl-C
        assert "Traceback" not in err, err

        def running() -> list[int]:
            return [p.pid for p in _naming(pgdata) if "postgres" in " ".join(p.info["cmdline"] or [])]

        await wait_until(lambda: not running(), f"no PostgreSQL left on {pgdata}", timeout=60)
        assert not (pgdata / "postmaster.pid").exists()
    finally:
        if admin.poll() is None:
            admin.kill()
            admin.communicate()


async def test_sigterm_under_load_loses_no_answered_record(database_url, db):
    secret = await add_school(db)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_RATE_LIMIT_PER_MINUTE": "100000",
                                      "TICE_RATE_LIMIT_BURST": "100000"})
    answered: list[tuple[str, int, int]] = []  # (spool, first seq, count) of every 200 answer
    try:
        await collector.wait_ready()
        async with aiohttp.ClientSession() as http:
            devices = []
            for i in range(8):
                async with http.post(collector.url + "/api/v1/enroll",
                                     json={"secret": secret, "serial": f"LOAD-{i}", "kind": "laptop"}) as r:
                    assert r.status == 201
                    devices.append(await r.json())

            stop = asyncio.Event()

            async def pump(dev: dict) -> None:
                spool = str(uuid.uuid4())
                seq = 1
                while not stop.is_set():
                    body = usage_batch(dev["device_id"], 20, start_seq=seq, spool=spool)
                    try:
                        async with http.post(collector.url + "/api/v1/reports", json=body,
                                             headers=auth(dev["token"])) as r:
                            if r.status == 200:
                                result = await r.json()
                                assert result["accepted"] == 20
                                answered.append((spool, seq, 20))
                    except (TimeoutError, aiohttp.ClientError):
                        await asyncio.sleep(0.01)
                    seq += 20

            tasks = [asyncio.create_task(pump(d)) for d in devices]
            await wait_until(lambda: len(answered) >= 8, "a few answered requests before SIGTERM")
            collector.proc.send_signal(15)
            await asyncio.to_thread(collector.proc.wait, 60)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        code, err = collector.stop()
    assert code == 0, err
    assert "writer drained" in err
    for spool, first, count in answered:
        stored = await db.fetchval("SELECT count(*) FROM usage_records WHERE spool = $1 AND seq >= $2 AND seq < $3",
                                   uuid.UUID(spool), first, first + count)
        assert stored == count, (spool, first)
    total = await db.fetchval("SELECT count(*) FROM usage_records")
    assert total >= 20 * len(answered)


async def test_serve_exits_cleanly_when_the_database_is_unreachable(tmp_path):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": f"postgresql://nobody@/x?host={tmp_path}",
                                      "TICE_DB_TIMEOUT_S": "3"})
    code, err = await asyncio.to_thread(collector.wait_exit)
    assert code == 1, err
    assert "cannot start: database" in err and "Traceback" not in err


async def test_port_in_use_is_one_clear_line_and_nothing_starts(database_url, db):
    first = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_JOBS_ENABLED": "false"})
    try:
        await first.wait_ready()
        # The second one would run its scheduled jobs at once (jobs_enabled): it must fail to
        # bind before anything starts.
        second = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_LOG_LEVEL": "debug"},
                                  port=first.port)
        code, err = await asyncio.to_thread(second.wait_exit)
        assert code == 1, err
        assert f"cannot listen on 127.0.0.1:{first.port}" in err and "Traceback" not in err
        assert err.count("\n") == 1, err  # that line alone: no pool, no migration, no job
        assert await db.fetchval("SELECT count(*) FROM job_runs") == 0
    finally:
        first.stop()


async def test_database_tables_hold_no_plaintext_token(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        cols = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns "
                                "WHERE table_schema = 'public' AND (column_name ILIKE '%token%' OR column_name ILIKE '%secret%')")
        assert cols == []
    finally:
        await conn.close()


async def test_the_embedded_postgresql_is_restarted_when_it_dies_behind_the_collector(data_dir, serving):
    pg_pid = _postmaster_pid(data_dir)
    url = _database_url(data_dir)
    conn = await asyncpg.connect(url)
    try:
        secret = await add_school(conn)
    finally:
        await conn.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(serving.url + "/api/v1/enroll",
                             json={"secret": secret, "serial": "SN-WATCH", "kind": "laptop"}) as r:
            assert r.status == 201
            dev = await r.json()
        os.kill(pg_pid, signal.SIGINT)  # PostgreSQL's fast shutdown, behind the collector's back
        await wait_until(lambda: _gone(pg_pid), f"the PostgreSQL (pid {pg_pid}) to stop")

        async def ready() -> bool:
            async with http.get(serving.url + "/readyz") as resp:
                return resp.status == 200

        await wait_until(ready, "/readyz to say ready again")
        assert _postmaster_pid(data_dir) != pg_pid  # a new server
        body = usage_batch(dev["device_id"], 3)

        async def stored() -> dict | None:
            async with http.post(serving.url + "/api/v1/reports", json=body, headers=auth(dev["token"])) as r:
                return await r.json() if r.status == 200 else None

        assert (await wait_until(stored, "a report accepted after the restart"))["accepted"] == 3
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM usage_records") == 3
    finally:
        await conn.close()
    pg_pid = _postmaster_pid(data_dir)
    code, err = serving.stop()
    assert code == 0, err
    assert f"embedded PostgreSQL (pid {_first_pid(err)}, data in {data_dir / 'pgdata'}) has stopped: restarting it" in err
    assert "embedded PostgreSQL restarted (pid " in err
    assert "Traceback" not in err, err
    # And it stops with the collector, as the one it started did.
    await wait_until(lambda: _gone(pg_pid), f"the restarted PostgreSQL (pid {pg_pid}) to stop with the collector")


def _first_pid(log: str) -> str:
    import re

    found = re.search(r"embedded PostgreSQL \(pid (\d+), data in", log)
    return found.group(1) if found else "?"


async def test_a_postgresql_that_cannot_be_restarted_stops_the_collector_with_exit_code_1(data_dir, serving):
    pg_pid = _postmaster_pid(data_dir)
    # A server that cannot start again: its configuration is broken.
    conf = data_dir / "pgdata" / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nshared_buffers = 'plenty'\n")
    os.kill(pg_pid, signal.SIGINT)
    code, err = await asyncio.to_thread(serving.wait_exit, 120)
    assert code == 1, err
    assert "has stopped: restarting it" in err
    assert "tice-collector: the embedded PostgreSQL stopped and cannot be restarted (" in err
    assert "Traceback" not in err, err
