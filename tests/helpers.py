"""Small builders shared by the tests: schools, secrets, enrolment, batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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
        import os
        import subprocess
        import sys

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
    import os
    import shutil

    import pytest

    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (apt-get install {package})")
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return found
