"""Time the Sketch page in a real Chromium: stroke released -> every model's prediction shown.

    python -m scripts.bench_sketch --checkpoints DIR [--drawings 10] [--json]

Builds a temporary runs folder holding one finished run of each registered architecture (the
best by validation accuracy in DIR; an architecture DIR lacks gets a tiny real run, trained here
with `python -m core train --epochs 1 --train-limit 2000 --val-size 500 --device cpu`, a few
seconds to a minute each), starts the real dashboard on it (`streamlit run dashboard/app.py` on a
free port, exactly as the browser tests do: scripts/harness.py) and opens Sketch in Debian's
Chromium. The page selects the best run of each architecture by default, so every model is asked.

One warm-up drawing loads the models. Then, for each of --drawings drawings (the digits 0-9 in
turn, each one stroke of the mouse on an empty canvas, Clear between them), the page itself
measures with performance.now() the time from the release of the mouse button that ends the
stroke (its pointerup, or mouseup, whichever comes first) to the moment the DOM holds a current
(not stale) card for every selected model ("Predicted: N", or "Not a digit" where the model
rejects the drawing): a MutationObserver installed before the
stroke checks the DOM on every change. Prints the milliseconds per drawing, their median, p95
(linear interpolation, as numpy), min and max, and how long after the release the page sent the
drawing to the server (--json: one JSON object instead).

Run it from the repository root (`tests` must import); needs Chromium at /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.models import list_models
from core.store.folder import LOCK_NAME, LOG_NAME
from core.store.runs import list_runs, load_model
from core.store.tables import best_run_per_arch
from scripts import harness

REPO = Path(__file__).resolve().parents[1]
TARGET_P95_MS = 100.0


# --- one stroke per digit, in canvas fractions ---------------------------------------------------

def _curve(fx, fy, n: int = 24, t0: float = 0.0, t1: float = 2 * math.pi):
    return [(fx(t0 + (t1 - t0) * k / n), fy(t0 + (t1 - t0) * k / n)) for k in range(n + 1)]


STROKES: dict[int, list[tuple[float, float]]] = {
    0: _curve(lambda t: 0.5 + 0.2 * math.sin(t), lambda t: 0.5 - 0.32 * math.cos(t)),
    1: [(0.5, 0.15), (0.5, 0.85)],
    2: [(0.28, 0.3), (0.4, 0.18), (0.6, 0.18), (0.7, 0.3), (0.65, 0.45), (0.3, 0.82), (0.75, 0.82)],
    3: [(0.3, 0.2), (0.65, 0.2), (0.68, 0.32), (0.45, 0.48), (0.68, 0.62), (0.65, 0.8), (0.3, 0.82)],
    4: [(0.6, 0.85), (0.6, 0.15), (0.25, 0.6), (0.78, 0.6)],
    5: [(0.7, 0.18), (0.35, 0.18), (0.32, 0.45), (0.6, 0.45), (0.7, 0.62), (0.6, 0.8), (0.3, 0.8)],
    6: [(0.65, 0.15), (0.4, 0.4), (0.32, 0.65), (0.45, 0.82), (0.62, 0.78), (0.66, 0.6), (0.5, 0.5),
        (0.35, 0.6)],
    7: [(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)],
    8: _curve(lambda t: 0.5 + 0.2 * math.sin(2 * t), lambda t: 0.5 - 0.32 * math.cos(t), n=32),
    9: _curve(lambda t: 0.5 + 0.16 * math.cos(t), lambda t: 0.33 - 0.16 * math.sin(t))
       + [(0.64, 0.5), (0.62, 0.85)],
}

# Installed before each stroke: records the stroke's mouseup and the first moment afterwards
# at which `expected` current cards each show their heading ("Predicted: N" or "Not a digit").
OBSERVE_JS = """(expected) => {
  if (window.__sketchBench) window.__sketchBench.stop();
  const state = {up: null, shown: null, sent: null, expected, cardsAtUp: null, received: []};
  window.__sketchBenchSent = (t) => { if (state.up !== null && state.sent === null) state.sent = t; };
  window.__sketchBenchReceived = (t) => { if (state.sent !== null) state.received.push(t); };
  const cards = () => {
    let n = 0;
    for (const h of document.querySelectorAll('[data-testid="stMain"] h3')) {
      if (!/^(Predicted:\\s*\\d\\b|Not a digit( to this model)?$)/.test(h.textContent.trim())) continue;
      const box = h.closest('[data-testid="stElementContainer"]');
      if (box && box.getAttribute('data-stale') === 'true') continue;
      n += 1;
    }
    return n;
  };
  const check = () => {
    if (state.up === null || state.shown !== null) return;
    if (cards() >= expected) state.shown = performance.now();
  };
  // The pen is lifted at the first release event of a press: pointerup, which comes before
  // mouseup (a canvas may listen to either).
  let pressed = false;
  const onDown = () => { pressed = true; };
  const onUp = () => {
    if (!pressed) return;
    pressed = false; state.up = performance.now(); state.cardsAtUp = cards(); check();
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {childList: true, subtree: true, characterData: true,
                                   attributes: true, attributeFilter: ['data-stale']});
  const events = [['pointerdown', onDown], ['mousedown', onDown], ['pointerup', onUp], ['mouseup', onUp]];
  for (const [name, fn] of events) document.addEventListener(name, fn, true);
  state.stop = () => {
    observer.disconnect();
    for (const [name, fn] of events) document.removeEventListener(name, fn, true);
  };
  state.cards = cards;
  window.__sketchBench = state;
}"""


# Installed in the page before the app loads: notes when the page sends a message to the server
# (the canvas's new drawing asking for a rerun) and when each message from the server arrives, so
# the report can split the time: in the page before the drawing is sent, on the server (Python and
# the socket) until the message that draws the cards arrives, and in the browser after it.
SEND_HOOK_JS = """(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (!this.__sketchBenchHooked) {
      this.__sketchBenchHooked = true;
      this.addEventListener('message', () => {
        if (window.__sketchBenchReceived) window.__sketchBenchReceived(performance.now());
      });
    }
    if (window.__sketchBenchSent) window.__sketchBenchSent(performance.now());
    return send.call(this, data);
  };
})();"""


# --- the runs -----------------------------------------------------------------------------------

def best_runs(checkpoints: Path) -> dict:
    """arch -> the best finished run with weights in `checkpoints` (core.store.tables.best_run_per_arch)."""
    if not checkpoints.is_dir():
        return {}
    return {run.arch: run for run in best_run_per_arch(list_runs(checkpoints))}


def train_tiny(checkpoints: Path, arch: str) -> None:
    out = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(checkpoints), "train", "--arch", arch,
                          "--epochs", "1", "--train-limit", "2000", "--val-size", "500", "--device", "cpu",
                          "--name", f"bench-{arch}", "--quiet"], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"training a tiny {arch} run failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def one_run_per_arch(source: Path, dest: Path, log) -> list[str]:
    """Fill `dest` with one finished run of each registered architecture; their names."""
    found = best_runs(source)
    for arch, run in list(found.items()):
        try:
            load_model(run.run_id, source)
        except Exception as exc:  # noqa: BLE001 - e.g. weights of an earlier version of the architecture
            log(f"  {arch:9s} {run.run_id} cannot be loaded ({exc}): a tiny run replaces it")
            del found[arch]
    missing = [arch for arch in list_models() if arch not in found]
    for arch, run in found.items():
        shutil.copytree(run.path, dest / run.run_id, ignore=shutil.ignore_patterns(LOCK_NAME, LOG_NAME))
        log(f"  {arch:9s} {run.run_id} (from {source})")
    for arch in missing:
        started = time.monotonic()
        train_tiny(dest, arch)
        log(f"  {arch:9s} trained a tiny run in {time.monotonic() - started:.0f} s")
    return [run.name for run in best_runs(dest).values()]


# --- the browser --------------------------------------------------------------------------------

def selected_models(page) -> int:
    return page.locator('[data-testid="stMultiSelect"] [data-tag]').count()


def clear(page) -> None:
    page.get_by_role("button", name="Clear", exact=True).click()
    harness.wait_for_app(page)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stMain\"] h3') || "
                           "![...document.querySelectorAll('[data-testid=\"stMain\"] h3')]"
                           ".some(h => /^(Predicted:|Not a digit)/.test(h.textContent.trim()))")
    page.wait_for_timeout(300)  # ms: the new canvas binds its mouse handlers after its first paint


def time_drawing(page, digit: int, expected: int, timeout_ms: int = 30_000) -> float:
    """ms from the stroke's mouseup to `expected` current prediction cards, measured in the page."""
    page.evaluate(OBSERVE_JS, expected)
    harness.draw(page, [STROKES[digit]], steps=4)
    try:
        page.wait_for_function("() => window.__sketchBench.shown !== null", timeout=timeout_ms)
    except Exception as exc:
        state = page.evaluate("() => ({up: window.__sketchBench.up, cards: window.__sketchBench.cards(), "
                              "expected: window.__sketchBench.expected})")
        raise RuntimeError(f"the predictions did not show within {timeout_ms} ms: {state}") from exc
    state = page.evaluate("() => ({up: window.__sketchBench.up, shown: window.__sketchBench.shown, "
                          "sent: window.__sketchBench.sent, atUp: window.__sketchBench.cardsAtUp, "
                          "received: window.__sketchBench.received})")
    page.evaluate("() => window.__sketchBench.stop()")
    if state["atUp"]:
        raise RuntimeError(f"{state['atUp']} prediction cards were already shown when the stroke ended")
    SENT.append(None if state["sent"] is None else state["sent"] - state["up"])
    before = [t for t in state["received"] if t <= state["shown"]]
    SPLITS.append(None if state["sent"] is None or not before else
                  {"page": state["sent"] - state["up"], "first_reply": before[0] - state["sent"],
                   "server": before[-1] - state["sent"], "browser": state["shown"] - before[-1],
                   "messages": len(before)})
    return state["shown"] - state["up"]


