"""How well each not-a-digit detector does for a run, on the lab's own set (core.notadigit.nondigits)
against MNIST's test digits: AUROC and FPR95TPR (pytorch-ood's OODMetrics), and at each
detector's threshold (99% of the run's validation digits accepted) the share of non-digits
flagged, of test digits flagged, and of test digits redrawn as the Sketch pad draws them flagged.

The set is split in two fixed halves: the default detector (core.notadigit.detector.DEFAULT) was chosen
on the "selection" half; figures are reported on the "held-out" half. The test digits are read
here to measure, never to choose anything of a run.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from core.analysis.runsplit import SplitError, finished_run, run_split
from core.data.images import normalize, normalize_uint8
from core.data.mnist import load_mnist, load_test_pixels
from core.notadigit.detector import (ACCEPT, DETECTORS, Detector, OODError, exposure_outputs, fit_state, outputs,
                                     score, training_sample)
from core.notadigit.nondigits import make_set, pad_redrawn
from core.store.folder import RunError
from core.store.runs import load_model, weights_sha256

PAD_DIGITS = 1000   # test digits redrawn with the pad's pen (about 20 ms each to redraw)
INVERTED = 60       # inverted digits in the set, from the first training images


@lru_cache(maxsize=2)
def _inputs(data_root: str | None, pad_digits: int = PAD_DIGITS):
    mnist = load_mnist(data_root)
    nondigits = make_set(mnist.train_images[:INVERTED].numpy().tobytes())
    redrawn = pad_redrawn(load_test_pixels(data_root)[:pad_digits, 0].numpy())
    return mnist, nondigits, redrawn


def auroc_fpr(out_scores: np.ndarray, in_scores: np.ndarray) -> tuple[float, float]:
    """(AUROC, FPR95TPR) of telling non-digits (positive) from digits, by pytorch-ood's metrics."""
    from pytorch_ood.metrics import OODMetrics  # heavy: see core.notadigit.detector
    metrics = OODMetrics()
    metrics.update(torch.as_tensor(np.r_[out_scores, in_scores]),
                   torch.as_tensor(np.r_[-np.ones(len(out_scores)), np.zeros(len(in_scores))]).long())
    found = metrics.compute()
    return float(found["AUROC"]), float(found["FPR95TPR"])


def evaluate(run_id: str, root=None, data_root=None, report=lambda line: None, pad_digits: int = PAD_DIGITS,
             fitted: Detector | None = None) -> dict:
    """Every detector's figures for the run: {detector: {part: {...}}, "test_flagged", ...}.
    `fitted`: the run's detector just fitted (core.notadigit.detector.fit), which measuring would fit
    again on the same outputs to the same numbers: its state is used for its own row (and the
    exposure images' outputs, which only "exposure" reads, are not computed again for it)."""
    run = finished_run(run_id, root, OODError, "its detectors are measured")
    try:
        split, fields = run_split(run, root, data_root)
        model = load_model(run_id, root)
        sha = weights_sha256(run_id, root)
    except (SplitError, RunError) as exc:
        raise OODError(str(exc)) from None
    if fitted is not None and (fitted.weights_sha256 != sha
                               or any(fitted.fitted_on.get(key) != value for key, value in fields.items())):
        fitted = None  # of other weights or another split: fitted again here
    mnist, nondigits, redrawn = _inputs(None if data_root is None else str(data_root), pad_digits)
    report(f"outputs of {len(nondigits)} non-digits, {len(mnist.test_images):,} test digits, {len(redrawn)} "
           "redrawn digits, and the run's own training sample and validation digits…")
    sample = training_sample(split, fields)
    train = outputs(model, split.x_train[sample])
    val = outputs(model, split.x_val)
    test = outputs(model, normalize_uint8(mnist.test_images))
    pad = outputs(model, normalize(redrawn))
    reused = {fitted.name: fitted.state} if fitted is not None else {}
    exposure = None if "exposure" in reused else exposure_outputs(model, split.x_train[sample], data_root)
    parts = {part: nondigits.part(held_out=part == "held-out") for part in ("selection", "held-out")}
    outs = {part: outputs(model, normalize(subset.images)) for part, subset in parts.items()}
    figures: dict = {}
    for name in DETECTORS:
        state = reused.get(name)
        if state is None:
            state = fit_state(name, train, split.y_train[sample], seed=int(fields["seed"]), val=val, exposure=exposure)
        threshold = float(np.quantile(score(name, state, val), ACCEPT, method="higher"))
        test_scores = score(name, state, test)
        row = {"threshold": threshold, "test_flagged": float((test_scores > threshold).mean()),
               "pad_flagged": float((score(name, state, pad) > threshold).mean())}
        for part, out in outs.items():
            scores = score(name, state, out)
            auroc, fpr = auroc_fpr(scores, test_scores)
            kinds = parts[part].kinds
            row[part] = {"auroc": auroc, "fpr95tpr": fpr, "flagged": float((scores > threshold).mean()),
                         "by_kind": {str(k): float((scores[kinds == k] > threshold).mean()) for k in np.unique(kinds)}}
        figures[name] = row
    return {"run_id": run_id, "weights_sha256": sha, "non_digits": len(nondigits),
            "test_digits": len(mnist.test_images), "pad_digits": len(redrawn), "detectors": figures}
