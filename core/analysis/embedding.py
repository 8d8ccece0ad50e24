"""The embedding map: a run's penultimate features on the 10,000 test images, projected to 2-D.

`embedding(run_id, method)` returns the map, computing it once per run and method and keeping
it in the run folder as `embedding-<method>.safetensors` (points, true and predicted digits,
and the SHA-256 of the weights it was computed from: new weights, a new map). The features are
each model's `embed(x)` (core.models); the projections are umap-learn's UMAP and scikit-learn's
t-SNE and PCA, all seeded, so a map is the same each time it is computed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from safetensors.numpy import save

from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.errors import BadInput
from core.metrics import evaluate
from core.models import inference_layout
from core.store.folder import ACTIVE, RunError, embedding_file, is_regular_file, run_dir
from core.store.kept import keep, read_current, safetensors_file, usable
from core.store.runs import load_model, load_predictions, load_run, weights_sha256

METHODS = {"umap": "UMAP (umap-learn)", "tsne": "t-SNE (scikit-learn)", "pca": "PCA (scikit-learn)"}
BATCH = 500  # test images per forward pass: bounded memory for the widest model
LIMIT = 16 << 20  # bytes: a kept map of 10,000 points holds about 240 KB


class EmbeddingError(RunError, BadInput):
    """A map that cannot be drawn: the run is training, has no weights, or they no longer load."""


@dataclass
class Embedding:
    method: str
    xy: np.ndarray          # (N, 2) float32
    labels: np.ndarray      # (N,) int64: the test set's labels
    predicted: np.ndarray   # (N,) int64: the run's saved test predictions (its model's, if it has none)
    seconds: float          # how long computing it took (features and projection)
    cached: bool            # read from the run folder rather than computed now
    not_kept: str | None = None  # computed now but not kept in the run folder: why (else None)

    @property
    def mistakes(self) -> np.ndarray:
        return self.predicted != self.labels


def check_method(method: str) -> str:
    if method not in METHODS:
        raise EmbeddingError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    return method


@torch.inference_mode()
def features(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Penultimate features (N, D) for normalised images (N, 1, 28, 28)."""
    model, images = inference_layout(model.eval(), images)
    return torch.cat([model.embed(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]).float().numpy()


def project(feats: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) float32 points, deterministic for a given seed."""
    check_method(method)
    feats = np.asarray(feats, dtype=np.float32)
    if method == "pca":  # scikit-learn and umap-learn are imported here: heavy, and only a projection needs one
        from sklearn.decomposition import PCA
        xy = PCA(n_components=2, random_state=seed).fit_transform(feats)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        xy = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(feats)
    else:
        import umap  # and it compiles with numba on first use
        xy = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(feats)
    return np.asarray(xy, dtype=np.float32)


def _weights_sha(run_id: str, root) -> str:
    try:
        return weights_sha256(run_id, root)
    except RunError as exc:
        raise EmbeddingError(f"{exc}: there are no features to map") from None


def _saved_predictions(run_id: str, root, n: int):
    """The run's saved test predictions, so the map rings the mistakes every page shows (and a
    second pass over the test set is saved); None if there are none."""
    try:
        saved = load_predictions(run_id, root)["predicted"]
    except (RunError, KeyError):
        return None
    return saved.astype(np.int64) if saved.shape == (n,) else None


def _read(path, run_id: str, root, sha: str, method: str, labels: np.ndarray) -> tuple[Embedding | None, str | None]:
    """(the map kept at `path`, None) if it is whole, of the weights whose SHA-256 is `sha` and of
    the test images whose labels are `labels`; else (None, why not: None when there is no file
    or it is of other weights, which is no damage). A damaged map is computed again."""
    def kept_map(meta: dict, arrays: dict) -> tuple[Embedding | None, str | None]:
        problem = _check_map(meta, arrays, method, labels)
        if problem:
            return None, problem
        return Embedding(method, arrays["xy"].astype(np.float32), arrays["labels"].astype(np.int64),
                         arrays["predicted"].astype(np.int64), float(meta["seconds"]), True), None
    return read_current(path, run_id, root, lambda found: safetensors_file(found, LIMIT, "np"), kept_map, sha=sha)


def _check_map(meta: dict, arrays: dict, method: str, labels: np.ndarray) -> str | None:
    """Why a kept map cannot be drawn, or None: one point per test image, finite, the test
    set's labels, digits 0..9, and a time that is a number."""
    xy, kept_labels, predicted = (arrays.get(k) for k in ("xy", "labels", "predicted"))
    if xy is None or kept_labels is None or predicted is None:
        return "it lacks points, labels or predicted digits"
    if xy.shape != (len(labels), 2) or kept_labels.shape != (len(labels),) or predicted.shape != (len(labels),):
        return (f"it holds {xy.shape[0] if xy.ndim else 0:,} points of shape {xy.shape}, for {len(labels):,} "
                "test images")
    if not np.issubdtype(xy.dtype, np.floating) or not np.isfinite(xy).all():
        return "its points are not all finite numbers"
    if not np.array_equal(kept_labels.astype(np.int64), labels):
        return "its labels are not those of the test set"
    if not np.issubdtype(predicted.dtype, np.integer) or predicted.min() < 0 or predicted.max() > 9:
        return "its predicted digits are not all 0..9"
    if meta.get("method", method) != method:
        return f"it is a {meta.get('method')!r:.20} map, not {method}"
    try:
        seconds = float(meta.get("seconds", ""))
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return f"its time {meta.get('seconds')!r:.20} is not a number of seconds"
    return None


