"""The embedding map: the features, the projections against oracles, the cache in the run folder,
and the messages for runs whose map cannot be drawn."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from core.analysis.embedding import EmbeddingError, cached, embedding, in_box, project
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.store.folder import WEIGHTS, embedding_file, run_dir
from core.store.reference import reference_ids
from core.store.runs import load_model, load_predictions
from tests.helpers import REPO, require_mnist, run_cli

METHOD = "pca"  # the runs' tests use PCA: seconds, where UMAP's first call compiles for ~30 s


@pytest.fixture
def lenet_run(tmp_path):
    """A copy of the shipped lenet reference run (real weights and predictions) in a fresh store."""
    run_id = next(r for r in reference_ids(REPO / "checkpoints") if "lenet" in r)
    shutil.copytree(REPO / "checkpoints" / run_id, tmp_path / run_id)
    return tmp_path, run_id


def test_pca_map_is_the_features_projected_on_their_two_principal_axes():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 12)) * np.linspace(5, 0.5, 12)  # distinct variances: axes well defined
    xy = project(feats, "pca")
    centred = feats - feats.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    oracle = centred @ vt[:2].T
    signs = np.sign((xy * oracle).sum(0))  # an axis's sign is arbitrary
    np.testing.assert_allclose(xy * signs, oracle, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("method", ["umap", "tsne"])
@pytest.mark.slow
def test_nonlinear_maps_keep_planted_clusters_apart(method):
    """Five clusters in 30-D: in the 2-D map each point's nearest neighbour is of its own cluster."""
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3, size=(5, 30))  # apart, yet one connected neighbour graph
    labels = np.repeat(np.arange(5), 80)
    feats = centres[labels] + rng.normal(size=(len(labels), 30))
    xy = project(feats, method)
    assert xy.shape == (400, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    dist = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() >= 0.99
    np.testing.assert_array_equal(project(feats, method), xy)  # seeded: the same map each time


@pytest.mark.slow
def test_a_runs_map_is_computed_once_kept_in_its_folder_and_read_back(lenet_run):
    root, run_id = lenet_run
    emb = embedding(run_id, METHOD, root, require_mnist())
    assert not emb.cached and emb.xy.shape == (10_000, 2)
    # oracle: the same projection of the model's own features, computed here
    model = load_model(run_id, root)
    with torch.no_grad():
        feats = model.embed(normalize_uint8(load_mnist(require_mnist()).test_images)).numpy()
    oracle = project(feats, METHOD)
    np.testing.assert_allclose(np.abs(emb.xy), np.abs(oracle), atol=1e-3)
    saved = load_predictions(run_id, root)
    np.testing.assert_array_equal(emb.labels, saved["labels"])
    np.testing.assert_array_equal(emb.mistakes, saved["predicted"] != saved["labels"])  # as Mistakes shows
    assert (run_dir(run_id, root) / embedding_file(METHOD)).is_file()
    again = embedding(run_id, METHOD, root, require_mnist())
    assert again.cached
    np.testing.assert_array_equal(again.xy, emb.xy)
    np.testing.assert_array_equal(again.predicted, emb.predicted)


def test_new_weights_make_a_new_map(lenet_run):
    root, run_id = lenet_run
    embedding(run_id, METHOD, root, require_mnist())
    weights = run_dir(run_id, root) / WEIGHTS
    from safetensors.torch import load_file, save_file
    state = load_file(str(weights))
    state["fc2.bias"] = state["fc2.bias"] + 1.0  # other weights: the old map no longer describes them
    save_file(state, str(weights))
    assert cached(run_id, METHOD, root) is None
    assert not embedding(run_id, METHOD, root, require_mnist()).cached


def test_a_damaged_map_file_is_computed_again(lenet_run):
    root, run_id = lenet_run
    first = embedding(run_id, METHOD, root, require_mnist())
    (run_dir(run_id, root) / embedding_file(METHOD)).write_bytes(b"not a safetensors file")
    again = embedding(run_id, METHOD, root, require_mnist())
    assert not again.cached
    np.testing.assert_array_equal(again.xy, first.xy)


def test_weights_that_no_longer_load_get_a_message_and_no_map_file(lenet_run):
    root, run_id = lenet_run
    from safetensors.torch import load_file, save_file
    weights = run_dir(run_id, root) / WEIGHTS
    state = load_file(str(weights))
    state["fc1.weight"] = state["fc1.weight"][:, :100].contiguous()  # an older lenet's shape
    save_file(state, str(weights))
    with pytest.raises(EmbeddingError, match="cannot draw the map .* do not fit lenet"):
        embedding(run_id, METHOD, root, require_mnist())
    assert not (run_dir(run_id, root) / embedding_file(METHOD)).exists()
    assert not [p for p in run_dir(run_id, root).iterdir() if p.name.startswith(".")]  # no temporary left
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()),
                             "embedding", run_id, "--method", METHOD)
    assert code != 0 and "do not fit lenet" in err and "Traceback" not in err


