"""The Chrome extension (agents/chromeos/extension): its node tests, and the unpacked extension in
headless Chromium against the real collector and PostgreSQL.

The node tests run the extension's modules on an in-memory `chrome.*` that enforces Chrome's limits
(alarm minimum, storage quota, worker restarts) against a loopback collector that checks every body
against collector/tice_collector/openapi.yaml. The end-to-end test loads a copy of the extension, with its settings
in the copy's config.json and its host permission narrowed to the loopback collector, in Debian's
Chromium, and waits for its usage records in PostgreSQL. chrome.idle never leaves "active" without a
screen, so that test checks that real records arrive from the right device, not their split.

Outside CI a missing node, npm packages or chromium skips with the install hint; in CI (env CI set)
it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.agent_helpers import collector_env
from tests.helpers import CollectorProcess, add_school, wait_until

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "agents" / "chromeos" / "extension"
SRC = EXT / "src"
NODE_MAJOR = 20


def need(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI ({hint})")
        pytest.skip(f"{tool} not installed ({hint})")
    return found


def node() -> str:
    exe = need("node", f"Node.js {NODE_MAJOR} or newer with npm")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1)) if re.match(r"v(\d+)", version) else 0
    if major < NODE_MAJOR:
        message = f"node {version} is too old: the tests need Node.js {NODE_MAJOR} or newer"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not (EXT / "node_modules").is_dir():
        message = f"the extension's test packages are not installed: run `npm ci` in {EXT.relative_to(ROOT)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


def test_extension_node_tests():
    exe = node()
    files = sorted(str(p.relative_to(EXT)) for p in (EXT / "test").glob("*.test.js"))
    assert files, "no node test files found"
    r = subprocess.run([exe, "--test", *files], cwd=EXT, capture_output=True, text=True, timeout=900)
    report = r.stdout[-8000:] + r.stderr[-4000:]
    assert r.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", r.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", r.stdout, re.M)
    assert passed and int(passed.group(1)) > 0 and failed and failed.group(1) == "0", report


def extension_copy(dest: Path, collector_url: str, secret: str) -> Path:
    """The extension as IT would ship it for this collector: host permission and settings set."""
    shutil.copytree(SRC, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["host_permissions"] = ["http://127.0.0.1/*"]
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    # No policy reaches an unpacked extension in a test browser (and the machine-wide policy
    # directory is shared by every test run): the settings go into the copy's config.json.
    (dest / "config.json").write_text(json.dumps({
        "collector_url": collector_url,
        "enroll_secret": secret,
        "report_interval_s": 30,            # the smallest interval alarms allow
        "unmanaged_device": "install_id",   # no chrome.enterprise in a test browser
    }))
    return dest


class Chromium:
    """Debian's Chromium, headless, with one unpacked extension and a profile of its own."""

    def __init__(self, exe: str, extension: Path, profile: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--enable-logging=stderr", f"--user-data-dir={profile}", f"--load-extension={extension}",
                f"--disable-extensions-except={extension}", "about:blank"]
        # Chromium writes its crash database under $XDG_CONFIG_HOME and its singleton socket under
        # $TMPDIR: both point into directories of this run (the socket's path must stay short), so
        # a run leaves nothing behind and runs side by side with others.
        home = profile.parent / "home"
        for d in ("config", "cache"):
            (home / d).mkdir(parents=True, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="tice-cr-")
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
               "XDG_CACHE_HOME": str(home / "cache"), "TMPDIR": self.tmp}
        # A session of its own, so stopping it reaches its zygote and renderers too.
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"chromium exited {self.proc.returncode}: {self.log()[-3000:]}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def test_unpacked_extension_in_headless_chromium_reaches_postgresql(tmp_path, database_url, db):
    exe = need("chromium", "apt-get install -y chromium")
    secret = await add_school(db)
    collector = CollectorProcess(env=collector_env(database_url))
    browser = None
    try:
        await collector.wait_ready()
        ext = extension_copy(tmp_path / "extension", collector.url, secret)
        browser = Chromium(exe, ext, tmp_path / "profile", tmp_path / "chromium.log")

        async def enrolled():
            browser.alive()
            return await db.fetchrow("SELECT id, serial, kind FROM devices WHERE serial LIKE 'EXT-%'")

        device = await wait_until(enrolled, "the extension to enrol", timeout=120)
        assert device["kind"] == "chromebook"
        assert re.fullmatch(r"EXT-[0-9A-F]{32}", device["serial"]), device["serial"]

        async def usage_rows():
            browser.alive()
            return await db.fetch("SELECT seq, duration_s, active_s, idle_s, locked_s, no_session_s, unclassified_s, "
                                  "source, spool FROM usage_records WHERE device_id = $1 ORDER BY seq", device["id"])

        rows = await wait_until(usage_rows, "the extension's first usage record in PostgreSQL", timeout=180)
    finally:
        if browser is not None:
            browser.stop()
        collector.stop()

    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert r["source"] == "chrome"
        assert r["duration_s"] > 0
        parts = r["active_s"] + r["idle_s"] + r["locked_s"] + r["no_session_s"] + r["unclassified_s"]
        assert parts == r["duration_s"], dict(r)
    spool = await db.fetchrow("SELECT spool, dropped FROM device_spools WHERE device_id = $1", device["id"])
    assert spool is not None and spool["spool"] == rows[0]["spool"] and spool["dropped"] == 0
