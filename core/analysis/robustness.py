"""A run's robustness report: its accuracy on MNIST's 10,000 test images under each of MNIST-C's
corruptions (core.data.corruptions) and their mean corruption error, and under FGSM and L-inf PGD
at each eps of attacks.EPSILONS (core.analysis.attacks), every figure with its settings, then the
checks Carlini et al. (2019) ask of a robustness figure:

- accuracy does not rise as eps grows;
- an unbounded attack (eps 1: any image) leaves no image standing;
- a stronger attack (twice the steps and restarts) does not lower the eps 0.3 figure much;
- the margin loss (Carlini & Wagner's) agrees with cross-entropy at eps 0.3.

The checks run on the first CHECK_IMAGES test images (said in the report). The report is kept in
the run folder (robustness.json) beside the SHA-256 of the weights it describes: new weights, a new
report. Written atomically, once everything is measured.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from core.analysis import attacks
from core.analysis.runsplit import finished_run
from core.data.corruptions import CORRUPTIONS, corrupt
from core.data.mnist import load_mnist, load_test_pixels
from core.errors import BadInput
from core.fsio import atomic_write_json
from core.models import folded, in_layout, inference_layout, is_convolutional
from core.store.folder import ROBUSTNESS, RunError, now_iso, run_dir
from core.store.kept import (PERCENT, POSITIVE_COUNT, SECONDS, SHA256, TEXT, conforms, json_file, read_current,
                              record, usable)
from core.store.runs import load_model, weights_sha256

FORMAT = 2   # 2: PGD counts an image fooled at the first point that fools it (core.analysis.attacks)
PGD = {"steps": 20, "restarts": 1}          # the curve's PGD at every eps but the last
PGD_FINAL = {"steps": 50, "restarts": 10}   # eps 0.3, the figure the field compares
CHECK_IMAGES = 500
TOLERANCE = 1.0  # points: how far a stronger attack or another loss may move a figure before it is flagged


class RobustnessError(BadInput):
    """A run whose robustness cannot be measured; the message says why."""


def _test_set(data_root) -> tuple[torch.Tensor, torch.Tensor]:
    return load_test_pixels(data_root), load_mnist(data_root).test_labels.long()


@torch.no_grad()
def _accuracy(model, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    forward = attacks.PixelModel(model)
    right = sum(int((forward(pixels[i:i + attacks.BATCH]).argmax(1) == labels[i:i + attacks.BATCH]).sum())
                for i in range(0, len(pixels), attacks.BATCH))
    return 100.0 * right / len(pixels)


def measure(run_id: str, root=None, data_root=None, report=lambda line: None, images: int | None = None) -> dict:
    """Every figure of the report (minutes: PGD-50x10 on 10,000 images for a robust model), on
    the first `images` test images if given (every figure says on how many)."""
    finished_run(run_id, root, RobustnessError, "measure its robustness")
    try:
        model = load_model(run_id, root)
        sha = weights_sha256(run_id, root)
    except RunError as exc:
        raise RobustnessError(str(exc)) from None
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # the attacks need the input's gradient only
    pixels, labels = _test_set(data_root)
    # channels_last for a convolutional model (1.3-1.5x faster for the attacks' passes here), and
    # BatchNorm folded into the convolutions (1.5x more for labnet); the clean figure from the run's own layers
    model, pixels = inference_layout(model, pixels[:images])
    labels = labels[:images]
    convolutional = is_convolutional(model)
    start = time.perf_counter()
    clean = _accuracy(model, pixels, labels)
    model, _ = inference_layout(folded(model), pixels[:1])
    rows = []
    for name in CORRUPTIONS:
        corrupted = in_layout(torch.from_numpy(corrupt(name, pixels[:, 0].numpy(), seed=0)).unsqueeze(1), convolutional)
        rows.append({"corruption": name, "accuracy": _accuracy(model, corrupted, labels), "images": len(labels),
                     "seed": 0})
        report(f"{name}: {rows[-1]['accuracy']:.2f}%")
    figures = [{"attack": "none", "epsilon": 0.0, "accuracy": clean, "images": len(labels)}]
    for eps in attacks.EPSILONS:
        figures.append({"attack": "fgsm", "epsilon": eps, "accuracy": attacks.robust_accuracy(
            model, pixels, labels, eps, "fgsm"), "images": len(labels)})
        settings = PGD_FINAL if eps == attacks.EPSILONS[-1] else PGD
        accuracy = attacks.robust_accuracy(model, pixels, labels, eps, "pgd", **settings)
        figures.append({"attack": "pgd", "epsilon": eps, **settings, "step_size": 2.5 * eps / settings["steps"],
                        "random_start": True, "loss": "cross-entropy", "accuracy": accuracy, "images": len(labels)})
        report(f"eps {eps}: FGSM {figures[-2]['accuracy']:.2f}%, PGD-{settings['steps']}x{settings['restarts']} "
               f"{accuracy:.2f}%")
    return {"format": FORMAT, "run_id": run_id, "weights_sha256": sha, "created": now_iso(), "clean_accuracy": clean,
            "corruptions": rows, "mean_corruption_error": float(np.mean([100 - r["accuracy"] for r in rows])),
            "attacks": figures, "checks": checks(model, pixels, labels, figures),
            "seconds": round(time.perf_counter() - start, 1)}


def checks(model, pixels: torch.Tensor, labels: torch.Tensor, figures: list[dict]) -> dict:
    """Carlini et al.'s sanity checks of the attack figures, on the first CHECK_IMAGES images."""
    x, y = pixels[:CHECK_IMAGES], labels[:CHECK_IMAGES]
    eps = attacks.EPSILONS[-1]
    pgd = [f["accuracy"] for f in figures if f["attack"] == "pgd"]
    final = attacks.robust_accuracy(model, x, y, eps, "pgd", **PGD_FINAL)
    stronger = attacks.robust_accuracy(model, x, y, eps, "pgd", steps=2 * PGD_FINAL["steps"],
                                       restarts=2 * PGD_FINAL["restarts"], seed=1)
    margin = attacks.robust_accuracy(model, x, y, eps, "pgd", loss="margin", **PGD_FINAL)
    unbounded = attacks.robust_accuracy(model, x, y, 1.0, "pgd", steps=20, restarts=1)
    return {
        "images": len(x),
        "falls_with_eps": bool(all(a >= b - 1e-9 for a, b in zip(pgd, pgd[1:]))),
        "unbounded_accuracy": unbounded,
        "eps_0.3": {"pgd_50x10": final, "pgd_100x20": stronger, "pgd_50x10_margin_loss": margin},
        "stronger_attack_moves_it_little": bool(final - stronger <= TOLERANCE),
        "margin_loss_agrees": bool(abs(final - margin) <= TOLERANCE),
        "passed": bool(unbounded == 0.0 and final - stronger <= TOLERANCE and abs(final - margin) <= TOLERANCE
                       and all(a >= b - 1e-9 for a, b in zip(pgd, pgd[1:]))),
    }


