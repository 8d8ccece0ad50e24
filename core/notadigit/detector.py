"""Not a digit: each run's out-of-distribution detector, from pytorch-ood.

A detector gives every image an outlier score (pytorch-ood's convention: higher means more likely
not a digit). Those that need fitting are fitted on the run's own training images and features
(a seeded sample of FIT_IMAGES of its training split; every architecture has `embed`), never on
the test set, and the threshold is the ACCEPT quantile of the scores of the run's validation
digits: 99% of the digits it held out are accepted, by construction, and an image scoring above
it is "not a digit to this model".

Detectors (pytorch_ood.detector): maximum softmax probability (Hendrycks & Gimpel 2017), energy
(Liu et al. 2020), maximum logit, Mahalanobis distance to the class means of the features (Lee et
al. 2018), and the distance to the k-th nearest training feature (Sun et al. 2022); "layers", the
Mahalanobis distance at several depths; and "exposure" (outlier exposure, Hendrycks, Mazeika &
Dietterich 2019): small MLPs (scikit-learn, core.notadigit.head) on what the model computes at
every depth, taught to tell the run's training digits, some redrawn as the pad draws them, from
the lab's exposure images (core.notadigit.exposure: other fonts, generators and seeds than the set that
measures). DEFAULT was chosen on one half of the lab's own not-a-digit set (core.notadigit.nondigits)
and is reported on the other half (docs/not-a-digit.md).

The fitted detector is kept in the run folder (ood.safetensors) beside the SHA-256 of the weights
it was fitted for: new weights, a new fit; a damaged file is fitted again. Written atomically.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.analysis.runsplit import SplitError, finished_run, run_split
from core.data.images import normalize, unstandardise
from core.errors import BadInput
from core.fsio import atomic_write_bytes
from core.layers import logits_from_features
from core.models import inference_layout
from core.notadigit.exposure import from_digits, kept
from core.notadigit.head import depths as head_depths
from core.notadigit.head import fit_head, head_scores
from core.notadigit.head import members as head_members
from core.notadigit.nondigits import pad_redrawn
from core.rebuild import RebuildError, build_model
from core.store.folder import OOD, RunError, now_iso, run_dir
from core.store.kept import (COUNT, FRACTION, POSITIVE_COUNT, SECONDS, TEXT, conforms, read_current,
                              record, safetensors_file, usable)
from core.store.runs import load_model, load_run, weights_sha256
from core.store.writer import tensors_bytes

DETECTORS = {"msp": "maximum softmax probability", "energy": "energy", "maxlogit": "maximum logit",
             "mahalanobis": "Mahalanobis distance", "knn": "k-th nearest training feature",
             "layers": "Mahalanobis distance at several depths",
             "exposure": "a classifier of the features taught what is not a digit (outlier exposure)"}
DEFAULT = "exposure"
LAYERS = 3           # "layers": the last convolutions whose channel means are scored, besides the features
GRID = 4             # "exposure": each convolution's map averaged over a GRID x GRID grid at most...
GRID_VALUES = 1024   # ...and over a coarser one where all the convolutions would give more numbers than this
ACCEPT = 0.99        # share of the run's validation digits the threshold accepts
FIT_IMAGES = 10_000  # training images the fitted detectors learn from (a seeded sample)
KNN_BANK = 2_000     # of them, kept as the nearest-neighbour bank (unit-length features)
KNN_K = 10
PAD_INLIERS = 2000   # of them, redrawn as the pad draws: digits too, to the exposure detector
INVERTED = 300       # of them, inverted (and as many faint specks made): not digits, to it
BATCH = 500
FORMAT = 1


class OODError(BadInput):
    """A run whose detector cannot be fitted or used; the message says why."""


# --- the model's outputs ------------------------------------------------------------------------

@dataclass
class Outputs:
    """What the detectors read of a batch of images: logits (N, 10), the penultimate features
    (N, D), the channel means of the last LAYERS convolutions (each (N, C)), and every
    convolution's output averaged over a coarse grid of its map (each (N, C * g * g), `grid`);
    none of either for an MLP."""
    logits: torch.Tensor
    feats: torch.Tensor
    layers: list[torch.Tensor]
    grids: list[torch.Tensor] = field(default_factory=list)

    def __getitem__(self, index) -> "Outputs":
        return Outputs(self.logits[index], self.feats[index], [layer[index] for layer in self.layers],
                       [grid[index] for grid in self.grids])

    def vector(self) -> torch.Tensor:
        """All of it side by side (N, D'): what the exposure detector reads."""
        return torch.cat([*self.grids, self.feats, self.logits], 1)


def convolutions(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def grid(channels: int, depths: int) -> int:
    """The side of the grid a convolution's map is averaged over: GRID, or coarser where channels
    and convolutions are many, each of the `depths` giving at most GRID_VALUES / depths numbers
    (or its channel means). It keeps the exposure detector small enough to ship."""
    return max(1, min(GRID, int((GRID_VALUES / depths / channels) ** 0.5)))


def _pooled(out: torch.Tensor, depths: int) -> torch.Tensor:
    side = min(grid(out.shape[1], depths), out.shape[-1], out.shape[-2])
    return torch.nn.functional.adaptive_avg_pool2d(out.float(), side).flatten(1)


@torch.inference_mode()
def outputs(model: torch.nn.Module, x: torch.Tensor, many: bool = True) -> Outputs:
    """The detectors' inputs for normalised images (N, 1, 28, 28), in batches; `many`: in the
    faster memory layout for a pass over many images (core.models.inference_layout: the model is
    converted in place), not for one drawing.

    The convolutions are read through forward hooks, which fire on every pass through the model,
    whichever thread makes it: on a server that loads each model once for every session, another
    visitor's stroke passes through the same model at the same time. Each hook keeps only its own
    thread's activations."""
    if any(m.training for m in model.modules()):  # eval() walks and sets every module: not per stroke
        model.eval()
    if many:
        model, x = inference_layout(model, x)
    every = convolutions(model)
    deep = len(every) - min(LAYERS, len(every))
    seen: list[list[torch.Tensor]] = [[] for _ in every]
    pooled: list[list[torch.Tensor]] = [[] for _ in every]

    mine = threading.get_ident()

    def record(k: int):
        def hook(_module, _input, out):
            if threading.get_ident() != mine:  # another thread's pass through the shared model
                return
            pooled[k].append(_pooled(out, len(every)))
            if k >= deep:
                seen[k].append(out.float().mean((2, 3)))
        return hook
    hooks = [conv.register_forward_hook(record(k)) for k, conv in enumerate(every)]
    logits, feats = [], []
    try:
        for i in range(0, len(x), BATCH):
            batch, done = x[i:i + BATCH], len(logits)
            feats.append(model.embed(batch).float().flatten(1))
            if all(len(found) > done for found in pooled):  # one pass: logits from the features' last affine map
                logits.append(logits_from_features(model, feats[-1]))
                continue
            for found in (*seen, *pooled):  # a convolution after the features (cnn16k's 1x1 classifier): the forward pass too
                del found[done:]
            logits.append(model(batch).float())
    finally:
        for hook in hooks:
            hook.remove()
    if not logits:
        return Outputs(torch.zeros(0, 10), torch.zeros(0, 0), [torch.zeros(0, 0) for _ in every[deep:]],
                       [torch.zeros(0, 0) for _ in every])
    return Outputs(torch.cat(logits), torch.cat(feats), [torch.cat(found) for found in seen[deep:]],
                   [torch.cat(found) for found in pooled])


# --- detectors (pytorch-ood) ---------------------------------------------------------------------

def _pood(name: str, state: dict[str, torch.Tensor]):
    """The pytorch-ood detector `name`, fitted from `state` where it needs fitting."""
    from pytorch_ood import detector as pood  # heavy: pytorch-ood pulls in its model zoo's imports
    if name == "msp":
        return pood.MaxSoftmax(None)
    if name == "energy":
        return pood.EnergyBased(None)
    if name == "maxlogit":
        return pood.MaxLogit(None)
    if name == "mahalanobis":
        found = pood.Mahalanobis(None)
        found.mu, found.precision = state["mu"].float(), state["precision"].float()  # all its scores read
        return found
    if name == "knn":
        return pood.KNN(None, k=KNN_K).fit_features(state["bank"].float(), torch.zeros(len(state["bank"]), dtype=torch.long))
    if name == "exposure":
        return None  # ours: core.notadigit.head
    if name == "layers":
        return [_pood("mahalanobis", {"mu": state[f"mu{k}"], "precision": state[f"precision{k}"]})
                for k in range(_depths(state))]
    raise OODError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def _depths(state: dict[str, torch.Tensor]) -> int:
    return sum(key.startswith("mu") for key in state)


@dataclass
class Exposure:
    """What the exposure detector learns from besides the training sample's outputs: those of
    some of its digits redrawn as the pad draws them (digits) and of the exposure images (not)."""
    drawn: Outputs
    images: Outputs


def exposure_outputs(model: torch.nn.Module, train_images: torch.Tensor, data_root=None) -> Exposure:
    """The Exposure of a model from its normalised training sample (N, 1, 28, 28); the exposure
    images are kept in the data folder (`data_root`, core.data.mnist.data_dir) once drawn."""
    digits = unstandardise(train_images)
    drawn = kept(data_root)
    images = np.concatenate([drawn, from_digits(digits[PAD_INLIERS:PAD_INLIERS + INVERTED])])
    return Exposure(outputs(model, normalize(pad_redrawn(digits[:PAD_INLIERS]))), outputs(model, normalize(images)))


def fit_state(name: str, train: Outputs, labels: torch.Tensor, seed: int = 0,
              val: Outputs | None = None, exposure: Exposure | None = None) -> dict[str, torch.Tensor]:
    """What the detector `name` keeps after fitting on training outputs (empty for the logit ones).
    "layers" fits a Mahalanobis detector at each depth (the deep convolutions' channel means, then
    the features) and keeps the sorted validation scores of each (`val`), which turn a score into
    its rank among the run's own digits: the image's score is its highest rank at any depth."""
    from pytorch_ood import detector as pood  # heavy: see _pood
    if name == "mahalanobis":
        fitted = pood.Mahalanobis(None).fit_features(train.feats.float(), labels.long())
        return {"mu": fitted.mu.float(), "precision": fitted.precision.float()}
    if name == "exposure":
        if exposure is None:
            raise ValueError("the exposure detector learns from the exposure images: give `exposure`")
        inliers = torch.cat([train.vector(), exposure.drawn.vector()]).numpy()
        return fit_head(inliers, exposure.images.vector().numpy(), seed=seed)
    if name == "knn":
        order = torch.randperm(len(train.feats), generator=torch.Generator().manual_seed(seed))[:KNN_BANK]
        return {"bank": train.feats[order].float()}
    if name == "layers":
        if val is None:
            raise ValueError("the layers detector ranks scores among the validation digits: give `val`")
        state = {}
        for k, (depth, at_val) in enumerate(zip([*train.layers, train.feats], [*val.layers, val.feats])):
            fitted = pood.Mahalanobis(None).fit_features(depth.float(), labels.long())
            state[f"mu{k}"], state[f"precision{k}"] = fitted.mu.float(), fitted.precision.float()
            state[f"val{k}"] = torch.from_numpy(np.sort(fitted.predict_features(at_val.float()).double().numpy())).float()
        return state
    return {}


def score(name: str, state: dict[str, torch.Tensor], out: Outputs, built=None) -> np.ndarray:
    """Outlier scores (N,) of images from their outputs; higher: less like a digit. `built`: the
    pytorch-ood detector(s) `_pood(name, state)` made before (the Sketch page scores every stroke)."""
    detector = built if built is not None else _pood(name, state)
    if name == "layers":
        ranks = []
        for k, (depth, feats) in enumerate(zip(detector, [*out.layers, out.feats])):
            reference = state[f"val{k}"].numpy()
            raw = depth.predict_features(feats.float()).double().numpy()
            ranks.append(np.searchsorted(reference, raw, side="right") / len(reference))
        return np.max(ranks, axis=0)
    if name == "exposure":
        return head_scores(state, out.vector())
    if name in ("mahalanobis", "knn"):
        found = detector.predict_features(out.feats.float())
    else:
        found = detector.predict_logits(out.logits.float())
    return found.double().cpu().numpy()


# --- a run's detector ----------------------------------------------------------------------------

@dataclass
class Detector:
    run_id: str
    name: str
    threshold: float
    state: dict[str, torch.Tensor]
    fitted_on: dict
    weights_sha256: str
    created: str
    seconds: float = 0.0
    evaluation: dict = field(default_factory=dict)  # figures on the not-a-digit set, if measured
    _built: object = field(default=None, init=False, repr=False, compare=False)  # pytorch-ood's, made once

    def scores(self, out: Outputs) -> np.ndarray:
        if self._built is None:
            self._built = _pood(self.name, self.state)
        return score(self.name, self.state, out, self._built)

    def judge(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(scores, not a digit?) of normalised images (N, 1, 28, 28)."""
        found = self.scores(outputs(model, x, many=len(x) > 1))
        return found, found > self.threshold

    def metadata(self) -> dict[str, str]:
        return {"format": str(FORMAT), "run_id": self.run_id, "detector": self.name, "threshold": repr(self.threshold),
                "accept": repr(ACCEPT), "fitted_on": json.dumps(self.fitted_on), "weights_sha256": self.weights_sha256,
                "created": self.created, "seconds": f"{self.seconds:.2f}", "evaluation": json.dumps(self.evaluation)}


def read_kept(run_id: str, root=None) -> tuple[Detector | None, str | None]:
    """(the kept detector, None) if it is whole and of the current weights; (None, why) if the
    file is damaged; (None, None) if there is none or it is of other weights."""
    return read_current(run_dir(run_id, root) / OOD, run_id, root, lambda path: safetensors_file(path, LIMIT),
                        lambda meta, tensors: _kept_detector(run_id, meta, tensors, root), fmt=str(FORMAT))


LIMIT = 64 << 20  # bytes: the largest kept detector (a kNN bank, a deep net's layers) holds a few MB

FIGURES = record({"threshold": {"type": "number"}, "test_flagged": FRACTION, "pad_flagged": FRACTION,
                  **{part: record({"auroc": FRACTION, "fpr95tpr": FRACTION, "flagged": FRACTION,
                                   "by_kind": {"type": "object", "additionalProperties": FRACTION}})
                     for part in ("selection", "held-out")}})
SCHEMA = record({
    "detector": {"enum": list(DETECTORS)}, "threshold": {"type": "number"}, "seconds": SECONDS, "created": TEXT,
    "fitted_on": record({"train_images": POSITIVE_COUNT, "validation_images": POSITIVE_COUNT, "accept": FRACTION,
                         "seed": {"type": "integer"}, "pad_drawn_digits": COUNT, "exposure_images": POSITIVE_COUNT},
                        required=["train_images", "validation_images", "seed"]),
    # empty until measured (`ood --evaluate`): then every detector's figures on the not-a-digit set
    "evaluation": {"anyOf": [{"type": "object", "maxProperties": 0}, record(
        {"non_digits": POSITIVE_COUNT, "test_digits": POSITIVE_COUNT, "pad_digits": COUNT,
         "detectors": {"type": "object", "propertyNames": {"enum": list(DETECTORS)}, "additionalProperties": FIGURES}},
        required=["non_digits", "test_digits", "detectors"])]}})


def _kept_detector(run_id: str, meta: dict[str, str], tensors: dict[str, torch.Tensor],
                   root=None) -> tuple[Detector | None, str | None]:
    fields = {}
    for key, read, kind in (("detector", str, "text"), ("threshold", float, "a number"), ("seconds", float, "a number"),
                            ("created", str, "text"), ("fitted_on", json.loads, "JSON"), ("evaluation", json.loads, "JSON")):
        if key not in meta:
            return None, f"it is damaged ({key}: missing)"
        try:
            fields[key] = read(meta[key])
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            return None, f"it is damaged ({key}: {meta[key]!r:.40} is not {kind})"
    problem = conforms(fields, SCHEMA)
    if problem:
        return None, f"it is damaged ({problem})"
    if any(not torch.isfinite(t).all() for t in tensors.values()):
        return None, "its fitted statistics are not finite"
    problem = _misfit(fields["detector"], tensors, run_id, root)
    if problem:
        return None, problem
    found = Detector(run_id, fields["detector"], fields["threshold"], dict(tensors), fields["fitted_on"],
                     meta["weights_sha256"], fields["created"], fields["seconds"], fields["evaluation"])
    return found, None


def _misfit(name: str, tensors: dict[str, torch.Tensor], run_id: str, root=None) -> str | None:
    """Why the kept statistics cannot score this run's architecture (each tensor's shape against
    what the model computes), or None."""
    try:
        out = outputs(build_model(load_run(run_id, root).config), torch.zeros(1, 1, 28, 28), many=False)
    except (RunError, RebuildError, KeyError, TypeError):
        return None  # the run cannot be rebuilt: whoever uses the detector is told so by load_model
    classes, feats = out.logits.shape[1], out.feats.shape[1]
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}
    expected: dict[str, tuple] = {}
    if name == "mahalanobis":
        expected = {"mu": (classes, feats), "precision": (feats, feats)}
    elif name == "knn":
        bank = shapes.get("bank", ())
        if len(bank) != 2 or not KNN_K <= bank[0] <= KNN_BANK:
            return f"its nearest-neighbour bank has shape {bank}, not (n <= {KNN_BANK}, {feats})"
        expected = {"bank": (bank[0], feats)}
    elif name == "layers":
        for k, width in enumerate([layer.shape[1] for layer in out.layers] + [feats]):
            size = shapes.get(f"val{k}", ())
            expected |= {f"mu{k}": (classes, width), f"precision{k}": (width, width), f"val{k}": size[:1] or (1,)}
            if len(size) == 1 and size[0] and bool((tensors[f"val{k}"].diff() < 0).any()):
                return f"its validation scores at depth {k} are not sorted"
        if _depths(tensors) != len(out.layers) + 1:
            return f"it keeps statistics at {_depths(tensors)} depths; the architecture has {len(out.layers) + 1}"
    elif name == "exposure":
        width = out.vector().shape[1]
        expected = {"head_mean": (width,), "head_scale": (width,)}
        for member in range(head_members(tensors)):
            into = width
            for depth in range(head_depths(tensors, member)):
                out_width = shapes.get(f"head{member}_w{depth}", (0, 0))[-1]
                expected |= {f"head{member}_w{depth}": (into, out_width), f"head{member}_b{depth}": (out_width,)}
                into = out_width
            if into != 1:
                return f"its classifier member {member} ends in {into} outputs, not 1"
        if not head_members(tensors):
            return "its classifier has no members"
        if "head_scale" in tensors and not bool((tensors["head_scale"] > 0).all()):
            return "its feature scales are not all positive (the check would be silently off)"
    for key, shape in expected.items():
        if shapes.get(key) != shape:
            return (f"its {key} has shape {shapes.get(key, 'none')}, not {shape} as this run's "
                    f"architecture needs: the file was edited or damaged")
    return None


def training_sample(split, fields: dict) -> torch.Tensor:
    """The FIT_IMAGES training images (indices into the split) a run's detectors learn from,
    drawn by the run's own seed: the same sample for the kept fit and for its measurement."""
    generator = torch.Generator().manual_seed(int(fields["seed"]) + 3)
    return torch.randperm(len(split.x_train), generator=generator)[:FIT_IMAGES]


def fit(run_id: str, root=None, data_root=None, name: str = DEFAULT, report=lambda line: None) -> Detector:
    """Fit `name` on the run's training split and set its threshold on its validation split; keep it."""
    run = finished_run(run_id, root, OODError, "its detector is fitted")
    if name not in DETECTORS:
        raise OODError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    start = time.perf_counter()
    try:
        split, fields = run_split(run, root, data_root)
        model = load_model(run_id, root)
        sha = weights_sha256(run_id, root)
    except (SplitError, RunError) as exc:
        raise OODError(str(exc)) from None
    sample = training_sample(split, fields)
    report(f"features of {len(sample):,} training and {len(split.x_val):,} validation images…")
    train = outputs(model, split.x_train[sample])
    val = outputs(model, split.x_val)
    exposure = None
    if name == "exposure":
        report(f"features of {PAD_INLIERS:,} training digits redrawn as the pad draws and of the exposure images…")
        exposure = exposure_outputs(model, split.x_train[sample], data_root)
    state = fit_state(name, train, split.y_train[sample], seed=int(fields["seed"]), val=val, exposure=exposure)
    val_scores = score(name, state, val)
    threshold = float(np.quantile(val_scores, ACCEPT, method="higher"))
    detector = Detector(run_id, name, threshold, state,
                        {"train_images": len(sample), "validation_images": len(split.x_val), "accept": ACCEPT, **fields,
                         **({"pad_drawn_digits": PAD_INLIERS, "exposure_images": len(exposure.images.logits)} if exposure else {})},
                        sha, now_iso(), round(time.perf_counter() - start, 2))
    keep(detector, root)
    return detector


def keep(detector: Detector, root=None) -> None:
    try:
        atomic_write_bytes(run_dir(detector.run_id, root) / OOD,
                           tensors_bytes(detector.state or {"none": torch.zeros(1)}, metadata=detector.metadata()))
    except OSError as exc:
        raise OODError(f"cannot keep the detector of run {detector.run_id!r}: {exc.strerror or exc}") from None


def detector_for(run_id: str, root=None, data_root=None, report=lambda line: None) -> Detector:
    """The run's kept detector, fitted first if there is none (or it is damaged, which is said)."""
    found = usable(read_kept(run_id, root), report, f"detector of run {run_id!r}", "fitting it again")
    if found is not None:
        return found
    return fit(run_id, root, data_root, report=report)
