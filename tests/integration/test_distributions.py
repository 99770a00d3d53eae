"""Smoke test of the three distributions: wheels built from this checkout, the agent installed alone.

Builds the wheels of wire/, agents/ and collector/, installs the agent's (with the wire format's,
its one dependency of ours) in a fresh venv, runs `tice-agent once` there, and prints the size the
agent adds to a bare venv against its budget (5 MB of site-packages). Then installs the agent's
test extra in that venv and runs the agent's tests (agents/tests) with the installed wheel: no
collector, no server library in sight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench._common import DISTRIBUTIONS, build_wheels

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUDGET_BYTES = 5 * 1000 * 1000  # the agent's budget beyond a bare venv


def run(*argv: str | Path, timeout: float = 900, **kw) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def site_packages(venv: Path) -> Path:
    [sp] = venv.glob("lib/python3*/site-packages")
    return sp


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    found = build_wheels(ROOT, DISTRIBUTIONS, tmp_path_factory.mktemp("dist"))
    assert set(found) == set(DISTRIBUTIONS.values()), sorted(found)
    return found


def test_each_wheel_holds_its_package_and_no_other(wheels):
    for name, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as z:
            packages = {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")}
            assert packages == {name}, f"{wheel.name}: {sorted(packages)}"
            assert f"{name}/py.typed" in z.namelist(), wheel.name
    with zipfile.ZipFile(wheels["tice_collector"]) as z:
        names = set(z.namelist())
    for data in ("tice_collector/metrics.csv", "tice_collector/openapi.yaml", "tice_collector/collector.example.toml",
                 "tice_collector/db/queries.sql", "tice_collector/db/migrations/0001_init.sql"):
        assert data in names, f"{data} missing from {wheels['tice_collector'].name}"
    with zipfile.ZipFile(wheels["tice_agent"]) as z:
        names = set(z.namelist())
    assert "tice_agent/agent.example.toml" in names and "tice_agent/probes/usage.example.toml" in names


def test_the_agent_alone_runs_once_under_its_size_budget_and_passes_its_tests(wheels, tmp_path, capsys):
    bare, venv = tmp_path / "bare", tmp_path / "agent"
    run(sys.executable, "-m", "venv", bare)
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin/pip", "install", "-q", "-c", ROOT / "constraints.txt", "--find-links", wheels["tice_wire"].parent,
        wheels["tice_agent"])
    names = {line.split("==")[0].lower() for line in run(venv / "bin/pip", "list", "--format=freeze").stdout.split()}
    assert names - {"pip", "setuptools"} == {"tice-agent", "tice-wire", "msgspec", "psutil"}, sorted(names)

    # `tice-agent once`: every default probe once, records as JSON lines, nothing stored or sent.
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n')
    once = run(venv / "bin/tice-agent", "--config", config, "once", timeout=300, cwd=tmp_path)
    records = [json.loads(line) for line in once.stdout.splitlines()]
    kinds = {r["type"] for r in records}
    assert {"usage", "health", "link", "display", "probe"} <= kinds, once.stdout
    assert all(r["ok"] for r in records if r["type"] == "probe"), once.stdout
    assert not (state / "spool.sqlite").exists()

    added = size(site_packages(venv)) - size(site_packages(bare))
    with capsys.disabled():
        print(f"\nagent wheel alone: {added / 1e6:.2f} MB of site-packages beyond a bare venv "
              f"(budget {BUDGET_BYTES / 1e6:.0f} MB): {', '.join(sorted(names - {'pip', 'setuptools'}))}")
    assert added < BUDGET_BYTES

    # The agent's tests, against the installed wheel, with only its test extra beside it.
    run(venv / "bin/pip", "install", "-q", "-c", ROOT / "constraints.txt", "--find-links", wheels["tice_wire"].parent,
        f"{wheels['tice_agent']}[test]")
    probe = run(venv / "bin/python", "-c", "import importlib.util as u; print(u.find_spec('tice_collector'), "
                "u.find_spec('asyncpg'), u.find_spec('tice_agent').origin)", cwd=ROOT)
    assert probe.stdout.startswith("None None ") and str(site_packages(venv)) in probe.stdout, probe.stdout
    tests = run(venv / "bin/python", "-m", "pytest", "-p", "no:cacheprovider", "agents/tests",
                timeout=1800, cwd=ROOT)
    assert " passed" in tests.stdout and " failed" not in tests.stdout, tests.stdout[-2000:]
    assert f"tice_agent from {site_packages(venv)}" in tests.stdout, tests.stdout[:2000]


def test_the_collector_installs_without_the_agent(wheels, tmp_path):
    venv = tmp_path / "collector"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin/pip", "install", "-q", "-c", ROOT / "constraints.txt", "--find-links", wheels["tice_wire"].parent,
        wheels["tice_collector"])
    names = {line.split("==")[0].lower() for line in run(venv / "bin/pip", "list", "--format=freeze").stdout.split()}
    assert "tice-collector" in names and "tice-wire" in names and "tice-agent" not in names, sorted(names)
    # The installed command runs, and its package data is where the code reads it.
    help_text = run(venv / "bin/tice-collector", "--help", cwd=tmp_path).stdout
    assert "serve" in help_text and "migrate" in help_text
    check = run(venv / "bin/python", "-c",
                "from tice_collector.db.migrate import discover; from tice_collector.db.queries import q; "
                "import importlib.util as u; print(len(discover()), bool(q('school_insert')), u.find_spec('tice_agent'))",
                cwd=tmp_path)
    count, query, agent = check.stdout.split()
    assert int(count) >= 8 and query == "True" and agent == "None", check.stdout
    # The demo runs the agent's code: without the demo extra it says what to install.
    demo = subprocess.run([str(venv / "bin/tice-collector"), "demo", "--data-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert demo.returncode == 2 and "pip install 'tice-collector[demo]'" in demo.stderr, demo.stderr
    assert "Traceback" not in demo.stderr
