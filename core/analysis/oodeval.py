"""How well each not-a-digit detector does for a run, on the lab's own set (core.data.notdigits)
against MNIST's test digits: AUROC and FPR95TPR (pytorch-ood's OODMetrics), and at each
detector's threshold (99% of the run's validation digits accepted) the share of non-digits
flagged, of test digits flagged, and of test digits redrawn as the Sketch pad draws them flagged.

The set is split in two fixed halves: the default detector (core.analysis.ood.DEFAULT) was chosen
on the "selection" half; figures are reported on the "held-out" half. The test digits are read
here to measure, never to choose anything of a run.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from core.analysis import ood
from core.analysis.runsplit import SplitError, finished_run, run_split
from core.data.images import normalize, normalize_uint8
from core.data.mnist import load_mnist
from core.data.notdigits import make_set, pad_redrawn
from core.store.folder import RunError
from core.store.runs import load_model, weights_sha256

PAD_DIGITS = 1000   # test digits redrawn with the pad's pen (about 20 ms each to redraw)
INVERTED = 60       # inverted digits in the set, from the first training images


@lru_cache(maxsize=2)
def _inputs(data_root: str | None, pad_digits: int = PAD_DIGITS):
    mnist = load_mnist(data_root)
    notdigits = make_set(mnist.train_images[:INVERTED].numpy().tobytes())
    redrawn = pad_redrawn(mnist.test_images[:pad_digits].numpy() / 255.0)
    return mnist, notdigits, redrawn


def auroc_fpr(out_scores: np.ndarray, in_scores: np.ndarray) -> tuple[float, float]:
    """(AUROC, FPR95TPR) of telling non-digits (positive) from digits, by pytorch-ood's metrics."""
    from pytorch_ood.metrics import OODMetrics  # heavy: see core.analysis.ood
    metrics = OODMetrics()
    metrics.update(torch.as_tensor(np.r_[out_scores, in_scores]),
                   torch.as_tensor(np.r_[-np.ones(len(out_scores)), np.zeros(len(in_scores))]).long())
    found = metrics.compute()
    return float(found["AUROC"]), float(found["FPR95TPR"])


def evaluate(run_id: str, root=None, data_root=None, report=lambda line: None, pad_digits: int = PAD_DIGITS) -> dict:
    """Every detector's figures for the run: {detector: {part: {...}}, "test_flagged", ...}."""
    run = finished_run(run_id, root, ood.OODError, "its detectors are measured")
    try:
        split, fields = run_split(run, root, data_root)
        model = load_model(run_id, root)
    except (SplitError, RunError) as exc:
        raise ood.OODError(str(exc)) from None
    mnist, notdigits, redrawn = _inputs(None if data_root is None else str(data_root), pad_digits)
    report(f"outputs of {len(notdigits)} non-digits, {len(mnist.test_images):,} test digits, {len(redrawn)} "
           "redrawn digits, and the run's own training sample and validation digits…")
    sample = ood.training_sample(split, fields)
    train = ood.outputs(model, split.x_train[sample])
    val = ood.outputs(model, split.x_val)
    test = ood.outputs(model, normalize_uint8(mnist.test_images))
    pad = ood.outputs(model, normalize(redrawn))
    exposure = ood.exposure_outputs(model, split.x_train[sample], data_root)
    parts = {part: notdigits.part(held_out=part == "held-out") for part in ("selection", "held-out")}
    outs = {part: ood.outputs(model, normalize(subset.images)) for part, subset in parts.items()}
    figures: dict = {}
    for name in ood.DETECTORS:
        state = ood.fit_state(name, train, split.y_train[sample], seed=int(fields["seed"]), val=val, exposure=exposure)
        threshold = float(np.quantile(ood.score(name, state, val), ood.ACCEPT, method="higher"))
        test_scores = ood.score(name, state, test)
        row = {"threshold": threshold, "test_flagged": float((test_scores > threshold).mean()),
               "pad_flagged": float((ood.score(name, state, pad) > threshold).mean())}
        for part, out in outs.items():
            scores = ood.score(name, state, out)
            auroc, fpr = auroc_fpr(scores, test_scores)
            kinds = parts[part].kinds
            row[part] = {"auroc": auroc, "fpr95tpr": fpr, "flagged": float((scores > threshold).mean()),
                         "by_kind": {str(k): float((scores[kinds == k] > threshold).mean()) for k in np.unique(kinds)}}
        figures[name] = row
    return {"run_id": run_id, "weights_sha256": weights_sha256(run_id, root), "non_digits": len(notdigits),
            "test_digits": len(mnist.test_images), "pad_digits": len(redrawn), "detectors": figures}
