"""The dashboard in a real browser: Debian's headless Chromium driven by playwright, no request leaving the machine.

The static copy is opened from a file; the served page comes from `intelrouter serve` (uvicorn, its own process)
behind an API key. Every request the page makes is checked against its own origin; each chart must be drawn
by plotly.js with data points. DASHBOARD_SCREENSHOT=docs/dashboard.png also saves the 1366x768 screenshot there.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_for
from dashboard_support import build_loop
from playwright.sync_api import Browser, Page, Route, sync_playwright
from training_support import cli_env

from devservers.ports import free_port
from intelrouter import dashboard

CHROMIUM = Path("/usr/bin/chromium")  # CI installs Debian's package; no browser download is possible
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1366, "height": 768}
CHARTS = 7
KEY = "dash-key"
# per chart: its id, how many traces plotly holds, and how many points it drew in the SVG
CHART_STATE = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
  id: el.id, traces: el.data.length,
  values: el.data.map(t => Math.min(t.x.length, t.y.filter(v => v !== null).length)),
  drawn: el.querySelectorAll('.point').length,
  hover: el.data.map(t => (t.hovertext || []).join(' ')).join(' ').replace(/<br>/g, ' ')}))"""


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store after three trainings and three days of traffic, canary checks and reports."""
    return build_loop(tmp_path_factory.mktemp("loop"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the system package."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: `apt-get install chromium` (.ci/run does it)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


class Visit:
    """One page load: every request it made, those refused (not local), and script errors or dialogs."""

    def __init__(self, browser: Browser, allowed: Callable[[str], bool], headers: dict[str, str] | None = None):
        self.context = browser.new_context(viewport=VIEWPORT, extra_http_headers=headers)
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.allowed = allowed
        self.page.route("**/*", self._guard)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("dialog", self._dialog)

    def _guard(self, route: Route) -> None:
        if self.allowed(route.request.url):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def charts(self, url: str) -> list[dict[str, Any]]:
        """Open `url`, wait for plotly to draw every chart, return each chart's state."""
        response = self.page.goto(url)
        assert response is None or response.status == 200, response.status if response else None
        self.page.wait_for_function("window.dashboardReady === true || !!window.dashboardError", timeout=60_000)
        assert self.page.evaluate("window.dashboardError || null") is None
        return self.page.evaluate(CHART_STATE)

    def check(self) -> None:
        """Nothing left the machine, nothing failed, nothing popped up."""
        assert self.refused == [], f"requests to elsewhere: {self.refused}"
        assert all(self.allowed(u) for u in self.requests), self.requests
        assert self.errors == []

    def close(self) -> None:
        """Close the page's context."""
        self.context.close()


def assert_drawn(charts: list[dict[str, Any]]) -> None:
    """Every chart is there, has traces with data points, and plotly drew them."""
    assert len(charts) == CHARTS, charts
    for chart in charts:
        assert chart["traces"] > 0 and all(n > 0 for n in chart["values"]) and chart["drawn"] > 0, chart
    canary = next(c for c in charts if c["id"] == "chart-4")
    assert "need 10 feedback labels" in canary["hover"] and "within tolerance" in canary["hover"]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_static_copy_draws_every_chart_offline(loop: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    path = dashboard.write_html(loop["settings"], tmp_path / "dashboard.html")
    visit = Visit(browser, lambda url: url.startswith(("file://", "data:", "blob:")))
    try:
        assert_drawn(visit.charts(path.as_uri()))
        assert f"v{loop['versions']['production'].semver}" in visit.page.inner_text(".cards")
        visit.check()
        assert visit.requests == [path.as_uri()]  # the file itself, and nothing else
    finally:
        visit.close()


@pytest.fixture
def served(loop: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`intelrouter serve` on a free loopback port, over the loop's stores, with an API key."""
    s = loop["settings"]
    port = free_port()
    env = cli_env(INTELROUTER_DATA_DIR=str(s.data_dir), INTELROUTER_DATABASE_URL=s.db_url,
                  INTELROUTER_MLFLOW_TRACKING_URI=s.tracking_uri, INTELROUTER_API_KEY=KEY)
    with (tmp_path / "serve.log").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # died: stop waiting, the assert below says so

    try:
        assert wait_for(ready, timeout=120) and proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_served_page_draws_every_chart_from_its_own_origin(served: str, browser: Browser, tmp_path: Path) -> None:
    local = lambda url: url.startswith(served + "/")  # noqa: E731
    anonymous = Visit(browser, local)
    try:
        assert anonymous.page.goto(f"{served}/dashboard").status == 401
    finally:
        anonymous.close()

    visit = Visit(browser, local, headers={"Authorization": f"Bearer {KEY}"})
    try:
        assert_drawn(visit.charts(f"{served}/dashboard"))
        visit.check()
        assert any("/dashboard/plotly.js?v=" in u for u in visit.requests)  # the bundle came from the app
        # hovering a canary decision shows its reason (trace 0 is the share line, then one trace per action)
        visit.page.evaluate("Plotly.Fx.hover('chart-4', [{curveNumber: 2, pointNumber: 1}])")
        hover = visit.page.locator("#chart-4 .hoverlayer .hovertext")
        shown = "".join((hover.text_content() or "").split())  # lines are <tspan>s: compare without spaces
        assert "withintolerance,share50%->100%" in shown  # "->" came escaped and reads as text
        shot = tmp_path / "dashboard.png"
        visit.page.screenshot(path=str(shot))
        assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["DASHBOARD_SCREENSHOT"])
    finally:
        visit.close()
