"""A class on one lab, measured: real Streamlit sessions drawing on Sketch while the owner trains.

    python -m scripts.load_sketch [--checkpoints checkpoints] [--sessions 1,10,20,30] [--seconds 60]
                                  [--interval 2] [--browsing 0.2] [--no-train] [--json FILE]

Starts the real dashboard (`streamlit run dashboard/app.py`, scripts/harness.py) on a copy of
--checkpoints (the shipped reference runs by default) and, for each number of sessions in turn,
opens that many sessions over Streamlit's own websocket (scripts/stclient.py: the messages a
browser tab sends and reads, without drawing the page). Each session opens Sketch, whose default
models are the best run of each architecture, and every --interval seconds (each session at its
own phase) sends a drawing as the pad does when the pen lifts: a real MNIST test digit, scaled to
the pad's 280x280 PNG. A share (--browsing) of the sessions instead move between Compare, Evaluate
and Mistakes at the same pace.

Measured per level, for --seconds seconds:
- stroke-to-cards: from sending a drawing to the end of the run that draws its cards (the
  fragment's script_finished), median and p95 (linear interpolation, as numpy), over every drawing
  answered; a drawing a session replaced before it was answered is "dropped" (Streamlit stops the
  stale run and computes the newest), not an error;
- errors: a session closed by the server, an exception on the page, or no answer in 30 s;
- the server's memory (resident set, and its proportional share, /proc/PID/smaps_rollup): before
  the sessions, the highest while they draw, and 10 s after they have gone; "before" is a lab that
  has loaded every model and shown every browsed page once;
- the server's CPU time over the level, in cores (1.0: one core busy all along);
- with training (the default), the owner's `lenet` job (`python -m core train --arch lenet`, its
  recipe, on the same machine) started as the level starts and stopped as it ends: the median of
  its epochs' seconds (the first left out), against the same job alone before any session. While
  the sessions draw it computes on all cores but one (--train-threads), as the lab starts jobs once
  it has an owner password (dashboard/access.py: leave_a_core); alone, on every core, as it trains
  when the lab is the owner's alone.

The server runs as a class meets it: with an owner password, so every session is a visitor.
Prints a table; --json writes every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts import harness
from scripts.stclient import FINISHED, SUPERSEDED, Session, SessionError

REPO = Path(__file__).resolve().parents[1]
BROWSE = ("compare", "evaluate", "mistakes")
ANSWER_S = 30.0


def drawings(count: int = 20) -> list[str]:
    """Real MNIST test digits as the pad sends them (PNG data URLs of the 280x280 canvas)."""
    import base64
    import io

    from PIL import Image

    from core.data.mnist import load_mnist
    mnist = load_mnist(None)
    out = []
    for index in range(count):
        grey = np.kron(mnist.test_images[index].numpy().astype(np.uint8), np.ones((10, 10), dtype=np.uint8))
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


def cards(session: Session) -> list[str]:
    """The Sketch cards' verdicts now on the page: "Predicted: 7", "Not a digit", ..."""
    found = []
    for text in session.texts.values():
        found += re.findall(r"Predicted: \d|Not a digit", text)
    return found


def memory(pid: int) -> dict[str, float]:
    """The process's resident set and proportional set size, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            out[name.lower()] = int(rest.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# --- the sessions -------------------------------------------------------------------------------

async def sketching(url: str, images: list[str], stop: float, interval: float, phase: float, out: dict) -> None:
    try:
        session = await Session.open(url, "sketch", timeout=ANSWER_S * 4)
        pad = next(w for w in session.widgets.values() if w.kind == "bidi_component")
    except (SessionError, OSError, StopIteration, TimeoutError) as exc:
        out["errors"].append(f"open: {exc}")
        return
    await asyncio.sleep(phase)
    pending = []
    k = random.randrange(len(images))
    try:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            pending.append(await session.draw(pad, images[k % len(images)], wait=False))
            k += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
        deadline = time.perf_counter() + ANSWER_S
        while any(r.finished is None for r in pending) and time.perf_counter() < deadline and not session.closed:
            await asyncio.sleep(0.05)
    finally:
        for run in pending:
            if run.exceptions:
                out["errors"].append("page: " + "; ".join(run.exceptions))
            elif run.status in FINISHED:
                out["latency"].append(run.seconds)
            elif run.status == SUPERSEDED:
                out["dropped"] += 1
            elif session.closed:
                out["errors"].append(f"session: {session.closed}")
            else:
                out["errors"].append(f"no answer in {ANSWER_S:.0f} s")
        out["strokes"] += len(pending)
        await session.close()


async def browsing(url: str, stop: float, interval: float, phase: float, out: dict) -> None:
    try:
        session = await Session.open(url, BROWSE[0], timeout=ANSWER_S * 4)
    except (SessionError, OSError, TimeoutError) as exc:
        out["errors"].append(f"open: {exc}")
        return
    await asyncio.sleep(phase)
    k = 1
    try:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                run = await session.goto(BROWSE[k % len(BROWSE)], timeout=ANSWER_S)
                out["page_seconds"].append(run.seconds)
            except SessionError as exc:
                out["errors"].append(f"browse: {exc}")
                if session.closed:
                    return
            k += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        await session.close()


async def level(url: str, pid: int, images: list[str], sessions: int, seconds: float, interval: float,
                browsing_share: float) -> dict:
    out = {"latency": [], "dropped": 0, "strokes": 0, "errors": [], "page_seconds": [], "memory": []}
    browsers = round(sessions * browsing_share) if sessions > 1 or browsing_share == 1.0 else 0
    stop = time.perf_counter() + seconds

    async def sample():
        while time.perf_counter() < stop:
            out["memory"].append(memory(pid))
            await asyncio.sleep(1.0)
    tasks = [asyncio.create_task(sample())]
    for i in range(sessions):  # sessions arrive over the first interval, each with its own phase
        phase = interval * i / max(1, sessions)
        if i < browsers:
            tasks.append(asyncio.create_task(browsing(url, stop, interval, phase, out)))
        else:
            tasks.append(asyncio.create_task(sketching(url, images, stop, interval, phase, out)))
    await asyncio.gather(*tasks)
    out["browsers"] = browsers
    return out


# --- the owner's training -----------------------------------------------------------------------

def start_training(store: Path, threads: int | None = None) -> tuple[subprocess.Popen, set[str]]:
    from core.store.runs import list_run_ids
    env = {**os.environ, "MNIST_LAB_CHECKPOINTS": str(store)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "core", "train", "--arch", "lenet", "--epochs", "100",
                             "--device", "cpu", "--name", "owner's lenet", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True), set(list_run_ids(store))


def stop_training(started: tuple[subprocess.Popen, set[str]], store: Path) -> list[float]:
    """SIGTERM the job (it saves and marks the run cancelled); its epochs' seconds."""
    from core.store.runs import list_run_ids, load_run
    job, before = started
    job.send_signal(signal.SIGTERM)
    job.wait(120)
    new = sorted(set(list_run_ids(store)) - before)
    if not new:
        return []
    return [float(s) for s in load_run(new[0], store).history["seconds"].tolist() if s == s]


