"""Start the real dashboard and a real Chromium; draw on the sketch canvas; take screenshots.

Shared by tests/e2e (conftest and the browser tests), scripts/screenshots.py and
scripts/bench_sketch.py, so the scripts that make the docs' pictures and timings and
the browser tests start the app the same way.

Facts this relies on (streamlit 1.67):
- the Sketch page's pad is a components-v2 element (dashboard/views/sketch.py, PAD_JS): no
  iframe; its <canvas class="sketch-pad"> sits in an open shadow root under
  `[data-testid="stBidiComponentIsolated"]`, which Playwright's CSS locators pierce. It takes
  pointer events and sends the drawing when the pen is lifted.
- `[data-testid="stApp"]` carries `data-test-script-state` ("initial", "running",
  "notRunning", ...) and `data-test-connection-state`; Streamlit's own browser tests wait on
  them.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.store.folder import STATUS

REPO = Path(__file__).resolve().parents[1]
APP = "dashboard/app.py"
CHROMIUM = "/usr/bin/chromium"
# Flags that work as root, with no GPU and no network (see /work/shared/ENVIRONMENT.md).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1400, "height": 1000}  # px; screenshots are this wide
# A phone: the size the dashboard is checked at on a small screen (tests/e2e/test_layout_browser.py)
# and its screenshots taken at (`python -m scripts.screenshots --phone`).
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# url path -> title the page shows, in the sidebar's order
PAGES = {"train": "Train", "compare": "Compare", "evaluate": "Evaluate", "mistakes": "Mistakes",
         "label-issues": "Label issues", "embedding": "Embedding map", "robustness": "Robustness", "sketch": "Sketch",
         "inside": "Inside the network",
         "data": "Data", "sweep": "Sweep", "search": "Search"}

# Strokes in canvas fractions (0..1 of width, height): each a polyline drawn with the mouse held.
DIGIT_STROKES = {
    "1": [[(0.50, 0.15), (0.50, 0.85)]],
    "7": [[(0.25, 0.20), (0.75, 0.20), (0.42, 0.85)]],
}
# Drawings that are not digits (the Sketch pad's not-a-digit check), in canvas fractions.
OTHER_STROKES = {
    "H": [[(0.30, 0.15), (0.30, 0.85)], [(0.70, 0.15), (0.70, 0.85)], [(0.30, 0.50), (0.70, 0.50)]],
    "hash": [[(0.40, 0.15), (0.40, 0.85)], [(0.60, 0.15), (0.60, 0.85)],
             [(0.20, 0.40), (0.80, 0.40)], [(0.20, 0.60), (0.80, 0.60)]],
    "star": [[(0.50, 0.12), (0.62, 0.85), (0.18, 0.38), (0.82, 0.38), (0.38, 0.85), (0.50, 0.12)]],
}


class HarnessError(RuntimeError):
    """The app or the browser could not be started; the message says why."""


# --- the Streamlit server ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A `streamlit run dashboard/app.py` in its own process group; output goes to `log`."""
    process: subprocess.Popen
    url: str
    log: Path
    checkpoints: Path
    _log_file: object = field(repr=False, default=None)
    # End the training jobs started in `checkpoints` on stop() (a throwaway folder only: never
    # for a real runs folder, whose jobs belong to someone else).
    stop_jobs: bool = False

    def output(self, last_chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-last_chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self._log_file:
            self._log_file.close()
        if self.stop_jobs:
            stop_training_jobs(self.checkpoints)


def start_server(checkpoints: str | os.PathLike, data: str | os.PathLike | None = None,
                 python: str = sys.executable, timeout: float = 60.0, log: Path | None = None,
                 stop_jobs: bool = False, owner_password: str | None = None) -> Server:
    """Start the dashboard on a free port of 127.0.0.1 and wait until its health check answers.

    `checkpoints` becomes $MNIST_LAB_CHECKPOINTS, `data` (default: the repository's data/)
    $MNIST_LAB_DATA. With `stop_jobs`, stop() also ends training jobs left running in
    `checkpoints` (for throwaway folders). With `owner_password`, the lab has an owner (it is
    $MNIST_LAB_OWNER_PASSWORD) and every session starts as a visitor; without, no password from
    the caller's environment or kept file applies. Raises HarnessError with the server's output if
    it does not come up.
    """
    checkpoints = Path(checkpoints).resolve()
    data = Path(data).resolve() if data else REPO / "data"
    port = free_port()
    if log is None:
        log = Path(tempfile.mkstemp(prefix="mnist-lab-streamlit-", suffix=".log")[1])
    log_file = open(log, "wb")
    env = {**os.environ, "MNIST_LAB_CHECKPOINTS": str(checkpoints), "MNIST_LAB_DATA": str(data),
           "PYTHONUNBUFFERED": "1", "MNIST_LAB_OWNER_FILE": str(log) + ".no-owner-file"}
    env.pop("MNIST_LAB_OWNER_PASSWORD", None)
    if owner_password is not None:
        env["MNIST_LAB_OWNER_PASSWORD"] = owner_password
    process = subprocess.Popen(
        [python, "-m", "streamlit", "run", APP, "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own process group, so stop() ends it and its children
    server = Server(process, f"http://127.0.0.1:{port}", log, checkpoints, log_file, stop_jobs)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise HarnessError(f"streamlit exited with code {process.returncode} before answering:\n"
                               + server.output())
        try:
            with urllib.request.urlopen(server.url + "/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise HarnessError(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n"
                               + server.output())
        time.sleep(0.3)


def stop_training_jobs(checkpoints: Path) -> None:
    """SIGTERM training jobs the dashboard started in `checkpoints` that still run.

    Jobs run in their own sessions (they survive the server by design), so stopping the
    server's process group does not end them. Only processes whose command line names this
    checkpoints folder are signalled.
    """
    for status_file in Path(checkpoints).glob(f"*/{STATUS}"):
        try:
            status = json.loads(status_file.read_text())
            pid = int(status.get("pid") or 0)
            if status.get("status") not in ("queued", "running") or pid <= 0:
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, AttributeError):
            continue
        if str(checkpoints) in cmdline and " core " in f" {cmdline} ":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def seed_runs(checkpoints: str | os.PathLike, runs: list[list[str]], data: str | os.PathLike | None = None,
              python: str = sys.executable, timeout: float = 300.0) -> None:
    """Train `runs` (each a list of `python -m core train` options) into `checkpoints`, in parallel."""
    env = {**os.environ, "MNIST_LAB_CHECKPOINTS": str(Path(checkpoints).resolve()),
           "MNIST_LAB_DATA": str(Path(data).resolve() if data else REPO / "data")}
    procs = [subprocess.Popen([python, "-m", "core", "train", *options, "--quiet"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
             for options in runs]
    failures = []
    for options, proc in zip(runs, procs):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"`python -m core train {' '.join(options)}` exited {proc.returncode}:\n"
                            + out.decode(errors="replace")[-3000:])
    if failures:
        raise HarnessError("\n".join(failures))


# --- the browser -------------------------------------------------------------------------------

def launch_browser(playwright, headless: bool = True):
    """Debian's Chromium under Playwright (Playwright's own browser download does not work here)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise HarnessError(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it "
                           "with `apt-get install -y chromium chromium-driver` (or `make browser`).")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=headless)


@contextlib.contextmanager
def dashboard_in_chromium(checkpoints: str | os.PathLike, log: Path, say, headless: bool = True):
    """`with dashboard_in_chromium(root, log, say) as (server, browser):` the real dashboard on `root`
    and a Chromium for it (the benchmarks' set-up); on an error, `say` gets the server's output
    first; both are stopped when the block ends."""
    from playwright.sync_api import sync_playwright
    server = start_server(checkpoints, log=log)
    try:
        with sync_playwright() as playwright:
            browser = launch_browser(playwright, headless=headless)
            try:
                yield server, browser
            finally:
                browser.close()
    except Exception:
        say(f"streamlit's output:\n{server.output()}")
        raise
    finally:
        server.stop()


def new_page(browser, phone: bool = False):
    """A fresh tab, 1400 px wide, or (`phone`) in a phone's own context (PHONE: 390x844, touch)."""
    page = browser.new_context(**PHONE).new_page() if phone else browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)  # ms
    return page


def close_page(page) -> None:
    """Close a tab from new_page with its context (each has its own: a phone's, or the one
    browser.new_page makes for the tab)."""
    page.context.close()


def wait_for_app(page, timeout: float = 60.0) -> None:
    """Wait until Streamlit is connected and no script run is under way (no "Running..." widget)."""
    ms = int(timeout * 1000)
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=ms)
    # A settled state must hold for a moment: a button click or a fragment schedules a rerun
    # a few milliseconds after the previous run ended.
    deadline = time.monotonic() + timeout
    settled_since = None
    while time.monotonic() < deadline:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        running = page.locator('[data-testid="stStatusWidgetRunningIcon"]').count() > 0
        if state == "notRunning" and not running:
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= 0.5:
                return
        else:
            settled_since = None
        page.wait_for_timeout(100)
    raise AssertionError(f"the app was still running after {timeout:.0f} s (script state {state!r})")


def open_page(page, base_url: str, path: str, timeout: float = 60.0) -> None:
    page.goto(f"{base_url}/{path}", wait_until="domcontentloaded")
    wait_for_app(page, timeout)


def problems(page) -> list[str]:
    """Visible breakage: exception boxes, a Traceback in the text, the "Page not found" dialog."""
    found = []
    for element in page.locator('[data-testid="stException"]').all():
        found.append("exception: " + element.inner_text()[:2000])
    main_text = page.locator('[data-testid="stApp"]').inner_text()
    if "Traceback" in main_text:
        found.append("a Traceback is shown:\n" + main_text[main_text.index("Traceback"):][:2000])
    for dialog in page.locator('[data-testid="stDialog"]').all():
        text = dialog.inner_text()
        if "page not found" in text.lower():
            found.append("dialog: " + text[:500])
    return found


def assert_no_exception(page) -> None:
    found = problems(page)
    assert not found, f"{page.url} shows:\n" + "\n".join(found)


PAD = "canvas.sketch-pad"  # the Sketch page's canvas


def canvas(page):
    """The Sketch page's canvas (the one that takes the pointer)."""
    layer = page.locator(PAD)
    layer.first.wait_for(state="visible")
    return layer.first


def _on_canvas(page, strokes, steps: int) -> list[list[tuple[float, float]]]:
    """Polylines in canvas fractions as page points, `steps` points per segment after the first."""
    target = canvas(page)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, f"the canvas has no usable size: {box}"
    paths = []
    for stroke in strokes:
        path = [stroke[0]]
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            path += [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(1, steps + 1)]
        paths.append([(box["x"] + px * box["width"], box["y"] + py * box["height"]) for px, py in path])
    return paths


def draw(page, strokes, steps: int = 12) -> None:
    """Draw polylines given in canvas fractions with the mouse, one press per stroke."""
    for path in _on_canvas(page, strokes, steps):
        page.mouse.move(*path[0])
        page.mouse.down()
        for point in path[1:]:
            page.mouse.move(*point)
        page.mouse.up()


def draw_touch(page, strokes, steps: int = 12) -> None:
    """Draw polylines given in canvas fractions with a finger (touch events through the DevTools
    protocol, as a phone's browser sends them), one touch per stroke."""
    paths = _on_canvas(page, strokes, steps)
    cdp = page.context.new_cdp_session(page)
    try:
        for path in paths:
            for kind, point in [("touchStart", path[0]), *(("touchMove", p) for p in path[1:])]:
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": point[0], "y": point[1]}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        cdp.detach()


def draw_digit(page, digit: str = "1") -> None:
    """A digit of DIGIT_STROKES, or a drawing of OTHER_STROKES, drawn with the mouse."""
    draw(page, DIGIT_STROKES.get(digit) or OTHER_STROKES[digit])


# --- screenshots -------------------------------------------------------------------------------

def content_height(page) -> int:
    """px: the app's full height. Streamlit scrolls inside its main block, not the document,
    so a plain full-page screenshot would stop at the viewport."""
    return int(page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"],'
            + ' [data-testid="stSidebarContent"]')].map(e => e.scrollHeight))"""))


def full_screenshot(page, path: Path, max_height: int = 12_000) -> None:
    """Grow the viewport to the content's height, shoot, and restore it."""
    viewport = dict(page.viewport_size)
    height = viewport["height"]
    for _ in range(3):  # charts may reflow once the viewport grows
        wanted = min(max(content_height(page), viewport["height"]), max_height)
        if wanted == height:
            break
        height = wanted
        page.set_viewport_size({"width": viewport["width"], "height": height})
        page.wait_for_timeout(600)  # ms: Vega charts and images repaint at the new size
    try:
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(viewport)


