"""Inside the network: one digit through a model layer by layer, the test images that excite each
unit most, and the training digits nearest to it in the model's penultimate features.

**Layers.** `layers(model, image)` runs the model's own forward pass, traced once by torch.fx
(the graph is the model's code, not a copy of it), and keeps every node's output in the model's
order: convolutions, blocks (a conv-BN-ReLU stage, a residual block) and pooling as maps
(channels x height x width), dense layers and activations of flat tensors as strips. Dropout and
flattening are left out (they change nothing at inference, or only the shape). The last layer
kept is the model's logits; the page adds the probabilities. An ensemble (labnet, or runs
combined by `python -m core ensemble`) is looked into one member at a time (`members`).

**Units.** A unit is one channel of a map, or one value of a strip; it is excited by an image as
much as its largest value over the map. `top_images(run)` keeps, for every unit of every layer of
every member, the K test images that excite it most, in the run folder as `units.safetensors`
(with the SHA-256 of the weights it was computed from: new weights, new units). The reference
runs ship with it.

**Nearest training digits.** `training_features(run)` keeps the run's penultimate features
(`model.embed`, what the Embedding map projects) of every image of its training split, in
`neighbours.safetensors` (float16; not shipped: 3-32 MB a run). `nearest` finds the K nearest to
an input by cosine or Euclidean distance (scikit-learn's NearestNeighbors, brute force: exact) and
their vote (Papernot & McDaniel's deep k-nearest neighbours, 2018, on the last hidden layer).
"""
from __future__ import annotations

import json
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from safetensors.numpy import save
from torch import nn

from core.analysis.embedding import features as embed_features
from core.analysis.runsplit import SplitError, SplitFields, finished_run, split_fields
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist, split_indices
from core.errors import BadInput
from core.layers import Ensemble, Residual
from core.models import inference_layout
from core.store.folder import RunError, run_dir
from core.store.kept import keep, read_current, safetensors_file, usable
from core.store.runs import Run, load_model, weights_sha256

K = 9                       # images a unit shows, and neighbours a digit has
BATCH = 500                 # images per forward pass: bounded memory for the widest model
METRICS = ("cosine", "euclidean")
UNITS = "units.safetensors"
NEIGHBOURS = "neighbours.safetensors"
UNITS_LIMIT = 16 << 20      # bytes: labnet's three members keep about 60 KB
NEIGHBOURS_LIMIT = 512 << 20  # bytes: 55,000 images x 288 features x 2 bytes is 32 MB
TEST_IMAGES = 10_000
TRAIN_IMAGES = 60_000
FORMAT = "1"


class InsideError(RunError, BadInput):
    """A model that cannot be looked into: the run is training, has no weights, or they do not load."""


# --- a model's layers --------------------------------------------------------------------------

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_HIDDEN_MODULES = (nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity)
_HIDDEN_FUNCTIONS = (F.dropout, F.dropout2d, torch.flatten)
_HIDDEN_METHODS = ("flatten", "view", "reshape", "contiguous")


def _is_stage(module: nn.Module) -> bool:
    """A conv-BN-ReLU stage (core.layers.conv_bn) or a residual block: shown as one layer."""
    if isinstance(module, Residual):
        return True
    if not isinstance(module, nn.Sequential) or not len(module):
        return False
    convs = [m for m in module if isinstance(m, nn.Conv2d)]
    return (isinstance(module[0], nn.Conv2d) and len(convs) == 1
            and all(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)) for m in module))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return _is_stage(module) or super().is_leaf_module(module, name)


def _describe(module: nn.Module | None, node: fx.Node) -> str:
    """What a layer is, in a few words: "conv 1→16 3x3 · BN · ReLU", "max-pool 2x2", "dense 64→10"."""
    if module is None:
        name = getattr(node.target, "__name__", str(node.target))
        return {"relu": "ReLU", "max_pool2d": "max-pool", "avg_pool2d": "average pool", "add": "sum"}.get(name, name)
    if isinstance(module, Residual):
        return "residual block: x + two conv-BN-ReLU"
    if isinstance(module, nn.Sequential):
        return " · ".join(_describe(m, node) for m in module)
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size
        stride = f" stride {module.stride[0]}" if module.stride[0] != 1 else ""
        return f"conv {module.in_channels}→{module.out_channels} {k[0]}x{k[1]}{stride}"
    if isinstance(module, nn.Linear):
        return f"dense {module.in_features}→{module.out_features}"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        kind = "max-pool" if isinstance(module, nn.MaxPool2d) else "average pool"
        return f"{kind} {k}x{k}" if isinstance(k, int) else f"{kind} {k[0]}x{k[1]}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "global average pool"
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return "global max-pool"
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return "BN"
    if isinstance(module, nn.LayerNorm):
        return "LayerNorm"
    return type(module).__name__


