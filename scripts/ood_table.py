"""Print docs/BENCHMARKS.md's not-a-digit table from the detectors kept with the reference runs.

    python -m scripts.ood_table [--checkpoints ./checkpoints]

Each reference run of a default recipe keeps its fitted detector and the figures `python -m core
ood RUN --evaluate` measured (core.analysis.oodeval): for every detector, AUROC and FPR95TPR on the
held-out half of the lab's not-a-digit set against MNIST's 10,000 test digits, and at the
detector's threshold (99% of the run's validation digits accepted) the share of non-digits, test
digits and pad-drawn test digits flagged. The default detector was chosen on the other half.
"""
from __future__ import annotations

import argparse
import sys

from core.analysis import ood
from core.models import list_models
from core.store.reference import reference_ids
from core.store.runs import load_run


def rows(checkpoints: str) -> list[tuple[str, dict]]:
    """(arch, evaluation) of each recipe's reference run with a measured detector, registry order."""
    found = {}
    for run_id in reference_ids(checkpoints):
        run = load_run(run_id, checkpoints)
        detector, _ = ood.read_kept(run_id, checkpoints)
        if not run.config.get("sweep") and detector is not None and detector.evaluation.get("detectors"):
            found[run.arch] = detector.evaluation
    return [(arch, found[arch]) for arch in list_models() if arch in found]


def table(checkpoints: str) -> str:
    lines = ["| run | detector | AUROC | FPR95TPR | non-digits flagged | test digits flagged | pad-drawn digits flagged |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for arch, evaluation in rows(checkpoints):
        for name, row in evaluation["detectors"].items():
            held = row["held-out"]
            mark = " (default)" if name == ood.DEFAULT else ""
            lines.append(f"| `{arch}` | {name}{mark} | {held['auroc']:.3f} | {held['fpr95tpr']:.3f} | "
                         f"{held['flagged']:.1%} | {row['test_flagged']:.1%} | {row['pad_flagged']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    args = parser.parse_args(argv)
    print(table(args.checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