def drag_box_on_chart(page, timeout: float = 60.0, box=(0.35, 0.35, 0.6, 0.6)) -> bool:
    """Drag a box over the page's first Vega chart (fractions of its width and height, left,
    top, right, bottom): the embedding map's selection. False when the page has no chart."""
    chart = page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')
    if not chart.count():
        return False
    chart.first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)  # ms: Vega binds its pointer handlers after the first paint
    area = chart.first.bounding_box()
    x0, y0 = area["x"] + area["width"] * box[0], area["y"] + area["height"] * box[1]
    x1, y1 = area["x"] + area["width"] * box[2], area["y"] + area["height"] * box[3]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
    page.mouse.up()
    page.wait_for_timeout(300)
    wait_for_app(page, timeout)
    return True


def take_screenshots(browser, base_url: str, out_dir: str | os.PathLike, pages=tuple(PAGES),
                     sketch_digit: str = "7", timeout: float = 90.0,
                     settle_ms: int = 800, sketch_name: str = "sketch",
                     phone: bool = False) -> list[tuple[Path, list[str]]]:
    """Open each page (on Sketch, draw a digit first; on Inside the network, draw it and click a
    channel) and save a whole-page PNG of it, `settle_ms`
    after the page's run ends (charts and images finish painting: the docs' pictures wait).

    Returns (out_dir/screenshot-<page>.png, problems seen on that page) per page; the PNGs are
    1400 px wide and as tall as the page. With `phone`, the pages are seen on a phone (PHONE:
    390 px wide, touch; the digit drawn with a finger) and saved as screenshot-phone-<page>.png.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    page = new_page(browser, phone=phone)
    size = page.viewport_size
    try:
        for path in pages:
            open_page(page, base_url, path, timeout)
            if path == "sketch" and page.locator(PAD).count():
                page.wait_for_timeout(500)  # ms: the pad binds its pointer handlers after the first paint
                if phone:
                    draw_touch(page, DIGIT_STROKES.get(sketch_digit) or OTHER_STROKES[sketch_digit])
                else:
                    draw_digit(page, sketch_digit)
                page.wait_for_timeout(300)
                wait_for_app(page, timeout)
                why = page.get_by_text("Why? Show the saliency of the drawing")
                if why.count():  # the saliency of the drawing, for the first model
                    why.click()
                    wait_for_app(page, timeout)
            if path == "inside" and page.locator(PAD).count():  # a drawn digit, then a channel of its 4th layer
                page.wait_for_timeout(500)
                if phone:
                    draw_touch(page, DIGIT_STROKES.get(sketch_digit) or OTHER_STROKES[sketch_digit])
                else:
                    draw_digit(page, sketch_digit)
                page.locator(".inside-layers[data-drawn]").first.wait_for(timeout=timeout * 1000)
                wait_for_app(page, timeout)
                find = page.get_by_role("button", name="Find them")
                if find.count():  # the nearest training digits, as a user asks for them
                    find.click()
                    page.get_by_text("Nearest training digits").wait_for(timeout=timeout * 1000)
                    page.locator('[data-testid="stImageCaption"]').first.wait_for(timeout=timeout * 1000)
                    wait_for_app(page, timeout)
                channels = page.locator(".inside-layer").nth(4).locator("canvas[data-unit]")
                if channels.count() > 5:
                    channels.nth(5).click()
                    page.get_by_text("The 9 test images that excite it most").wait_for(timeout=timeout * 1000)
                    wait_for_app(page, timeout)
            if path == "embedding":
                drag_box_on_chart(page, timeout)
            if path == "mistakes":  # the saliency of the first mistake shown
                why = page.get_by_text("Why? The saliency of one of these images")
                if why.count():
                    why.first.click()
                    wait_for_app(page, timeout)
            # Park the mouse right of the content: no tooltip, hover highlight or sidebar button.
            if not phone:
                page.mouse.move(size["width"] - 2, size["height"] - 2)
            page.wait_for_timeout(settle_ms)
            name = sketch_name if path == "sketch" else path or "home"  # "": the first page, at "/"
            target = out_dir / f"screenshot-{'phone-' if phone else ''}{name}.png"
            full_screenshot(page, target)
            shots.append((target, problems(page)))
    finally:
        close_page(page)
    return shots
