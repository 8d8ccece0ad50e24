"""Ensembles without training: finished runs combined by the mean of their probabilities.

`create_ensemble` saves the combination as an ordinary run folder (core.store.runs):

  config.json   {"kind": "ensemble", "arch": "ensemble", "members": [run ids],
                 "member_archs": [each member's arch, or a list for a member that is itself
                 an ensemble], "name": ...}
  model.safetensors        the members' weights, as one `core.layers.Ensemble` (keys
                           members.<i>.<member key>): the ensemble keeps working if a member
                           is deleted, and `core.store.runs.load_model` rebuilds it from member_archs
  predictions.safetensors  labels, predicted (argmax), probabilities = the members' mean
  metrics.json             test accuracy/loss, confusion matrix, per-class figures, members
  status.json              finished

An ensemble has no history and no validation figure: nothing was trained. Its model returns
the log of the members' mean probability as logits (core.layers.combine_members), so every
softmax-based reader (Sketch, `python -m core predict`) gets the mean probability.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.config import name_problem
from core.errors import BadInput
from core.layers import Ensemble
from core.analysis.predictions import same_images
from core.metrics import confusion_matrix, mean_probabilities, per_class
from core.rebuild import RebuildError, check_member_archs
from core.store.folder import CONFIG, RunError, now_iso
from core.store.runs import Run, given_twice, load_model, load_predictions, load_run
from core.store.writer import staged_run

KIND = "ensemble"
MIN_MEMBERS = 2


class EnsembleError(RunError, BadInput):
    """The runs asked for cannot be combined; the message says which and why (CLI exit 2)."""


def is_ensemble(config: dict) -> bool:
    return config.get("kind") == KIND


@dataclass(frozen=True)
class Combined:
    """The members and their combination, before anything is saved."""
    members: list[Run]
    member_predictions: list[dict[str, np.ndarray]]
    labels: np.ndarray          # (N,) int64
    probabilities: np.ndarray   # (N, 10) float64: the members' mean
    predicted: np.ndarray       # (N,) argmax

    @property
    def accuracy(self) -> float:
        """Test accuracy in %, from the integer count of matches."""
        return int((self.predicted == self.labels).sum()) * 100 / len(self.labels)

    def member_accuracies(self) -> dict[str, float]:
        return {run.run_id: int((p["predicted"] == p["labels"]).sum()) * 100 / len(p["labels"])
                for run, p in zip(self.members, self.member_predictions)}

    def predictions(self) -> dict[str, np.ndarray]:
        """In the form of core.store.runs.load_predictions."""
        return {"labels": self.labels, "predicted": self.predicted,
                "probabilities": self.probabilities.astype(np.float32)}


def _label(run: Run) -> str:
    return f"{run.run_id} ({run.name})" if run.name != run.run_id else run.run_id


def combine(member_ids, root=None) -> Combined:
    """Read and check the members' saved test predictions and average their probabilities.
    Raises EnsembleError naming the run when one cannot take part."""
    member_ids = list(member_ids)
    if len(member_ids) < MIN_MEMBERS:
        raise EnsembleError(f"an ensemble needs at least {MIN_MEMBERS} runs, got {len(member_ids)}")
    repeated = sorted({m for m in member_ids if member_ids.count(m) > 1})
    if repeated:
        raise EnsembleError(f"run {', '.join(map(repr, repeated))} is listed more than once")
    if twice := given_twice(member_ids, root):
        raise EnsembleError(f"runs {twice[0]!r} and {twice[1]!r} are one run (a link in the store leads to its "
                            "folder): each run can take part once")
    runs, preds = [], []
    for run_id in member_ids:
        try:
            run = load_run(run_id, root)
        except RunError as exc:
            raise EnsembleError(str(exc)) from None
        if run.status != "finished":
            raise EnsembleError(f"run {_label(run)} is {run.status}, not finished: only finished runs "
                                "can be combined")
        if not run.has_predictions:
            raise EnsembleError(f"run {_label(run)} has no saved test predictions: it cannot take part "
                                "in an ensemble")
        try:
            p = load_predictions(run_id, root)  # checked there: shapes, classes, probabilities
        except RunError as exc:
            raise EnsembleError(str(exc)) from None
        runs.append(run)
        preds.append(p)
    first = preds[0]["labels"]
    differ = [_label(r) for r, p in zip(runs[1:], preds[1:]) if not same_images(p, preds[0])]
    if differ:
        raise EnsembleError(f"the runs were tested on different images: the test labels of "
                            f"{', '.join(differ)} differ from those of {_label(runs[0])}; an ensemble "
                            "averages predictions image by image, so its members must share one test set")
    probabilities = mean_probabilities(preds)
    return Combined(runs, preds, first.astype(np.int64), probabilities, probabilities.argmax(1))


def _member_archs(run: Run) -> str | list:
    """What load_model needs to rebuild a member: its arch, or a nested ensemble's list."""
    if is_ensemble(run.config):
        archs = run.config.get("member_archs")
        if not isinstance(archs, list):
            raise EnsembleError(f"run {_label(run)} is an ensemble without member_archs in {CONFIG}")
        return archs
    return run.arch