# --- the whole measurement ----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    parser.add_argument("--sessions", default="1,10,20,30")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--browsing", type=float, default=0.2, help="share of the sessions that browse instead")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--train-threads", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="the owner's job computes on this many threads while the sessions draw (default: all "
                             "cores but one, as a lab with an owner password starts its jobs); alone it uses "
                             "torch's default, one per core")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.sessions.split(",")]
    images = drawings()
    results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "command": "python -m scripts.load_sketch " + " ".join(argv if argv is not None else sys.argv[1:]),
               "levels": []}
    with tempfile.TemporaryDirectory(prefix="load-sketch-") as tmp:
        store = Path(tmp) / "checkpoints"
        shutil.copytree(args.checkpoints, store, ignore=shutil.ignore_patterns(".locks"))
        # as a class meets it: an owner password, so every session here is a visitor
        server = harness.start_server(store, log=Path(tmp) / "server.log", owner_password=secrets.token_urlsafe(16))
        pid = server.process.pid
        try:
            # where a lab starts from: every model loaded (a few drawings), every browsed page seen once
            asyncio.run(level(server.url, pid, images, 1, 3 * args.interval, args.interval, 0))
            asyncio.run(level(server.url, pid, images, 1, len(BROWSE) * args.interval, args.interval, 1.0))
            if not args.no_train:
                job = start_training(store)
                time.sleep(args.seconds)
                alone = stop_training(job, store)
                results["training_alone"] = alone
                print(f"lenet alone: {len(alone)} epochs, median {statistics.median(alone[1:] or alone):.2f} s",
                      file=sys.stderr, flush=True)
            for n in levels:
                time.sleep(5)
                before, cpu = memory(pid), cpu_seconds(pid)
                job = None if args.no_train else start_training(store, args.train_threads)
                found = asyncio.run(level(server.url, pid, images, n, args.seconds, args.interval, args.browsing))
                cpu = cpu_seconds(pid) - cpu
                epochs = [] if job is None else stop_training(job, store)
                time.sleep(10)
                after = memory(pid)
                lat = [1000 * s for s in found["latency"]]
                row = {"sessions": n, "browsing": found["browsers"], "strokes": found["strokes"],
                       "answered": len(lat), "dropped": found["dropped"], "errors": found["errors"],
                       "median_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
                       "page_median_ms": percentile([1000 * s for s in found["page_seconds"]], 50),
                       "memory_before": before, "memory_peak_rss": max(m["rss"] for m in found["memory"]),
                       "memory_peak_pss": max(m["pss"] for m in found["memory"]), "memory_after": after,
                       "training_epochs": epochs, "server_cpu_seconds": cpu,
                       "server_cpu_share": cpu / args.seconds}
                results["levels"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "errors"} | {"errors": len(row["errors"])}),
                      file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def table(results: dict) -> str:
    alone = results.get("training_alone") or []
    base = statistics.median(alone[1:] or alone) if alone else None
    lines = ["| sessions (browsing) | drawings sent / answered / dropped | errors | stroke-to-cards median | p95 "
             "| server RSS before → peak → after (MB) | lenet epoch (alone: "
             + (f"{base:.1f} s)" if base else "not run)") + " | server CPU (cores) |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for row in results["levels"]:
        epochs = row["training_epochs"]
        epoch = statistics.median(epochs[1:] or epochs) if epochs else None
        lines.append(
            f"| {row['sessions']} ({row['browsing']}) | {row['strokes']} / {row['answered']} / {row['dropped']} "
            f"| {len(row['errors'])} | {row['median_ms']:.0f} ms | {row['p95_ms']:.0f} ms "
            f"| {row['memory_before']['rss']:.0f} → {row['memory_peak_rss']:.0f} → {row['memory_after']['rss']:.0f} "
            f"| {'–' if epoch is None else f'{epoch:.1f} s'}"
            + (f" ({epoch / base:.2f}x)" if epoch and base else "") + f" | {row['server_cpu_share']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
