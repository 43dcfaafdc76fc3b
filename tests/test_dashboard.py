"""The dashboard at ``/``: its files as served, and the page itself in headless Chromium against a live backend.

The backend is a real uvicorn subprocess (as in test_backend.py) that can be stopped and started again on the
same port; a feeder thread POSTs batches to ``/telem_data/batch`` at ~2,000 readings/s from 12 sensors. The
browser is Debian's Chromium (``apt-get install -y chromium``) driven by Playwright for Python, which downloads
nothing; the browser tests are skipped only when ``/usr/bin/chromium`` is missing. Screenshots are written to
``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from harness.process import free_port
from tests.helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, needs_chromium

TOKEN = "dash-s3cret"

# --- a backend that can be stopped and started again on the same port -------------------------------------------


@dataclass
class Backend:
    workdir: Path
    flags: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.runs += 1
        with (self.workdir / f"server-{self.runs}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.backend", "--port", str(self.port), *self.flags],
                cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"backend exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"backend did not answer /healthz:\n{self.logs()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.workdir.glob("server-*.log")))

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture
def backend_factory(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(*flags: str) -> Backend:
        backend = Backend(tmp_path / f"backend-{len(started)}", flags)
        backend.workdir.mkdir()
        started.append(backend)
        backend.start()
        return backend

    yield make
    for backend in started:
        backend.stop()
    for backend in started:
        text = backend.logs()
        assert "Traceback" not in text and "ERROR" not in text, text
        assert TOKEN not in text, "the API token leaked into the log"


# --- readings: ~2,000/s from a dozen sensors, random walks near the seed's thresholds -----------------------------


def _band(value: float, bands: tuple[tuple[float, float], ...]) -> int:
    for mask, (lo, hi) in zip((0, 1, 2), bands, strict=True):
        if lo <= value <= hi:
            return mask
    return 4


TEMP_BANDS = ((-10, 65), (-20, 75), (-30, 85))
PRESS_BANDS = ((180, 220), (140, 260), (100, 300))


@dataclass
class Sensor:
    sensor_id: str
    kind: str
    subsystem: str
    value: float
    center: float
    step: float
    seq: int = 0

    def reading(self, rng: random.Random, ts: str) -> dict[str, Any]:
        self.seq += 1
        self.value += rng.uniform(-self.step, self.step) + 0.002 * (self.center - self.value)
        body: dict[str, Any] = {
            "reading_timestamp": ts, "telemetry_type": self.kind, "sensor_id": self.sensor_id,
            "subsystem": self.subsystem, "sequence_number": self.seq,
        }  # fmt: skip
        if self.kind == "TEMPERATURE":
            body.update(
                temperature=round(self.value, 3), temp_unit="celsius", status_bitmask=_band(self.value, TEMP_BANDS)
            )
        elif self.kind == "PRESSURE":
            body.update(
                pressure=round(self.value, 3), pressure_unit="bar", status_bitmask=_band(self.value, PRESS_BANDS)
            )
        else:
            axis = self.value / math.sqrt(3)
            vx, vy, vz = (round(axis + rng.uniform(-2, 2), 2) for _ in range(3))
            magnitude = math.sqrt(vx * vx + vy * vy + vz * vz)
            mask = 0 if magnitude <= 12000 else 1 if magnitude <= 14000 else 2 if magnitude <= 15000 else 4
            body.update(velocity_x=vx, velocity_y=vy, velocity_z=vz, velocity_unit="m/s", status_bitmask=mask)
        return body


def make_sensors(n: int = 12, prefix: str = "") -> list[Sensor]:
    """Temperature, pressure and velocity sensors in turn; some run near or past the WARNING thresholds."""
    subsystems = ("ENGINE", "FUEL_TANK", "TURBOPUMP", "STAGE1", "STAGE2", "AVIONICS", "GUIDANCE")
    out = []
    for i in range(n):
        sub = subsystems[i % len(subsystems)]
        k = i // 3 + 1
        if i % 3 == 0:
            hot = k % 4 == 1
            t = 68.0 if hot else 25.0 + 3 * (k % 5)
            out.append(Sensor(f"{prefix}TEMP_{sub}_{k:03d}", "TEMPERATURE", sub, t, t, 0.5))
        elif i % 3 == 1:
            p = 196.0 + 7 * (k % 5)
            out.append(Sensor(f"{prefix}PRESS_{sub}_{k:03d}", "PRESSURE", sub, p, p, 0.8))
        else:
            v = 11_400.0 + 250 * (k % 5)
            out.append(Sensor(f"{prefix}VELO_{sub}_{k:03d}", "VELOCITY", sub, v, v, 8.0))
    return out


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Feeder(threading.Thread):
    """POSTs ``rate`` readings/s to /telem_data/batch in ``hz`` batches; keeps going while the backend is down."""

    def __init__(self, backend: Backend, sensors: list[Sensor], rate: int = 2000, hz: int = 20,
                 token: str | None = None) -> None:  # fmt: skip
        super().__init__(daemon=True, name="feeder")
        self.backend, self.sensors, self.rate, self.hz = backend, sensors, rate, hz
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stopping = threading.Event()
        self.posted = 0
        self.failed = 0
        self.rng = random.Random(6)

    def batch(self, n: int, end: float, span: float) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            sensor = self.sensors[(self.posted + i) % len(self.sensors)]
            out.append(sensor.reading(self.rng, iso(end - span * (n - 1 - i) / n)))
        return out

    def run(self) -> None:
        per_tick = self.rate // self.hz
        period = 1 / self.hz
        with httpx.Client(timeout=2, headers=self.headers) as client:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                body = self.batch(per_tick, time.time(), period)
                try:
                    r = client.post(self.backend.url + "/telem_data/batch", json=body)
                    if r.status_code == 200:
                        self.posted += len(body)
                    else:
                        self.failed += 1
                except httpx.TransportError:
                    self.failed += 1
                next_at += period
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


@pytest.fixture
def feeders() -> Iterator[Callable[..., Feeder]]:
    running: list[Feeder] = []

    def start(backend: Backend, sensors: list[Sensor], **kw: Any) -> Feeder:
        feeder = Feeder(backend, sensors, **kw)
        feeder.start()
        running.append(feeder)
        return feeder

    yield start
    for feeder in running:
        feeder.stop()


# --- the browser --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Console:
    """What the page said: console errors (with the time they came) and uncaught exceptions."""

    errors: list[tuple[float, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)

    def unexpected(self, outages: list[tuple[float, float]] | None = None) -> list[str]:
        """Errors other than the browser's own network errors while the backend was down."""
        network = re.compile(r"WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED")
        return self.exceptions + [
            text for at, text in self.errors
            if not (network.search(text) and any(a <= at <= b for a, b in outages or []))
        ]  # fmt: skip


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    console = Console()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            console.errors.append((time.monotonic(), msg.text))

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: console.exceptions.append(f"uncaught: {exc}"))
    yield pg, console
    context.close()