@dataclass(frozen=True)
class _Shown:
    node: str          # the fx node whose output is kept
    name: str          # the module's path in the member ("features.0"), or the function's name
    what: str          # _describe


@dataclass
class _Graph:
    module: fx.GraphModule
    shown: list[_Shown]
    logits: str        # the node whose output is the logits (the last shown)


_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, _Graph]" = weakref.WeakKeyDictionary()


def _hidden(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _HIDDEN_MODULES)
    if node.op == "call_function":
        return node.target in _HIDDEN_FUNCTIONS
    return node.op == "call_method" and node.target in _HIDDEN_METHODS


def _graph(model: nn.Module) -> _Graph:
    """The member's traced graph and the nodes shown, traced once per model object."""
    found = _GRAPHS.get(model)
    if found is not None:
        return found
    graph = _Tracer().trace(model)
    module = fx.GraphModule(model, graph)
    modules = dict(model.named_modules())
    shown = []
    for node in graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or _hidden(node, modules):
            continue
        target = modules.get(node.target) if node.op == "call_module" else None
        name = node.target if node.op == "call_module" else node.name
        shown.append(_Shown(node.name, name, _describe(target, node)))
    output = next(n for n in graph.nodes if n.op == "output")
    last = output.args[0]
    while _hidden(last, modules):  # the logits' own layer, before a flatten
        last = last.args[0]
    found = _Graph(module, shown, last.name)
    _GRAPHS[model] = found
    return found


class _Recorder(fx.Interpreter):
    """Runs the traced graph, keeping (a copy of) each shown node's output: a copy, because a
    later in-place ReLU would change the tensor kept."""

    def __init__(self, graph: _Graph):
        super().__init__(graph.module)
        self.wanted = {s.node for s in graph.shown}
        self.kept: dict[str, torch.Tensor] = {}

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if node.name in self.wanted and isinstance(out, torch.Tensor):
            self.kept[node.name] = out.detach().float().clone()
        return out


@dataclass(frozen=True)
class Layer:
    name: str            # "input", the module's path ("features.0"), a function ("relu_1"), "probabilities"
    what: str            # what it is, in a few words
    values: np.ndarray   # (C, H, W) maps, or (D,) a strip
    role: str = ""       # "input", "penultimate", "logits", "probabilities", or ""
    node: int = -1       # its index among the graph's shown nodes (what `top_units` and `unit_maps` count);
                         # -1 for the input, added penultimate features and the probabilities

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.values.shape)

    @property
    def maps(self) -> bool:
        return self.values.ndim == 3


def _as_layer_values(t: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) maps of one pixel become (B, C): a strip, as they are one number per channel."""
    if t.ndim == 4 and t.shape[2] * t.shape[3] == 1:
        return t.flatten(1)
    return t


def members(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The models to look into: the model itself, or each member of an ensemble (nested
    ensembles flattened), named "member 1", "member 2 · 1", ..."""
    if not isinstance(model, Ensemble):
        return [(prefix.rstrip(" ·") or "model", model)]
    found = []
    for i, member in enumerate(model.members, 1):
        found += members(member, f"{prefix}{'member ' if not prefix else ''}{i} · ")
    return found


def _record(member: nn.Module, x: torch.Tensor) -> tuple[_Graph, list[torch.Tensor]]:
    graph = _graph(member)
    recorder = _Recorder(graph)
    with torch.inference_mode():
        recorder.run(x)
    return graph, [_as_layer_values(recorder.kept[s.node]) for s in graph.shown]