SENT: list[float | None] = []  # ms from each timed mouseup to the page's next message to the server
# Per timed drawing, where its time went (ms): "page", mouseup -> the drawing sent; "server", sent ->
# the last message from the server before the cards showed (the one that drew them: Python and the
# socket); "first_reply", sent -> the server's first message; "browser", that last message -> the
# cards shown; "messages", how many messages came in between.
SPLITS: list[dict | None] = []


def split_summary(splits: list[dict | None]) -> dict:
    """The median (and max) of each part of the time over the drawings that could be split."""
    known = [s for s in splits if s is not None]
    if not known:
        return {}
    summary = {part: {"median_ms": round(statistics.median(s[part] for s in known), 1),
                      "max_ms": round(max(s[part] for s in known), 1)}
               for part in ("page", "first_reply", "server", "browser")}
    summary["messages"] = {"median": statistics.median(s["messages"] for s in known),
                           "max": max(s["messages"] for s in known)}
    return summary


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="runs folder to take the best run of each architecture from (default: ./checkpoints)")
    parser.add_argument("--drawings", type=int, default=10, help="timed drawings (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--headed", action="store_true", help="show the browser window")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    import torch
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-sketch-") as tmp:
        tmp = Path(tmp)
        checkpoints = tmp / "checkpoints"
        checkpoints.mkdir()
        log(f"one run per architecture in {checkpoints}:")
        names = one_run_per_arch(Path(args.checkpoints).resolve(), checkpoints, log)
        # The app's own packages, even where another copy of this project is installed editable.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        os.environ["MNIST_LAB_HANDWRITING"] = str(tmp / "handwriting")
        with harness.dashboard_in_chromium(checkpoints, tmp / "streamlit.log", log,
                                           headless=not args.headed) as (server, browser):
            page = harness.new_page(browser)
            page.add_init_script(SEND_HOOK_JS)
            harness.open_page(page, server.url, "sketch")
            harness.assert_no_exception(page)
            expected = selected_models(page)
            if not expected:
                raise RuntimeError("the Sketch page selected no model")
            if expected != len(names):
                log(f"note: the page selects {expected} of the {len(names)} models by default")
            page.wait_for_timeout(500)  # ms: the canvas binds its pointer handlers after the first paint
            warmup = time_drawing(page, 1, expected, timeout_ms=120_000)  # loads the models
            harness.wait_for_app(page)
            harness.assert_no_exception(page)
            clear(page)
            times = []
            SENT.clear()
            SPLITS.clear()
            for i in range(args.drawings):
                times.append(time_drawing(page, i % 10, expected))
                harness.wait_for_app(page)
                clear(page)
            harness.assert_no_exception(page)
    result = {"models": expected, "drawings": len(times), "warmup_ms": round(warmup, 1),
              "median_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, 0.95), 1),
              "min_ms": round(min(times), 1), "max_ms": round(max(times), 1),
              "per_drawing_ms": [round(t, 1) for t in times],
              "sent_ms": [None if t is None else round(t, 1) for t in SENT], "split": split_summary(SPLITS),
              "torch": torch.__version__,
              "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps(result))
    else:
        log(f"\n{expected} models, {len(times)} drawings (warm-up {warmup:.0f} ms, not counted); "
            f"stroke released -> every prediction shown, ms:")
        log("  per drawing: " + ", ".join(f"{t:.0f}" for t in times))
        log("  of which mouseup -> the page's message to the server: "
            + ", ".join("-" if t is None else f"{t:.0f}" for t in SENT))
        for part, what in (("page", "mouseup -> drawing sent (the page)"),
                           ("first_reply", "sent -> the server's first message"),
                           ("server", "sent -> the message that drew the cards (Python and the socket)"),
                           ("browser", "that message -> cards shown (the browser)")):
            if part in result["split"]:
                log(f"  {what}: median {result['split'][part]['median_ms']:.0f}, "
                    f"max {result['split'][part]['max_ms']:.0f}")
        log(f"  median {result['median_ms']:.0f}  p95 {result['p95_ms']:.0f}  min {result['min_ms']:.0f}  "
            f"max {result['max_ms']:.0f}  (target: p95 <= {TARGET_P95_MS:.0f} ms with a model of each of the "
            f"{len(list_models())} architectures: "
            f"{'met' if result['p95_ms'] <= TARGET_P95_MS and expected >= len(list_models()) else 'MISSED'})")
        log(f"  torch {torch.__version__}, {os.cpu_count()} CPUs, load average {result['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