def cached(run_id: str, root=None) -> dict | None:
    """The kept report, if it is there, whole and of the run's current weights."""
    return kept(run_id, root)[0]


def kept(run_id: str, root=None) -> tuple[dict | None, str | None]:
    """(the kept report, None) if it is whole and of the current weights; (None, why) if the file
    is damaged; (None, None) if there is none or it is of other weights."""
    return read_current(run_dir(run_id, root) / ROBUSTNESS, run_id, root, json_file, _kept_report, fmt=FORMAT)


EPSILON = {"type": "number", "minimum": 0, "maximum": 1}
SCHEMA = record({
    "format": {"const": FORMAT}, "run_id": TEXT, "weights_sha256": SHA256, "created": TEXT,
    "clean_accuracy": PERCENT,
    "corruptions": {"type": "array", "minItems": 1, "items": record(
        {"corruption": {"enum": list(CORRUPTIONS)}, "accuracy": PERCENT, "images": POSITIVE_COUNT,
         "seed": {"type": "integer"}})},
    "mean_corruption_error": PERCENT,
    "attacks": {"type": "array", "minItems": 1, "items": {
        **record({"attack": {"enum": ["none", "fgsm", "pgd"]}, "epsilon": EPSILON, "steps": POSITIVE_COUNT,
                  "restarts": POSITIVE_COUNT, "accuracy": PERCENT, "images": POSITIVE_COUNT},
                 required=["attack", "epsilon", "accuracy", "images"]),
        "if": {"properties": {"attack": {"const": "pgd"}}}, "then": {"required": ["steps", "restarts"]}}},
    "checks": record({
        "images": POSITIVE_COUNT, "falls_with_eps": {"type": "boolean"}, "unbounded_accuracy": PERCENT,
        "eps_0.3": record({"pgd_50x10": PERCENT, "pgd_100x20": PERCENT, "pgd_50x10_margin_loss": PERCENT}),
        "stronger_attack_moves_it_little": {"type": "boolean"}, "margin_loss_agrees": {"type": "boolean"},
        "passed": {"type": "boolean"}}),
    "seconds": SECONDS})


def _kept_report(found: dict, _) -> tuple[dict | None, str | None]:
    problem = conforms(found, SCHEMA) or _inconsistent(found)
    return (None, f"{ROBUSTNESS} is damaged ({problem})") if problem else (found, None)


def _inconsistent(found: dict) -> str | None:
    """What the report's figures say against each other, which its measurement never does."""
    mean_error = float(np.mean([100 - row["accuracy"] for row in found["corruptions"]]))
    if abs(mean_error - found["mean_corruption_error"]) > 1e-6:
        return (f"its mean corruption error {found['mean_corruption_error']:.4g} is not the mean of its "
                f"corruptions' errors ({mean_error:.4g})")
    clean = [row["accuracy"] for row in found["attacks"] if row["attack"] == "none"]
    if clean and abs(clean[0] - found["clean_accuracy"]) > 1e-6:
        return "its clean accuracy differs between the attacks and the summary"
    return None


def robustness(run_id: str, root=None, data_root=None, refresh: bool = False, report=lambda line: None,
               images: int | None = None) -> dict:
    """The run's report: kept, or measured now and kept."""
    if not refresh and (found := usable(kept(run_id, root), report, f"robustness report of run {run_id!r}",
                                        "measuring it again")) is not None:
        return found
    measured = measure(run_id, root, data_root, report, images)
    try:
        atomic_write_json(run_dir(run_id, root) / ROBUSTNESS, measured)
    except OSError as exc:
        raise RobustnessError(f"cannot keep the robustness report of run {run_id!r}: {exc.strerror or exc}") from None
    return measured