def layers(member: nn.Module, image: torch.Tensor) -> list[Layer]:
    """Every layer of `member` (a model, or one of `members`) for one normalised image (1, 1, 28, 28),
    in the model's order: the input, each shown node's output, the logits (the last of them, role
    "logits"), then the probabilities. The layer whose values are the penultimate features
    (`member.embed`) has role "penultimate"; where no layer is (a model that averages after its
    last linear map), they are added before the logits."""
    member = member.eval()
    graph, outs = _record(member, image)
    with torch.inference_mode():
        embedded = member.embed(image).float().flatten()
    found = [Layer("input", "the 28x28 digit as the model receives it (normalised)", image[0].float().numpy(), "input")]
    penultimate = False
    for node, (shown, out) in enumerate(zip(graph.shown, outs)):
        values = out[0]
        role = "logits" if shown.node == graph.logits else ""
        if (not role and not penultimate and values.numel() == embedded.numel()
                and torch.equal(values.flatten(), embedded)):
            role, penultimate = "penultimate", True
        if role == "logits":
            values = values.flatten()
            if not penultimate:
                found.append(Layer("embed", "the penultimate features", embedded.numpy(), "penultimate"))
                penultimate = True
        found.append(Layer(shown.name, shown.what, values.numpy(), role, node))
        if role == "logits":
            break
    logits = torch.from_numpy(found[-1].values)
    found.append(Layer("probabilities", "softmax of the logits", logits.softmax(0).numpy(), "probabilities"))
    return found


def unit_scores(values: torch.Tensor) -> torch.Tensor:
    """(B, units): how much each image excites each unit of one layer's output (B, C, H, W) or (B, D):
    a channel's largest value over its map, or a strip's value."""
    return values.amax(dim=(2, 3)) if values.ndim == 4 else values.flatten(1)


def unit_count(member: nn.Module) -> list[int]:
    """The number of units of each shown layer of `member` (one forward pass of a blank image)."""
    _, outs = _record(member.eval(), torch.zeros(1, 1, 28, 28))
    return [unit_scores(o).shape[1] for o in outs]


def unit_maps(member: nn.Module, images: torch.Tensor, layer: int, unit: int) -> np.ndarray:
    """The map of unit `unit` of shown layer `layer` (an index into the shown nodes, not counting
    the input) over each of `images` (N, 1, 28, 28): (N, H, W), or (N, 1, 1) for a strip's unit."""
    _, outs = _record(member.eval(), images)
    values = outs[layer]
    if values.ndim == 4:
        return values[:, unit].numpy()
    return values[:, unit].reshape(-1, 1, 1).numpy()


def first_filter(member: nn.Module, layer: int, unit: int) -> np.ndarray | None:
    """The weights that unit `unit` of shown layer `layer` applies to the input image, where it
    applies any: a first convolution's kernel (k x k), a first dense layer's weights as a 28x28
    template; None for every later layer (they read other units, not pixels)."""
    if layer != 0:
        return None
    module = dict(member.named_modules()).get(_graph(member).shown[0].name)
    conv = module if isinstance(module, nn.Conv2d) else (
        module[0] if _is_stage(module) and isinstance(module, nn.Sequential) else None)
    if conv is not None and conv.in_channels == 1:
        return conv.weight[unit, 0].detach().float().numpy()
    if isinstance(module, nn.Linear) and module.in_features == 28 * 28:
        return module.weight[unit].detach().float().reshape(28, 28).numpy()
    return None


# --- the units' top test images, kept -----------------------------------------------------------

@dataclass
class Units:
    index: list[list[np.ndarray]]   # [member][layer] (units, K) test image indices, most exciting first
    score: list[list[np.ndarray]]   # [member][layer] (units, K) how much each excites the unit
    seconds: float
    cached: bool
    not_kept: str | None = None