def test_a_run_without_weights_or_still_training_is_refused(lenet_run):
    root, run_id = lenet_run
    (run_dir(run_id, root) / WEIGHTS).unlink()
    with pytest.raises(EmbeddingError, match="no saved weights"):
        embedding(run_id, METHOD, root, require_mnist())
    with pytest.raises(EmbeddingError, match="unknown projection 'mds'"):
        embedding(run_id, "mds", root, require_mnist())


def test_cli_prints_the_map_summary(lenet_run):
    root, run_id = lenet_run
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()),
                             "embedding", run_id, "--method", METHOD)
    assert code == 0, err
    mistakes = int((load_predictions(run_id, root)["predicted"] != load_predictions(run_id, root)["labels"]).sum())
    assert "10,000 test images, computed" in out and f"{mistakes} mistakes" in out
    code, out, _ = run_cli("--checkpoints", str(root), "embedding", run_id, "--method", METHOD)
    assert code == 0 and "read from the run folder" in out


def test_points_in_a_box_are_those_inside_it_whichever_way_it_was_drawn():
    from core.analysis.embedding import Embedding
    xy = np.array([[0, 0], [1, 1], [2, 2], [1, 3], [-1, 1]], dtype=np.float32)
    emb = Embedding("pca", xy, np.zeros(5, np.int64), np.zeros(5, np.int64), 0.0, True)
    assert in_box(emb, (0.5, 2.5), (0.5, 2.5)).tolist() == [1, 2]
    assert in_box(emb, (2.5, 0.5), (3.0, 0.0)).tolist() == [1, 2, 3]  # dragged right to left, bottom up
    assert in_box(emb, (5, 6), (5, 6)).tolist() == []


def test_bench_times_the_map_of_the_best_run_of_each_architecture(lenet_run):
    from core.bench.costs import embedding_costs
    root, run_id = lenet_run
    lines = []
    results = embedding_costs(methods=("pca",), root=root, data_root=require_mnist(), report=lines.append)
    assert list(results) == ["lenet"] and results["lenet"]["width"] == load_model(run_id, root).fc2.in_features
    assert results["lenet"]["features"] > 0 and results["lenet"]["pca"] > 0 and len(lines) == 1
    assert not (run_dir(run_id, root) / embedding_file("pca")).exists()  # timed, not kept


@pytest.mark.slow
def test_a_run_without_saved_predictions_gets_its_mistakes_from_its_model(lenet_run):
    root, run_id = lenet_run
    saved = load_predictions(run_id, root)
    (run_dir(run_id, root) / "predictions.safetensors").unlink()
    emb = embedding(run_id, METHOD, root, require_mnist())
    model = load_model(run_id, root)
    with torch.no_grad():  # oracle: the model's own argmax, in the default memory layout
        digits = model(normalize_uint8(load_mnist(require_mnist()).test_images)).argmax(1).numpy()
    assert (emb.predicted != digits).sum() <= 2  # a near tie may read either way in another layout
    assert (emb.predicted != saved["predicted"]).sum() <= 2
