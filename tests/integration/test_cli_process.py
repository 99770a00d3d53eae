"""The installed `tice-collector` command as a process: its exit codes reach the shell, and
`python -m tice_collector.cli` (how the first serve process starts the others) is the same command.

Every other test of a command runs it in-process (tests/helpers.py `run_collector`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow  # starts the command as processes

COMMAND = Path(sys.executable).with_name("tice-collector")


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")} | (env or {})
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=120)


def test_the_console_script_exits_0_done_1_database_failed_2_bad_usage(tmp_path: Path) -> None:
    assert COMMAND.exists(), f"{COMMAND}: the console script is not installed in this venv"
    done = run(str(COMMAND), "--version")
    assert (done.returncode, done.stdout) == (0, "tice-collector 0.1.0\n"), done
    usage = run(str(COMMAND), "school", "add")
    assert usage.returncode == 2 and "the following arguments are required: uai, --name" in usage.stderr, usage
    settings = run(str(COMMAND), "migrate", "--config", str(tmp_path / "none.toml"))
    assert settings.returncode == 2, settings
    assert settings.stderr == f"tice-collector: settings error: config file {tmp_path / 'none.toml'}: not found\n"
    # Nothing listens on this port: the database failed, exit 1, one line.
    down = run(str(COMMAND), "school", "list",
               env={"TICE_DATABASE_URL": f"postgresql://tice@127.0.0.1:{free_port()}/tice", "TICE_DB_TIMEOUT_S": "5"})
    assert down.returncode == 1, down
    assert down.stderr.startswith("tice-collector: database: ") and down.stderr.count("\n") == 1, down.stderr
    assert "Traceback" not in down.stderr


def test_python_dash_m_runs_the_same_command(database_url: str) -> None:
    listed = run(sys.executable, "-m", "tice_collector.cli", "jobs", "list")
    assert listed.returncode == 0, listed
    assert listed.stdout.split()[0] == "rollup", listed.stdout
    migrated = run(sys.executable, "-m", "tice_collector.cli", "migrate", env={"TICE_DATABASE_URL": database_url})
    assert (migrated.returncode, migrated.stdout) == (0, "database is up to date\n"), migrated


def test_a_reader_that_stops_reading_stops_the_command_quietly(database_url: str) -> None:
    # `tice-collector devices list | head -2`, with a reader gone before the first line: the
    # write fails with EPIPE (Python ignores SIGPIPE), which is no database failure.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        listed = subprocess.run([str(COMMAND), "devices", "list"], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=120,
                                env={k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
                                | {"TICE_DATABASE_URL": database_url})
    finally:
        os.close(write_end)
    assert (listed.returncode, listed.stderr) == (141, ""), listed


async def test_sigterm_while_the_demo_builds_its_city_stops_it_there() -> None:
    from tests.stack import Demo

    demo = Demo(backfill_days=120)  # the longest history: the signal lands while it is being sent
    try:
        await demo.wait_ready()  # serving: the city's enrolment and backfill have begun
        assert "  metrics:" not in demo.log_text(), demo.log_tail()
        demo.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(demo.proc.wait, 120)
        log = demo.log_text()
        assert code == 130, log[-3000:]
        assert "tice-collector demo: stopped before the city was ready" in log, log[-3000:]
        assert "  metrics:" not in log and "Traceback" not in log, log[-3000:]
        assert "embedded PostgreSQL stopped" in log, log[-3000:]
    finally:
        demo.stop()
