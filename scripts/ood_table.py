"""Print the not-a-digit tables from the detectors kept with the reference runs.

    python -m scripts.ood_table [--checkpoints ./checkpoints] [--default | --choice]
    python -m scripts.ood_table > docs/tables/not-a-digit-detectors.md       # every detector
    python -m scripts.ood_table --default > docs/tables/not-a-digit.md       # the default one

Both files are included in docs/not-a-digit.md, and tests/test_reference.py checks they are what
this prints. --default prints the short table (the default detector of each convolutional recipe);
--choice, each detector's mean share of the selection half flagged over those recipes (the figures
the default was chosen on).

Each reference run of a default recipe keeps its fitted detector and the figures `python -m core
ood RUN --evaluate` measured (core.notadigit.evaluation): for every detector, AUROC and FPR95TPR on the
held-out half of the lab's not-a-digit set against MNIST's 10,000 test digits, and at the
detector's threshold (99% of the run's validation digits accepted) the share of non-digits, test
digits and pad-drawn test digits flagged. The default detector was chosen on the other half.
"""
from __future__ import annotations

import argparse
import sys

from core.models import create_model, is_convolutional, list_models
from core.notadigit.detector import DEFAULT, read_kept
from core.store.reference import reference_ids
from core.store.runs import load_run


def rows(checkpoints: str) -> list[tuple[str, dict]]:
    """(arch, evaluation) of each recipe's reference run with a measured detector, registry order."""
    found = {}
    for run_id in reference_ids(checkpoints):
        run = load_run(run_id, checkpoints)
        detector, _ = read_kept(run_id, checkpoints)
        if not run.config.get("sweep") and detector is not None and detector.evaluation.get("detectors"):
            found[run.arch] = detector.evaluation
    return [(arch, found[arch]) for arch in list_models() if arch in found]


def table(checkpoints: str) -> str:
    lines = ["| run | detector | AUROC | FPR95TPR | non-digits flagged | test digits flagged | pad-drawn digits flagged |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for arch, evaluation in rows(checkpoints):
        for name, row in evaluation["detectors"].items():
            held = row["held-out"]
            mark = " (default)" if name == DEFAULT else ""
            lines.append(f"| `{arch}` | {name}{mark} | {held['auroc']:.3f} | {held['fpr95tpr']:.3f} | "
                         f"{held['flagged']:.1%} | {row['test_flagged']:.1%} | {row['pad_flagged']:.1%} |")
    return "\n".join(lines)


def convolutional_rows(checkpoints: str) -> list[tuple[str, dict]]:
    return [(arch, evaluation) for arch, evaluation in rows(checkpoints) if is_convolutional(create_model(arch))]


def default_table(checkpoints: str) -> str:
    lines = ["| run | AUROC | non-digits flagged | test digits flagged | pad-drawn digits flagged |",
             "|---|---:|---:|---:|---:|"]
    for arch, evaluation in convolutional_rows(checkpoints):
        row = evaluation["detectors"][DEFAULT]
        held = row["held-out"]
        lines.append(f"| `{arch}` | {held['auroc']:.3f} | {held['flagged']:.1%} | {row['test_flagged']:.1%} | "
                     f"{row['pad_flagged']:.1%} |")
    return "\n".join(lines)


def choice(checkpoints: str) -> dict[str, float]:
    """Detector -> its mean share of the selection half flagged over the convolutional recipes,
    highest first."""
    found = convolutional_rows(checkpoints)
    means = {name: sum(e["detectors"][name]["selection"]["flagged"] for _, e in found) / len(found)
             for name in found[0][1]["detectors"]} if found else {}
    return dict(sorted(means.items(), key=lambda item: -item[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--default", action="store_true", help="the short table: the default detector of each "
                                                             "convolutional recipe")
    what.add_argument("--choice", action="store_true", help="each detector's mean share of the selection half "
                                                            "flagged over the convolutional recipes")
    args = parser.parse_args(argv)
    if args.choice:
        print(", ".join(f"`{name}` {share:.1%}" for name, share in choice(args.checkpoints).items()))
    else:
        print(default_table(args.checkpoints) if args.default else table(args.checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
