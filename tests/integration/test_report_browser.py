"""The evidence report's HTML in Debian's headless Chromium: it renders, prints on A4 by its own
print stylesheet, and asks the network for nothing.

Chromium is driven over the DevTools protocol (its `--remote-debugging-port`, a websocket on
loopback): the test opens the page in a fresh tab with network events on, so every request the
page makes (a stylesheet, font, image or script, from anywhere) is listed, and nothing of the
browser's own background traffic is. The screenshot and the PDF stay under the test's output
(pytest's tmp_path, printed), for a person to look at.

Outside CI a missing chromium skips with the install hint; in CI (env CI set) it fails.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests import report_fleet

pytestmark = pytest.mark.slow  # starts chromium and a collector as processes

PERIOD = ("--from", "2026-10-12", "--to", "2026-11-06")


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return found


class Tab:
    """One page of a headless Chromium, over the DevTools protocol (flat sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self.ids)
        message: dict[str, Any] = {"id": call, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.ws.send_json(message)
        while True:
            answer = await asyncio.wait_for(self.ws.receive_json(), 120)
            if answer.get("id") == call:
                assert "error" not in answer, (method, answer["error"])
                return dict(answer.get("result", {}))
            self.events.append(answer)

    async def until(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(await asyncio.wait_for(self.ws.receive_json(), 120))


async def open_in_chromium(exe: str, page: Path) -> tuple[list[str], bytes, bytes]:
    """Load `page`; return the URL of every request it made, its screenshot (PNG) and its print (PDF)."""
    with tempfile.TemporaryDirectory(prefix="tice-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        try:
            seen = ""
            while (m := re.search(r"DevTools listening on (ws://\S+)", seen)) is None:
                line = await asyncio.wait_for(proc.stderr.readline(), 120)
                assert line, f"chromium stopped before listening: {seen[-3000:]}"
                seen += line.decode(errors="replace")
            drain = asyncio.create_task(proc.stderr.read())  # the browser's log must not fill its pipe
            async with aiohttp.ClientSession() as http, http.ws_connect(m.group(1), max_msg_size=0) as ws:
                tab = Tab(ws)
                target = (await tab.send("Target.createTarget", url="about:blank"))["targetId"]
                tab.session = (await tab.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
                await tab.send("Network.enable")
                await tab.send("Page.enable")
                await tab.send("Emulation.setDeviceMetricsOverride", width=1240, height=1754, deviceScaleFactor=1,
                               mobile=False)
                await tab.send("Page.navigate", url=page.as_uri())
                await tab.until("Page.loadEventFired")
                png = base64.b64decode((await tab.send("Page.captureScreenshot", format="png"))["data"])
                # No paper size given: Chromium's default is US Letter, so an A4 print is the
                # page's own @page rule at work.
                printed = await tab.send("Page.printToPDF", preferCSSPageSize=True, printBackground=True)
                pdf = base64.b64decode(printed["data"])
                await tab.send("Network.disable")
            requests = [e["params"]["request"]["url"] for e in tab.events if e.get("method") == "Network.requestWillBeSent"]
            return requests, png, pdf
        finally:
            proc.terminate()
            await proc.wait()
            if "drain" in locals():
                await drain


@pytest.fixture
async def fleet(db: asyncpg.Connection) -> dict[str, uuid.UUID]:
    return await report_fleet.seed(db)


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_the_page_renders_prints_on_a4_and_makes_no_request(fleet: Any, database_url: str, tmp_path: Path,
                                                                  lang: str) -> None:
    exe = chromium()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    env["TICE_DATABASE_URL"] = database_url
    page = tmp_path / f"report-{lang}.html"
    r = subprocess.run([sys.executable, "-m", "tice_collector.cli", "report", *PERIOD, "--lang", lang,
                        "--out", str(page)], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    shot, pdf = tmp_path / f"report-{lang}.png", tmp_path / f"report-{lang}.pdf"
    requests, png, printed = await open_in_chromium(exe, page)
    shot.write_bytes(png)
    pdf.write_bytes(printed)
    print(f"screenshot {shot}, print {pdf}")
    # The page itself, and nothing else.
    assert requests == [page.as_uri()], requests
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot
    # A4 is 595 x 842 points; every page of the print has that box, and the report takes several.
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf.read_bytes())
    assert len(boxes) >= 2 and {(round(float(w)), round(float(h))) for w, h in boxes} == {(595, 842)}, boxes