def top_units(member: nn.Module, images: torch.Tensor, k: int = K,
              report: Callable[[str], None] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each shown layer of `member`: the indices (units, k) of the `k` images of `images`
    (N, 1, 28, 28, normalised) that excite each unit most, and their scores, largest first."""
    member = member.eval()
    best: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: (scores, image indices), (units, <= k)
    for start in range(0, len(images), BATCH):
        _, outs = _record(member, images[start:start + BATCH])
        for i, out in enumerate(outs):
            scores = unit_scores(out).T                                   # (units, batch)
            where = torch.arange(start, start + scores.shape[1]).expand_as(scores)
            if i < len(best):  # the best so far compete with this batch
                scores, where = torch.cat([best[i][0], scores], 1), torch.cat([best[i][1], where], 1)
            top, at = scores.topk(min(k, scores.shape[1]), dim=1)
            found = (top, where.gather(1, at))
            best[i:i + 1] = [found]
        if report and start % 5000 == 0 and start:
            report(f"  {start:,} of {len(images):,} images")
    return [i.numpy().astype(np.int32) for _, i in best], [s.numpy().astype(np.float32) for s, _ in best]


def _check_units(meta: dict, arrays: dict, counts: list[list[int]], k: int) -> str | None:
    """Why a kept units file cannot be used for a model whose members' layers have `counts` units, or None."""
    if meta.get("k") != str(k):
        return f"it keeps {meta.get('k')!r:.10} images a unit, not {k}"
    for m, layer_counts in enumerate(counts):
        for i, units in enumerate(layer_counts):
            index, score = arrays.get(f"{m}.{i}.index"), arrays.get(f"{m}.{i}.score")
            if index is None or score is None:
                return f"it lacks layer {i} of member {m + 1}"
            if index.shape != (units, k) or score.shape != (units, k):
                return f"layer {i} of member {m + 1} holds {index.shape}, not {(units, k)}"
            if not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= TEST_IMAGES:
                return f"layer {i} of member {m + 1} names images outside the test set"
            if not np.isfinite(score).all():
                return f"layer {i} of member {m + 1} holds scores that are not finite"
            if (np.diff(score, axis=1) > 0).any():
                return f"layer {i} of member {m + 1} is not in order, most exciting first"
    if len(arrays) != 2 * sum(len(c) for c in counts):
        return "it holds layers this model does not have"
    return None


def _runnable(run_id: str, root, what: str) -> tuple[Run, nn.Module]:
    run = finished_run(run_id, root, InsideError, f"its weights change with every epoch; look at its {what}")
    try:
        return run, load_model(run_id, root).eval()
    except RunError as exc:
        raise InsideError(f"cannot look inside run {run.name!r}: {exc}") from None


def _sha(run: Run, root) -> str:
    try:
        return weights_sha256(run.run_id, root)
    except RunError as exc:
        raise InsideError(f"{exc}: there is nothing to look inside") from None


def _kept_units(run_id: str, root, parts: list[nn.Module], sha: str, k: int) -> tuple[Units | None, str | None]:
    counts = [unit_count(m) for m in parts]

    def check(meta: dict, arrays: dict):
        problem = _check_units(meta, arrays, counts, k)
        if problem:
            return None, problem
        index = [[arrays[f"{m}.{i}.index"].astype(np.int64) for i in range(len(c))] for m, c in enumerate(counts)]
        score = [[arrays[f"{m}.{i}.score"].astype(np.float32) for i in range(len(c))] for m, c in enumerate(counts)]
        return Units(index, score, float(meta.get("seconds", "nan")), True), None

    return read_current(run_dir(run_id, root) / UNITS, run_id, root,
                        lambda p: safetensors_file(p, UNITS_LIMIT, "np"), check, fmt=FORMAT, sha=sha)


def cached_units(run_id: str, root=None, k: int = K) -> tuple[Units | None, str | None]:
    """The units kept in the run folder for its current weights, never computed: (units, None), or
    (None, why not: None when there is none or it is stale, else what is damaged)."""
    run, model = _runnable(run_id, root, "units")
    return _kept_units(run_id, root, [m for _, m in members(model)], _sha(run, root), k)


def top_images(run_id: str, root=None, data_root=None, k: int = K,
               report: Callable[[str], None] | None = None) -> Units:
    """The K test images that excite each unit most, for every member and shown layer of the run's
    model: from `units.safetensors` when it is kept for the current weights, else computed over the
    10,000 test images and kept (written whole or not at all). A damaged file is said (to
    `report`) and computed again."""
    report = report or (lambda line: None)
    run, model = _runnable(run_id, root, "units")
    sha = _sha(run, root)
    parts = [m for _, m in members(model)]
    path = run_dir(run_id, root) / UNITS
    kept = usable(_kept_units(run_id, root, parts, sha, k), report, "units", "computing them again")
    if kept is not None:
        return kept
    started = time.perf_counter()
    mnist = load_mnist(data_root)
    images = normalize_uint8(mnist.test_images)
    index, score = [], []
    for m, part in enumerate(parts):
        report(f"the {k} test images that excite each unit most, member {m + 1} of {len(parts)}…"
               if len(parts) > 1 else f"the {k} test images that excite each unit most…")
        found_index, found_score = top_units(part, images, k, report)
        index.append([i.astype(np.int64) for i in found_index])
        score.append(found_score)
    seconds = time.perf_counter() - started
    units = Units(index, score, seconds, False)
    arrays = {f"{m}.{i}.index": a.astype(np.int32) for m, layer in enumerate(index) for i, a in enumerate(layer)}
    arrays |= {f"{m}.{i}.score": a for m, layer in enumerate(score) for i, a in enumerate(layer)}
    names = [[s.name for s in _graph(part).shown] for part in parts]
    data = save(arrays, metadata={"format": FORMAT, "weights_sha256": sha, "k": str(k), "seconds": f"{seconds:.2f}",
                                  "images": "MNIST test", "layers": json.dumps(names)})
    units.not_kept = keep(path, data)
    report(f"units in {seconds:.1f} s")
    return units


# --- nearest training digits ----------------------------------------------------------------

@dataclass
class TrainingFeatures:
    features: np.ndarray    # (N, D) float32: the penultimate features of the run's training images
    index: np.ndarray       # (N,) int64: each one's index in MNIST's 60,000 training images
    labels: np.ndarray      # (N,) int64
    seconds: float
    cached: bool
    not_kept: str | None = None
    _search: dict = field(default_factory=dict, repr=False)

    def searcher(self, metric: str):
        """scikit-learn's exact (brute-force) nearest-neighbour search over the features, built once per metric."""
        if metric not in self._search:
            from sklearn.neighbors import NearestNeighbors
            self._search[metric] = NearestNeighbors(metric=metric, algorithm="brute").fit(self.features)
        return self._search[metric]


@dataclass(frozen=True)
class Neighbours:
    metric: str
    train_index: np.ndarray   # (k,) indices into MNIST's 60,000 training images, nearest first
    labels: np.ndarray        # (k,)
    distance: np.ndarray      # (k,)
    vote: int                 # the digit most of them are (a tie: the one whose nearest is nearest)
    votes: int                # how many of them are that digit


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InsideError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def training_split(run: Run, root) -> np.ndarray:
    """The indices, into MNIST's 60,000 training images, of the images the run trained on (its
    seeded split without the validation images, shortened to `train_limit`); an ensemble's are its
    members' (which must agree)."""
    try:
        fields = SplitFields(split_fields(run, root))
    except SplitError as exc:
        raise InsideError(str(exc)) from None
    if fields.csv:
        raise InsideError(f"run {run.name!r} trained on a CSV, not on MNIST's training images: it has no nearest "
                          "MNIST training digits")
    train, _ = split_indices(TRAIN_IMAGES, fields.val_size, fields.seed)
    limit = run.config.get("train_limit") if run.config.get("kind") != "ensemble" else None
    if isinstance(limit, int) and limit > 0:
        train = train[:limit]
    return train.numpy().astype(np.int64)


def _check_features(meta: dict, arrays: dict, index: np.ndarray, labels: np.ndarray, width: int) -> str | None:
    feats, kept_index = arrays.get("features"), arrays.get("index")
    if feats is None or kept_index is None:
        return "it lacks features or indices"
    if feats.shape != (len(index), width):
        return f"it holds features of shape {feats.shape}, not {(len(index), width)}"
    if not np.array_equal(kept_index.astype(np.int64), index):
        return "its images are not the run's training split"
    if not np.isfinite(feats).all():
        return "its features are not all finite"
    return None


def training_features(run_id: str, root=None, data_root=None,
                      report: Callable[[str], None] | None = None) -> TrainingFeatures:
    """The penultimate features of the run's training images: from `neighbours.safetensors` when it
    is kept for the current weights and split, else computed (a forward pass over up to 55,000
    images) and kept, whole or not at all. A damaged file is said and computed again."""
    report = report or (lambda line: None)
    run, model = _runnable(run_id, root, "nearest training digits")
    index = training_split(run, root)
    sha = _sha(run, root)
    mnist = load_mnist(data_root)
    labels = mnist.train_labels.numpy().astype(np.int64)[index]
    with torch.inference_mode():
        width = int(model.embed(torch.zeros(1, 1, 28, 28)).flatten(1).shape[1])
    path = run_dir(run_id, root) / NEIGHBOURS

    def check(meta: dict, arrays: dict):
        problem = _check_features(meta, arrays, index, labels, width)
        if problem:
            return None, problem
        return TrainingFeatures(arrays["features"].astype(np.float32), index, labels,
                                float(meta.get("seconds", "nan")), True), None

    kept = usable(read_current(path, run_id, root, lambda p: safetensors_file(p, NEIGHBOURS_LIMIT, "np"), check,
                               fmt=FORMAT, sha=sha), report, "training features", "computing them again")
    if kept is not None:
        return kept
    report(f"the penultimate features of {len(index):,} training images (once for this run)…")
    started = time.perf_counter()
    model, images = inference_layout(model, normalize_uint8(mnist.train_images[torch.from_numpy(index)]))
    feats = embed_features(model, images).astype(np.float32)
    seconds = time.perf_counter() - started
    half = feats.astype(np.float16)
    stored = half if np.isfinite(half).all() else feats  # float16 unless a feature overflows it
    found = TrainingFeatures(stored.astype(np.float32), index, labels, seconds, False)
    data = save({"features": stored, "index": index.astype(np.int32)},
                metadata={"format": FORMAT, "weights_sha256": sha, "seconds": f"{seconds:.2f}",
                          "images": "MNIST train, the run's training split"})
    found.not_kept = keep(path, data)
    report(f"features in {seconds:.1f} s")
    return found


def vote(labels: np.ndarray) -> tuple[int, int]:
    """(the digit most of `labels` are, how many): labels nearest first; a tie goes to the digit
    whose nearest is nearer."""
    counts = Counter(int(d) for d in labels)
    most = max(counts.values())
    digit = next(int(d) for d in labels if counts[int(d)] == most)
    return digit, most


def nearest(found: TrainingFeatures, query: np.ndarray, k: int = K, metric: str = "cosine") -> Neighbours:
    """The `k` training images nearest to one input's penultimate features `query` (D,), nearest first."""
    check_metric(metric)
    query = np.asarray(query, dtype=np.float32).reshape(1, -1)
    if not np.isfinite(query).all():
        raise InsideError("the input's features are not finite numbers: the model breaks on it")
    distance, at = found.searcher(metric).kneighbors(query, n_neighbors=min(k, len(found.index)))
    at = at[0]
    labels = found.labels[at]
    digit, votes = vote(labels)
    return Neighbours(metric, found.index[at], labels, distance[0].astype(np.float64), digit, votes)


def penultimate(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    """The whole model's penultimate features (`model.embed`) of one normalised image: what the
    nearest training digits are compared on (an ensemble's members' side by side)."""
    with torch.inference_mode():
        return model.eval().embed(image).float().flatten().numpy()



# --- one look: what the command line prints -----------------------------------------------------

@dataclass
class Look:
    run: Run
    member: str              # which member's layers ("model" for a model that is not an ensemble)
    layers: list[Layer]
    probabilities: np.ndarray  # (10,) the run's model's (an ensemble's: its members' mean)
    neighbours: Neighbours


def probabilities(model: nn.Module, part: nn.Module, shown: list[Layer], image: torch.Tensor) -> np.ndarray:
    """The whole model's probabilities for `image`: the last of `shown` (the layers of `part`) when
    `part` is the model itself, else one more forward pass (an ensemble averages its members)."""
    if part is model:
        return shown[-1].values
    with torch.inference_mode():
        return model(image).float().softmax(1)[0].numpy()


def member_of(model: nn.Module, member: int) -> tuple[str, nn.Module]:
    """The `member`-th (from 1) of `members(model)`, or an InsideError saying how many there are."""
    found = members(model)
    if not 1 <= member <= len(found):
        if len(found) == 1:
            raise InsideError(f"this model is not an ensemble: it has no member {member}; leave --member out")
        raise InsideError(f"this model has {len(found)} members: --member must be 1..{len(found)}")
    return found[member - 1]


def look(run_id: str, image: torch.Tensor, member: int = 1, metric: str = "cosine", k: int = K,
         root=None, data_root=None, report: Callable[[str], None] | None = None) -> Look:
    """The layers of one normalised image (1, 1, 28, 28) through the run's model (one member's, for an
    ensemble), its probabilities, and its `k` nearest training digits by `metric`."""
    check_metric(metric)
    run, model = _runnable(run_id, root, "layers")
    name, part = member_of(model, member)
    shown = layers(part, image)
    probs = probabilities(model, part, shown, image)
    found = training_features(run_id, root, data_root, report)
    return Look(run, name, shown, probs, nearest(found, penultimate(model, image), k, metric))
