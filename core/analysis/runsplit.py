"""A finished run's own data, rebuilt from its config: the training images it learnt from and the
validation images it held out (core.data.source, the same seeded split, bit for bit). An
ensemble's are its members', which must have held out the same images. Calibration fits on the
validation split; the not-a-digit detectors fit on the training split and set their thresholds on
the validation split."""
from __future__ import annotations

import torch

from core.config import TrainConfig
from core.data.mnist import Split
from core.data.source import load_split
from core.errors import BadInput, LabError
from core.rebuild import MAX_NESTING
from core.store.folder import ACTIVE, CONFIG, RunError
from core.store.runs import Run, load_run

FIELDS = ("csv", "val_size", "seed")  # what decides the validation images (train_limit only shortens training)


def finished_run(run_id: str, root, error: type[BadInput], waits: str) -> Run:
    """The run, or `error` saying why not: it cannot be read, or it is still training (`waits`
    says what waits for its end, e.g. "calibrate it")."""
    try:
        run = load_run(run_id, root)
    except RunError as exc:
        raise error(str(exc)) from None
    if run.status in ACTIVE:
        raise error(f"run {run.name!r} is still {run.status}: {waits} once it has finished")
    return run


class SplitError(BadInput):
    """A run whose split cannot be rebuilt; the message says why."""


def split_fields(run: Run, root, _within: tuple[str, ...] = ()) -> dict:
    """The fields that decide the run's validation images; an ensemble's are its members',
    which must agree. A member list that leads back to an ensemble on the way (a hand-edited
    config.json) or nests deeper than core.rebuild.MAX_NESTING is a SplitError naming the runs."""
    if run.config.get("kind") != "ensemble":
        return {name: run.config.get(name) for name in FIELDS}
    within = (*_within, run.run_id)
    if len(within) > MAX_NESTING:
        raise SplitError(f"ensemble {within[0]!r} nests ensembles more than {MAX_NESTING} deep "
                         f"({' -> '.join(within)}): its validation split cannot be rebuilt")
    found = []
    for member in run.config.get("members") or []:
        if member in within:
            raise SplitError(_cycle(within, member))
        try:
            found.append(split_fields(load_run(member, root), root, within))
        except RunError:
            raise SplitError(f"the validation split of ensemble {run.name!r} cannot be rebuilt: its member "
                             f"run {member!r} is gone") from None
    if not found:
        raise SplitError(f"ensemble {run.name!r} lists no member runs: its validation split cannot be rebuilt")
    if any(fields != found[0] for fields in found[1:]):
        raise SplitError(f"the members of ensemble {run.name!r} held out different validation images "
                         "(their seeds, sizes or data differ): no image is unseen by all of them")
    return found[0]


def _cycle(within: tuple[str, ...], member: str) -> str:
    """The message for an ensemble whose member list leads back to `member`, one of `within`."""
    path = " -> ".join((*within, member))
    if len(within) == 1:
        return (f"ensemble {member!r} lists itself among its members ({CONFIG} was edited): its validation "
                "split cannot be rebuilt")
    return (f"the members of ensemble {within[0]!r} lead round in a loop ({path}; a {CONFIG} was edited): "
            "its validation split cannot be rebuilt")


class SplitFields:
    """The split fields as core.data.source.load_split reads them (its defaults where a config
    leaves one out)."""

    def __init__(self, values: dict):
        self.csv = values.get("csv") or None
        self.val_size = int(values.get("val_size") or TrainConfig.val_size)
        self.seed = int(values.get("seed") or 0)
        self.train_limit = None  # the validation images do not depend on it


def run_split(run: Run, root, data_root=None) -> tuple[Split, dict]:
    """(the run's split on the CPU, the fields it was rebuilt from), or a SplitError."""
    fields = SplitFields(split_fields(run, root))
    try:
        split, _ = load_split(fields, torch.device("cpu"), data_root)
    except LabError as exc:
        raise SplitError(f"the validation split of run {run.name!r} cannot be rebuilt: {exc}") from None
    return split, {"val_size": fields.val_size, "seed": fields.seed, "source": fields.csv or "MNIST train"}
