"""Small builders shared by the tests: schools, secrets, enrolment, batches, the collector's CLI in-process."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from agent_testing import wait_until as wait_until  # the one condition wait, shared with the agent's tests
from tice_collector.auth import digest, new_secret
from tice_collector.db.queries import q

SCHOOL = "0210001A"


async def add_school(conn: asyncpg.Connection, uai: str = SCHOOL, *, kind: str = "elementary") -> str:
    """Create a school (if needed) and a fresh enrol secret for it; return the secret."""
    if not await conn.fetchval(q("school_exists"), uai):
        await conn.execute(q("school_insert"), uai, f"École {uai}", "A", kind, "four_day")
    secret = new_secret()
    await conn.fetchval(q("secret_insert"), uai, digest(secret), "test")
    return secret


async def enroll(client: Any, secret: str, serial: str = "SN-0001", kind: str = "laptop") -> dict[str, Any]:
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": serial, "kind": kind})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def usage(seq: int, at: datetime, active: float = 30.0) -> dict[str, Any]:
    return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": 60.0, "active_s": active,
            "idle_s": 60.0 - active, "source": "x11"}


def batch(device_id: str, records: list[dict[str, Any]], *, spool: str | None = None,
          sent_at: datetime | None = None, dropped: int = 0) -> dict[str, Any]:
    return {"device_id": device_id, "spool": spool or str(uuid.uuid4()),
            "sent_at": (sent_at or datetime.now(UTC)).isoformat(), "records": records, "dropped": dropped}


def usage_batch(device_id: str, n: int, *, start_seq: int = 1, spool: str | None = None,
                now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    records = [usage(start_seq + i, now - timedelta(minutes=n - i)) for i in range(n)]
    return batch(device_id, records, spool=spool)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class CollectorProcess:
    """The real `tice-collector serve` in a child process."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        import subprocess

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tice_collector.cli", "serve", "--listen", f"127.0.0.1:{self.port}", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def wait_ready(self, timeout: float = 60) -> None:
        import asyncio
        import time

        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    assert self.proc.stderr is not None  # a pipe: Popen(stderr=PIPE)
                    raise AssertionError(f"collector exited {self.proc.returncode}: {self.proc.stderr.read()}")
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("collector not ready in time")

    def wait_exit(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the process to end by itself (a start-up failure)."""
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def required_tool(name: str, package: str) -> str:
    """The path of a Debian tool a test needs: skip when it is missing here, fail in CI (which
    installs it)."""
    import shutil

    import pytest

    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (apt-get install {package})")
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return found


class CliResult(NamedTuple):
    """What a command line gave: its exit code and what it wrote (the fields of CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


_ONE_CLI_AT_A_TIME = threading.Lock()  # stdout, stderr, the environment and logging are the process's


def run_collector(*argv: str, env: Mapping[str, str] | None = None) -> CliResult:
    """`tice-collector ARGV` run in this process: `main(argv)` with its stdout and stderr captured.

    As a child process would see it: the environment is this process's without its TICE_*
    variables, plus `env`; an argparse exit (SystemExit) is its exit code. main runs in a worker
    thread, so its asyncio.run works from inside a test's event loop too (call it there with
    `await asyncio.to_thread(run_collector, ...)` when the loop must keep serving meanwhile).
    The root logger's handlers and every logger's level are put back afterwards (main sets its
    own). An exception main lets out is raised here, with its traceback.
    """
    from tice_collector.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)
    outcome: list[int] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(main(list(argv)))
        except SystemExit as e:  # argparse: --help, --version, bad usage
            if e.code is None or isinstance(e.code, int):
                outcome.append(e.code or 0)
            else:  # sys.exit("message"), as the interpreter reports it
                print(e.code, file=sys.stderr)
                outcome.append(1)
        except BaseException as e:
            failure.append(e)

    with _ONE_CLI_AT_A_TIME, _environment(env), _logging_restored(), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        worker = threading.Thread(target=target, name="tice-collector " + " ".join(argv[:2]))
        worker.start()
        worker.join()
    if failure:
        raise failure[0]
    return CliResult(outcome[0], _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8")


@contextlib.contextmanager
def _environment(extra: Mapping[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("TICE_")]:
        del os.environ[key]
    os.environ.update(extra or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))