def stats(pg: Page) -> dict[str, Any]:
    result: dict[str, Any] = pg.evaluate("window.dashboard.stats()")
    return result


def wait_stats(pg: Page, condition: str, timeout: float = 10) -> dict[str, Any]:
    """Wait until a JS condition on ``s`` (the page's stats) holds."""
    pg.wait_for_function(f"() => {{ const s = window.dashboard.stats(); return {condition}; }}", timeout=timeout * 1000)
    return stats(pg)


def canvas_images(pg: Page) -> list[str]:
    images: list[str] = pg.evaluate("[...document.querySelectorAll('.card canvas')].map(c => c.toDataURL())")
    return images


def number(pg: Page, selector: str) -> float:
    return float(pg.locator(selector).inner_text().replace(",", "").split()[0])


def screenshot(pg: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    pg.screenshot(path=str(path), full_page=True)
    return path


# --- the files ----------------------------------------------------------------------------------------------------


def test_page_and_assets_are_served_publicly(backend_factory: Callable[..., Backend]) -> None:
    backend = backend_factory("--api-token", TOKEN)  # the page is public even when the data is not
    with httpx.Client(base_url=backend.url, timeout=5) as http:
        index = http.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["cache-control"] == "no-cache" and "etag" in index.headers
        html = index.text
        assert '<script type="module" src="/static/app.js">' in html
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page loads nothing from elsewhere"
        modules = ("app.js", "config.js", "connection.js", "data.js", "latency.js", "view.js", "chart.js")
        expected = {name: "text/javascript; charset=utf-8" for name in modules} | {
            "style.css": "text/css; charset=utf-8"
        }
        for name, ctype in expected.items():
            r = http.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"] == ctype, name
            assert not re.search(r"""(import|from)\s*\(?["']https?:""", r.text), f"{name} imports from a CDN"
        assert http.head("/").status_code == 200
        for bad in ("nope.js", "..%2Fbackend.py", "%2E%2E", "%2E%2E%2Fbackend.py", ".hidden.js", "backend.py"):
            r = http.get(f"/static/{bad}")
            assert r.status_code == 404, bad
        assert http.get("/static/../backend.py").status_code == 404
        # the data stays protected
        assert http.post("/latency", json={"latency": 0.1}).status_code == 401


# --- the page, live -----------------------------------------------------------------------------------------------


@needs_chromium
def test_dashboard_streams_reconnects_and_stops(
    backend_factory: Callable[..., Backend], feeders: Callable[..., Feeder], page: tuple[Page, Console]
) -> None:
    pg, console = page
    backend = backend_factory()
    feeder = feeders(backend, make_sensors(12))
    conn = pg.locator("#conn")

    pg.goto(backend.url + "/?autostart=0")
    expect(conn).to_have_text("stopped")
    expect(conn).to_have_attribute("data-state", "idle")
    time.sleep(0.5)
    assert stats(pg)["received"] == 0  # nothing arrives before Start

    # Start: readings arrive, counters move, the charts change
    pg.click("#toggle")
    expect(pg.locator("#toggle")).to_have_text("Stop streaming")
    expect(conn).to_have_attribute("data-state", "open", timeout=5000)
    expect(conn).to_have_text("live")
    s = wait_stats(pg, "s.received > 2000 && s.charts === 12", timeout=10)
    assert s["sensors"] == 12 and s["untracked"] == 0
    assert s["messages"] * 20 < s["received"]  # batch=1: one message per POST of 100 readings
    time.sleep(1.5)  # the rate is measured over the last second
    rate = number(pg, "#rate")
    assert 1000 <= rate <= 3000, rate  # the feeder offers 2,000/s
    assert pg.locator("#lat-p50").inner_text().endswith("ms")
    p99 = pg.locator("#lat-p99").inner_text()
    assert re.fullmatch(r"[\d.]+ m?s", p99), p99
    assert pg.locator(".card").count() == 12
    first = pg.locator(".card").first
    assert re.fullmatch(r"-?[\d.]+", first.locator(".value").inner_text())
    assert first.locator(".unit").inner_text() in ("celsius", "bar", "m/s")
    points = [int(p) for p in pg.eval_on_selector_all(".card canvas", "cs => cs.map(c => c.dataset.points)")]
    assert all(p > 5 for p in points), points
    before = canvas_images(pg)
    received = stats(pg)["received"]
    time.sleep(1.0)
    after = canvas_images(pg)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 12, "every chart moved"
    assert stats(pg)["received"] > received
    # some sensors run hot: the status colours show
    statuses = set(pg.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.status)"))
    assert "0" in statuses and statuses & {"1", "2", "3"}, statuses
    # latencies reach POST /latency, batched (one POST a second, not one per reading)
    s = wait_stats(pg, "s.reportsSent >= 2", timeout=5)
    assert backend.metric("latency_end_to_end_count") >= s["latencyValuesReported"] > 1000
    assert s["reportsSent"] < 10 and s["reportsFailed"] == 0
    shot = screenshot(pg, "dashboard.png")
    assert shot.stat().st_size > 10_000

    # the backend goes away: the status says so and the page retries with backoff
    down_at = time.monotonic()
    backend.stop()
    expect(conn).to_have_attribute("data-state", re.compile("waiting|connecting"), timeout=5000)
    expect(conn).to_contain_text("reconnecting in", timeout=5000)
    assert pg.locator("#toggle").inner_text() == "Stop streaming"  # still wanted
    time.sleep(1.5)
    screenshot(pg, "dashboard-reconnecting.png")
    assert stats(pg)["conn"] in ("waiting", "connecting")

    # ... and it comes back on the same port: the page reconnects by itself
    backend.start()
    expect(conn).to_have_attribute("data-state", "open", timeout=15000)
    up_at = time.monotonic()
    s = stats(pg)
    assert s["reconnects"] == 1
    received = s["received"]
    wait_stats(pg, f"s.received > {received + 1000}", timeout=10)

    # Stop: the socket closes and nothing more arrives
    pg.click("#toggle")
    expect(conn).to_have_text("stopped", timeout=5000)
    expect(conn).to_have_attribute("data-state", "idle")
    expect(pg.locator("#toggle")).to_have_text("Start streaming")
    for _ in range(100):
        if httpx.get(backend.url + "/healthz").json()["ws_clients"] == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the page's websocket stayed open after Stop")
    received = stats(pg)["received"]
    time.sleep(1.0)
    assert stats(pg)["received"] == received
    assert feeder.posted > 10_000

    assert console.unexpected([(down_at, up_at)]) == []


@needs_chromium
def test_token_from_query_parameter(
    backend_factory: Callable[..., Backend], feeders: Callable[..., Feeder], page: tuple[Page, Console]
) -> None:
    pg, console = page
    backend = backend_factory("--api-token", TOKEN)
    feeders(backend, make_sensors(6), rate=500, token=TOKEN)
    conn = pg.locator("#conn")

    pg.goto(backend.url + "/")  # autostart, no token: refused, and no retry loop
    expect(conn).to_have_attribute("data-state", "failed", timeout=5000)
    expect(conn).to_contain_text("token")
    time.sleep(1.0)
    assert stats(pg)["received"] == 0 and stats(pg)["conn"] == "failed"

    pg.goto(backend.url + f"/?token={TOKEN}")  # autostart with the token
    expect(conn).to_have_attribute("data-state", "open", timeout=5000)
    assert pg.locator("#token").input_value() == TOKEN
    wait_stats(pg, "s.received > 200 && s.charts === 6")
    s = wait_stats(pg, "s.reportsSent >= 1", timeout=5)  # POST /latency carried the Bearer token
    assert s["reportsFailed"] == 0
    assert backend.metric("latency_end_to_end_count") >= s["latencyValuesReported"] > 0
    assert console.unexpected() == []


@needs_chromium
def test_memory_is_bounded_and_the_filter_picks_the_charts(
    backend_factory: Callable[..., Backend], page: tuple[Page, Console]
) -> None:
    pg, console = page
    backend = backend_factory()
    pg.goto(backend.url + "/?max_sensors=40&max_charts=6")
    expect(pg.locator("#conn")).to_have_attribute("data-state", "open", timeout=5000)

    many = make_sensors(90, prefix="X")  # more sensors than the page tracks
    rng = random.Random(1)
    now = time.time()
    with httpx.Client(base_url=backend.url, timeout=5) as http:
        for k in range(30):  # 30 rounds of every sensor over the last 3 s
            body = [sensor.reading(rng, iso(now - 3 + k * 0.1)) for sensor in many]
            assert http.post("/telem_data/batch", json=body).status_code == 200
        old = [sensor.reading(rng, iso(now - 120)) for sensor in many[:10]]  # two minutes old
        assert http.post("/telem_data/batch", json=old).status_code == 200

    s = wait_stats(pg, f"s.received === {30 * 90 + 10}")
    assert s["sensors"] == 40 and s["untracked"] == 50 * 30  # the first 40 seen are tracked, the rest counted
    assert s["late"] == 10  # older than the 60 s window: counted, not charted
    assert s["slotsPerSensor"] == 602  # a fixed ring per sensor: 60 s of 100 ms buckets
    assert s["latencySamples"] <= s["latencyCap"] and s["pendingReport"] <= s["reportCap"]
    s = wait_stats(pg, "s.charts === 6")
    expect(pg.locator("#view-note")).to_contain_text("narrow the filter")

    pg.fill("#filter", "press")
    pg.wait_for_function("() => document.querySelectorAll('.card').length === 6")
    ids = pg.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.sensor)")
    assert all(i.startswith("XPRESS_") for i in ids), ids
    pg.fill("#filter", "XTEMP_ENGINE_001")
    pg.wait_for_function("() => document.querySelectorAll('.card').length === 1")
    assert pg.locator(".card .sid").inner_text() == "XTEMP_ENGINE_001"
    pg.fill("#filter", "")
    pg.select_option("#type", "VELOCITY")
    pg.wait_for_function(
        "() => [...document.querySelectorAll('.card')].every(c => c.dataset.sensor.startsWith('XVELO_'))"
        " && document.querySelectorAll('.card').length === 6"
    )
    assert console.unexpected() == []