def _metrics(combined: Combined) -> dict:
    labels, probs, predicted = combined.labels, combined.probabilities, combined.predicted
    cm = confusion_matrix(labels, predicted)
    picked = probs[np.arange(len(labels)), labels]
    test_loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())  # cross-entropy of the mean probability
    parameters = [r.metrics.get("parameters") for r in combined.members]
    metrics = {
        "test_accuracy": combined.accuracy, "test_loss": test_loss,
        **per_class(cm), "confusion_matrix": cm.tolist(),
        "kind": KIND, "members": [r.run_id for r in combined.members],
        "member_test_accuracy": combined.member_accuracies(),
        "torch": torch.__version__, "finished": now_iso()}
    if all(isinstance(p, int) and not isinstance(p, bool) for p in parameters):
        metrics["parameters"] = sum(parameters)
    return metrics


def default_name(members: list[Run]) -> str:
    name = "ensemble: " + " + ".join(r.name for r in members)
    return name if len(name) <= 80 else f"ensemble of {len(members)} runs"


def create_ensemble(member_ids, name: str | None = None, root=None) -> str:
    """Combine finished runs into a new run (kind 'ensemble') and return its id. Everything is
    computed and every member's model loaded before the folder exists; a write that fails
    after that removes the folder, so no half-written ensemble is left behind."""
    combined = combine(member_ids, root)
    if name is not None:
        name = name.strip()
        if name_problem(name):
            raise EnsembleError(name_problem(name))
    name = name or default_name(combined.members)
    models = []
    for run in combined.members:
        try:
            models.append(load_model(run.run_id, root))
        except RunError as exc:
            raise EnsembleError(f"the model of run {_label(run)} does not load, so the ensemble could not "
                                f"be used on new images: {exc}") from None
    state = {k: v.contiguous() for k, v in Ensemble(models).state_dict().items()}
    config = {"kind": KIND, "arch": KIND, "name": name, "members": [r.run_id for r in combined.members],
              "member_archs": [_member_archs(r) for r in combined.members]}
    try:
        check_member_archs(config["member_archs"])
    except RebuildError as exc:
        raise EnsembleError(str(exc)) from None
    metrics = _metrics(combined)
    with staged_run(config, root) as writer:  # a kill leaves nothing or the whole run
        writer.save_weights(state, KIND)
        writer.save_predictions(torch.from_numpy(combined.labels),
                                torch.from_numpy(combined.probabilities.astype(np.float32)))
        writer.write_metrics(metrics)
        writer.finish(f"ensemble of {len(combined.members)} runs")
    return writer.run_id
