"""Copy finished runs into the repository's checkpoints/ as reference runs, compact and verified.

    python -m scripts.ship_reference --from DIR [--from DIR2 ...] [--to checkpoints] [--commit SHA]

Every finished run in each --from folder is copied to --to, made a reference run
(core.store.reference.ship: no optimizer state or log, float16 probabilities when no predicted digit
changes; its units' top test images; a recipe's own run gets its UMAP map), then verified (its weights reproduce its recorded predictions and test accuracy).
The .gitignore block that lets git see exactly these run folders is rewritten, and the sizes
are printed. A run that fails verification is removed again and the script exits with 1.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from core.analysis.calibration import calibrate
from core.analysis.embedding import embedding
from core.analysis.inside import top_images
from core.notadigit import detector, evaluation
from core.store import reference
from core.store.runs import list_runs, load_run

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "# reference runs (scripts/ship_reference.py): tracked", "# end of reference runs"


def ship(run_id: str, dest: Path, commit: str | None = None, map_method: str = "umap",
         pad_digits: int = evaluation.PAD_DIGITS) -> dict:
    """Make the run a reference run (core.store.reference.ship), fit its calibration on its
    validation split and its not-a-digit detector (measured on the lab's set), find the test images that
    excite each of its units most (Inside the network), and, for a recipe's own run (not a sweep's), compute its map (UMAP, the
    Embedding map page's default, so the page opens full; the tests ask for PCA, the same path
    in a fraction of the time, and fewer pad-drawn digits)."""
    marker = reference.ship(run_id, dest, commit=commit)
    calibrate(run_id, dest)
    fitted = detector.fit(run_id, dest)  # the not-a-digit check, and how well it does
    fitted.evaluation = evaluation.evaluate(run_id, dest, pad_digits=pad_digits, fitted=fitted)  # its own fit reused
    detector.keep(fitted, dest)
    top_images(run_id, dest)  # Inside the network: the test images that excite each unit most
    if not load_run(run_id, dest).config.get("sweep"):
        embedding(run_id, map_method, dest)
    return marker


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_gitignore(dest: Path) -> None:
    """Un-ignore exactly the reference run folders in `dest` (the rest of checkpoints/ stays
    out of git: a user's own runs)."""
    gitignore = REPO / ".gitignore"
    lines = gitignore.read_text().splitlines()
    if BEGIN in lines:
        del lines[lines.index(BEGIN):lines.index(END) + 1]
    rel = dest.resolve().relative_to(REPO)
    lines += [BEGIN, *(f"!/{rel}/{i}/" for i in sorted(reference.reference_ids(dest))), END]
    gitignore.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="sources", action="append", required=True, help="folder of finished runs")
    parser.add_argument("--to", default=str(REPO / "checkpoints"), help="(default: the repository's checkpoints/)")
    parser.add_argument("--commit", default=None, help="the commit the runs were trained at")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_LAB_DATA or ./data)")
    args = parser.parse_args(argv)
    dest = Path(args.to)
    dest.mkdir(parents=True, exist_ok=True)
    failed = 0
    for source in args.sources:
        for run in list_runs(source):
            if run.status != "finished":
                print(f"skipped {run.run_id}: {run.status}")
                continue
            target = dest / run.run_id
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(run.path, target)
            ship(run.run_id, dest, commit=args.commit)
            verdict = reference.verify(run.run_id, dest, args.data)
            if not verdict.ok:
                shutil.rmtree(target)
                failed += 1
                print(f"FAILED {run.run_id}: {verdict}")
                continue
            print(f"{run.run_id}: {verdict.accuracy:.2f}% test, verified, {folder_size(target) / 1e6:.2f} MB")
    write_gitignore(dest)
    total = sum(folder_size(dest / i) for i in reference.reference_ids(dest))
    print(f"{len(reference.reference_ids(dest))} reference runs, {total / 1e6:.2f} MB in {dest}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
