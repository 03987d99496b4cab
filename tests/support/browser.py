"""Headless Chromium for tests that look at a page: `dump_dom` (the page after its scripts ran) and `Page`,
a Chrome DevTools Protocol session over aiohttp's websocket client (real mouse events, screenshots,
JavaScript evaluated in the page). Tests skip without chromium unless MLXBENCH_REQUIRE_BROWSER is set (CI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrate.processes import terminate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("MLXBENCH_REQUIRE_BROWSER"))  # CI (.ci/run) sets it
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED, reason="headless Chromium is not installed (scripts/install-browser)"
)


def require_browser() -> str:
    assert CHROMIUM, "MLXBENCH_REQUIRE_BROWSER is set but chromium is not installed (scripts/install-browser)"
    return CHROMIUM


def flags(user_data_dir: Path) -> list[str]:
    """No sandbox (root in CI), no GPU, and nothing that reaches the network on its own."""
    return [require_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={user_data_dir}"]  # fmt: skip


def dump_dom(url: str, tmp_path: Path) -> str:
    """The page as headless Chromium renders it, scripts run (the web UI is a React app that polls)."""
    cmd = [*flags(tmp_path / "chromium"), "--virtual-time-budget=8000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


CHARTS_READY = """new Promise(done => { const check = () => {
  const charts = [...document.querySelectorAll('.plotly-graph-div')];
  if (document.readyState === 'complete' && charts.every(c => c._fullLayout)) done(charts.map(c => c.id));
  else setTimeout(check, 100); }; check(); })"""
# Page coordinates of a trace's point, from the chart's own axes (linear axes: l2p maps a value to pixels).
POINT_AT = """(id, name, i) => { const gd = document.getElementById(id); gd.scrollIntoView();
  const tr = gd._fullData.find(t => t.name === name);
  const xa = gd._fullLayout[tr.xaxis.replace('x', 'xaxis')];
  const ya = gd._fullLayout[tr.yaxis.replace('y', 'yaxis')];
  const x = tr.type === 'bar' && tr.orientation === 'h' ? tr.base[i] + tr.x[i] / 2 : tr.x[i];
  const r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(tr.y[i])]; }"""
FIGURE_RECT = """id => { const f = document.getElementById(id).closest('figure'); f.scrollIntoView();
  const r = f.getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}; }"""


class Page:
    """One tab, driven by CDP commands (https://chromedevtools.github.io/devtools-protocol/)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict] = []  # every event received so far ({"method", "params"})

    async def _receive(self) -> dict:
        message = json.loads((await self.ws.receive(timeout=60)).data)
        if "method" in message:
            self.events.append(message)
        return message

    async def send(self, method: str, **params: Any) -> dict:
        sent = next(self.ids)
        await self.ws.send_json({"id": sent, "method": method, "params": params})
        while True:  # events arrive between the replies
            message = await self._receive()
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def goto(self, url: str) -> None:
        """Open `url` and wait for its load event (scripts inline in the page have run by then); the page's
        requests are recorded (`requested`)."""
        await self.send("Page.enable")
        await self.send("Network.enable")
        self.events.clear()
        await self.send("Page.navigate", url=url)
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            await self._receive()

    def requested(self) -> list[str]:
        """The URLs the page asked for since `goto` (the page itself included)."""
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]

    async def charts_ready(self) -> list[str]:
        """The ids of the page's Plotly charts, once the page has loaded and every chart is drawn."""
        return await self.evaluate(CHARTS_READY)

    async def hover(self, chart: str, trace: str, point: int) -> str:
        """Move the mouse onto point `point` of the first trace named `trace` in chart `chart` (a horizontal
        bar: its middle) and return the hover label's text as the page shows it."""
        x, y = await self.evaluate(f"({POINT_AT})({chart!r}, {trace!r}, {point})")
        await self.move_mouse(x, y)
        for _ in range(50):  # Plotly draws the label on the next animation frame
            text = await self.evaluate(
                f"document.getElementById({chart!r}).querySelector('.hoverlayer').textContent"
            )
            if text:
                return text
            await asyncio.sleep(0.1)
        return ""

    async def element_screenshot(self, element_id: str, path: Path) -> Path:
        """A PNG of the <figure> holding `element_id`, scrolled into view (the window must be taller)."""
        clip = await self.evaluate(f"({FIGURE_RECT})({element_id!r})")
        return await self.screenshot(path, clip)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def move_mouse(self, x: float, y: float) -> None:
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    async def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        """A PNG of the whole page, or of `clip` ({x, y, width, height} in page pixels, in the viewport: a
        capture beyond it resizes the page, which redraws responsive charts and ends a hover)."""
        whole = clip is None
        if clip is None:
            size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=whole,
                               clip={**clip, "scale": 1})  # fmt: skip
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def open_page(url: str, tmp_path: Path, width: int = 1400, height: int = 1000) -> AsyncIterator[Page]:
    """Chromium on a free debugging port, `url` loaded; the page's CDP session."""
    profile = tmp_path / "chromium-cdp"
    cmd = [*flags(profile), "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"]
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's is stale
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = await _debugging_port(profile / "DevToolsActivePort", proc)
        async with aiohttp.ClientSession() as session:
            ws_url = await _page_socket(session, port)
            async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                page = Page(ws)
                await page.goto(url)
                yield page
    finally:
        terminate(proc, timeout_s=10)


async def _debugging_port(file: Path, proc: subprocess.Popen, timeout_s: float = 60) -> int:
    """Chromium writes the port it bound (given 0) into the profile's DevToolsActivePort."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(file.read_text().split()[0])
        await asyncio.sleep(0.1)
    raise TimeoutError("chromium did not open its debugging port")


async def _page_socket(session: aiohttp.ClientSession, port: int, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [t for t in await response.json() if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        await asyncio.sleep(0.1)
    raise TimeoutError("chromium opened no page")
