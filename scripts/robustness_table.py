"""Print the robustness table from the reports kept with the reference runs.

    python -m scripts.robustness_table [--checkpoints ./checkpoints]
    python -m scripts.robustness_table > docs/tables/robustness.md    # the table docs/robustness.md shows

One row per default recipe's reference run (`python -m core robustness RUN`, core.analysis.robustness):
clean accuracy, mean corruption error over MNIST-C's thirteen corruptions written here, FGSM and
PGD accuracy at eps 0.1 and 0.3 (PGD-20x1 at 0.1, PGD-50x10 at 0.3, on all 10,000 test images),
Carlini et al.'s checks on 500 images, and the seconds the report took on the machine that measured it.
"""
from __future__ import annotations

import argparse
import sys

from core.analysis import robustness
from core.models import list_models
from core.store.reference import reference_ids
from core.store.runs import load_run


def rows(checkpoints: str) -> list[tuple[str, dict]]:
    found = {}
    for run_id in reference_ids(checkpoints):
        run = load_run(run_id, checkpoints)
        report = robustness.cached(run_id, checkpoints)
        if not run.config.get("sweep") and report is not None:
            found[run.arch] = report
    return [(arch, found[arch]) for arch in list_models() if arch in found]


def _at(report: dict, attack: str, eps: float) -> float:
    return next(r["accuracy"] for r in report["attacks"] if r["attack"] == attack and abs(r["epsilon"] - eps) < 1e-9)


def table(checkpoints: str) -> str:
    lines = ["| run | clean | mean corruption error | FGSM 0.1 | PGD-20x1 0.1 | FGSM 0.3 | PGD-50x10 0.3 | "
             "checks (500 images) | seconds |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for arch, report in rows(checkpoints):
        c = report["checks"]
        verdict = "passed" if c["passed"] else (
            f"flagged: PGD-100x20 {c['eps_0.3']['pgd_100x20']:.1f}%, margin loss "
            f"{c['eps_0.3']['pgd_50x10_margin_loss']:.1f}% (PGD-50x10 {c['eps_0.3']['pgd_50x10']:.1f}%)")
        lines.append(f"| `{arch}` | {report['clean_accuracy']:.2f}% | {report['mean_corruption_error']:.2f}% | "
                     f"{_at(report, 'fgsm', 0.1):.2f}% | {_at(report, 'pgd', 0.1):.2f}% | {_at(report, 'fgsm', 0.3):.2f}% | "
                     f"{_at(report, 'pgd', 0.3):.2f}% | {verdict} | {report['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    print(table(parser.parse_args(argv).checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
