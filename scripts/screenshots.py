"""Take the docs' screenshots (docs/screenshot-*.png): every dashboard page in a real Chromium, 1400 px wide.

    python -m scripts.screenshots [--checkpoints ./checkpoints] [--out docs] [--page sketch ...] [--phone]

Starts `streamlit run dashboard/app.py` on a free local port against the given runs folder
(its real runs are what the pictures show), draws a digit on the Sketch page first, and
writes OUT/screenshot-<page>.png; with --phone, every page as a phone shows it (390x844,
touch, the digit drawn with a finger) into OUT/screenshot-phone-<page>.png. Needs Debian's Chromium at /usr/bin/chromium (`make browser`).
The server and browser start exactly as in the browser tests (scripts/harness.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts import harness

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    parser.add_argument("--data", default=None, help="MNIST folder (default: the repository's data/)")
    parser.add_argument("--out", default=str(REPO / "docs"), help="where the PNGs go (default: docs/)")
    parser.add_argument("--page", action="append", choices=["home", *harness.PAGES],
                        help="only this page (repeatable; default: all of them; home: the first page, at /)")
    parser.add_argument("--digit", default="7", choices=sorted(harness.DIGIT_STROKES) + sorted(harness.OTHER_STROKES),
                        help="digit drawn on the Sketch page (default: 7); a drawing that is not a digit (H, hash, "
                             "star) is saved as screenshot-sketch-<drawing>.png")
    parser.add_argument("--phone", action="store_true",
                        help="as a phone shows them: 390x844, touch (screenshot-phone-<page>.png)")
    args = parser.parse_args(argv)

    checkpoints = Path(args.checkpoints).resolve()
    if not checkpoints.is_dir():
        print(f"error: no runs folder at {checkpoints}", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    try:
        server = harness.start_server(checkpoints, data=args.data)
    except harness.HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = False
    try:
        with sync_playwright() as playwright:
            browser = harness.launch_browser(playwright)
            try:
                shots = harness.take_screenshots(browser, server.url, args.out,
                                                 pages=[p.replace("home", "") for p in args.page or ("home", *harness.PAGES)],
                                                 sketch_digit=args.digit,
                                                 sketch_name="sketch" if args.digit in harness.DIGIT_STROKES
                                                 else f"sketch-{args.digit}", phone=args.phone)
            finally:
                browser.close()
    except Exception as exc:  # keep the server's log for the post-mortem
        print(f"error: {exc}\nstreamlit's output: {server.log}", file=sys.stderr)
        return 1
    finally:
        server.stop()  # also on Ctrl-C
    server.log.unlink(missing_ok=True)
    for png, problems in shots:
        print(f"{png}  ({png.stat().st_size // 1024} KiB)")
        for problem in problems:
            failed = True
            print(f"  PROBLEM: {problem}", file=sys.stderr)
    print(f"{len(shots)} screenshots in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