def _test_labels(data_root) -> np.ndarray:
    return load_mnist(data_root).test_labels.numpy().astype(np.int64)


def cached(run_id: str, method: str = "umap", root=None, data_root=None) -> Embedding | None:
    """The map kept in the run folder, if it is there, whole and of the run's current weights."""
    path = run_dir(run_id, root) / embedding_file(check_method(method))
    if not is_regular_file(path):
        return None
    return _read(path, run_id, root, _weights_sha(run_id, root), method, _test_labels(data_root))[0]


def embedding(run_id: str, method: str = "umap", root=None, data_root=None,
              report: Callable[[str], None] | None = None) -> Embedding:
    """The run's map by `method`: from its folder when kept there, else computed and kept.

    Raises EmbeddingError (with the reason, in one line) for a run still training, without
    weights, or whose weights no longer fit its architecture. A kept map is checked before it
    is used (a damaged one is computed again). The map file is written whole or not at all; a
    store that cannot be written to still gets the map, with `not_kept` saying why.
    `report` gets one line per stage (features, projection, keeping), with the seconds taken."""
    report = report or (lambda line: None)
    check_method(method)
    run = load_run(run_id, root)
    if run.status in ACTIVE:
        raise EmbeddingError(f"run {run.name!r} is still {run.status}: its map is drawn from the weights it "
                             f"keeps when it finishes")
    path = run_dir(run_id, root) / embedding_file(method)
    sha = _weights_sha(run_id, root)
    test_labels = _test_labels(data_root)
    found = usable(_read(path, run_id, root, sha, method, test_labels), report, f"{method} map", "computing it again")
    if found is not None:
        return found
    try:
        model = load_model(run_id, root)
    except RunError as exc:
        raise EmbeddingError(f"cannot draw the map of run {run.name!r}: {exc}") from None
    mnist = load_mnist(data_root)
    start = time.perf_counter()
    model, images = inference_layout(model.eval(), normalize_uint8(mnist.test_images))
    labels = mnist.test_labels.long()
    report(f"features of {len(images):,} test images…")
    feats = features(model, images)
    predicted = _saved_predictions(run_id, root, len(images))
    if predicted is None:  # a run without saved predictions: its model's own digits
        with torch.inference_mode():
            _, _, probs = evaluate(model, images, labels)
        predicted = probs.argmax(1).numpy().astype(np.int64)
    report(f"features ({feats.shape[1]} per image) in {time.perf_counter() - start:.1f} s; "
           f"projecting with {METHODS[method]}…")
    projected = time.perf_counter()
    xy = project(feats, method)
    seconds = time.perf_counter() - start
    report(f"{METHODS[method]} projection in {time.perf_counter() - projected:.1f} s")
    result = Embedding(method, xy, labels.numpy().astype(np.int64), predicted, seconds, False)
    data = save({"xy": xy, "labels": result.labels.astype(np.uint8),
                 "predicted": predicted.astype(np.uint8)},
                metadata={"method": method, "weights_sha256": sha, "seconds": f"{seconds:.2f}",
                          "features": str(feats.shape[1])})
    result.not_kept = keep(path, data)  # None, or why not: a read-only store or a full disk
    return result


def in_box(emb: Embedding, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    """Indices of the points inside the rectangle x0..x1, y0..y1 (ends included, either order)."""
    (x0, x1), (y0, y1) = sorted(x), sorted(y)
    px, py = emb.xy[:, 0], emb.xy[:, 1]
    return np.flatnonzero((px >= x0) & (px <= x1) & (py >= y0) & (py <= y1))
