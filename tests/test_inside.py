"""Inside the network (core.analysis.inside): every architecture's layers against the model's own
forward pass and saved predictions, a unit's top test images against a brute force over the test
set, the nearest training digits against a brute force over the training features, the kept files
(read back, made again when stale or damaged), and the `inside` command."""
from __future__ import annotations

import fcntl
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.analysis import inside
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.layers import Ensemble, combine_members
from core.store.folder import LOCK_NAME, read_json, run_dir
from core.store.runs import load_model, load_predictions
from tests.helpers import REPO, reference_runs, require_mnist, run_cli

CHECKPOINTS = REPO / "checkpoints"
IMAGES = (0, 8)  # a 7, and a 5 that some models take for something else


@pytest.fixture(scope="module")
def test_images():
    mnist = load_mnist(require_mnist())
    return normalize_uint8(mnist.test_images), mnist.test_labels


def hooked_outputs(member: torch.nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named module's output on `x`, caught by forward hooks on the model's ordinary forward pass."""
    caught, handles = {}, []
    modules = dict(member.named_modules())
    def keep(name: str):
        def hook(module, args, out) -> None:  # returns None: a hook's return value would replace the output
            caught.setdefault(name, out.detach().clone())
        return hook

    for name in names:
        handles.append(modules[name].register_forward_hook(keep(name)))
    try:
        with torch.inference_mode():
            member(x)
    finally:
        for handle in handles:
            handle.remove()
    return caught


HEAVY = ("labnet", "resnet", "cnn16k")  # a second or more each: in `make test`, not the fast tier


@pytest.mark.parametrize("arch, run_id", [pytest.param(arch, run_id, marks=[pytest.mark.slow] if arch in HEAVY else [])
                                          for arch, run_id in reference_runs(CHECKPOINTS).items()])
def test_each_architectures_layers_are_its_forward_pass_and_end_in_its_saved_prediction(arch, run_id, test_images):
    """For the shipped run of every registered architecture: the maps of every module shown are what
    the module outputs in the model's ordinary forward pass (forward hooks), the last layer shown is
    the model's logits, the probabilities are the run's saved test predictions, and the layer marked
    penultimate is the model's `embed`."""
    model = load_model(run_id, CHECKPOINTS).eval()
    saved = load_predictions(run_id, CHECKPOINTS)["probabilities"]
    images, _ = test_images
    parts = inside.members(model)
    assert len(parts) == (len(model.members) if isinstance(model, Ensemble) else 1)
    for index in IMAGES:
        x = images[index:index + 1]
        member_logits = []
        for _, member in parts:
            shown = inside.layers(member, x)
            assert shown[0].role == "input" and shown[-1].role == "probabilities" and shown[-2].role == "logits"
            modules = dict(member.named_modules())
            named = [layer for layer in shown if layer.node >= 0 and layer.name in modules]
            assert named, "no module's output is shown"
            caught = hooked_outputs(member, x, [layer.name for layer in named])
            for layer in named:
                np.testing.assert_allclose(layer.values, caught[layer.name][0].reshape(layer.shape).numpy(),
                                           rtol=0, atol=1e-5, err_msg=layer.name)
            with torch.inference_mode():
                logits = member(x)[0]
                embedded = member.embed(x)[0]
            np.testing.assert_allclose(shown[-2].values, logits.numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(shown[-1].values, logits.softmax(0).numpy(), rtol=0, atol=1e-6)
            [penultimate] = [layer for layer in shown if layer.role == "penultimate"]
            np.testing.assert_allclose(penultimate.values.reshape(-1), embedded.numpy(), rtol=0, atol=1e-5)
            maps = [layer for layer in shown if layer.maps and layer.role != "input"]
            if arch not in ("mlp", "mlp_ln"):
                assert maps and all(layer.values.ndim == 3 for layer in maps)
            member_logits.append(logits)
        combined = combine_members(torch.stack(member_logits)[None]) if len(parts) > 1 else member_logits[0][None]
        np.testing.assert_allclose(combined.softmax(1)[0].numpy(), saved[index].astype(np.float32), atol=2e-3)
        assert int(combined.argmax()) == int(saved[index].argmax())


def test_members_of_an_ensemble_of_ensembles_are_listed_one_by_one():
    from core.models import create_model
    nested = Ensemble([create_model("labnet"), create_model("mlp")])
    names = [name for name, _ in inside.members(nested)]
    assert names == ["member 1 · 1", "member 1 · 2", "member 1 · 3", "member 2"]
    assert [name for name, _ in inside.members(create_model("resnet"))] == ["model"]


def test_a_first_layers_filter_is_its_kernel_and_an_mlps_is_a_28x28_template():
    from core.models import create_model
    lenet = create_model("lenet").eval()
    np.testing.assert_array_equal(inside.first_filter(lenet, 0, 3), lenet.conv1.weight[3, 0].detach().numpy())
    assert inside.first_filter(lenet, 3, 0) is None  # conv2 reads channels, not pixels
    mlp = create_model("mlp").eval()
    np.testing.assert_array_equal(inside.first_filter(mlp, 0, 5), mlp[1].weight[5].detach().reshape(28, 28).numpy())
    resnet = create_model("resnet").eval()
    np.testing.assert_array_equal(inside.first_filter(resnet, 0, 2), resnet.features[0][0].weight[2, 0].detach().numpy())


def test_the_vote_is_the_most_common_digit_and_a_tie_goes_to_the_nearer():
    assert inside.vote(np.array([4, 9, 9, 4, 9])) == (9, 3)
    assert inside.vote(np.array([4, 9, 9, 4])) == (4, 2)   # 4 and 9 tie; the nearest is a 4
    assert inside.vote(np.array([7])) == (7, 1)


@pytest.fixture(scope="module")
def lenet_store(trained_runs, tmp_path_factory):
    """A copy of the tiny trained lenet run (1,000 training images) in a store of its own."""
    root = trained_runs.copy_to(tmp_path_factory.mktemp("inside") / "runs")
    return root, trained_runs.ids["lenet"]


@pytest.mark.slow
def test_a_units_top_images_are_the_test_images_that_excite_it_most(lenet_store, test_images):
    """The kept top images of conv2's channel 3 (its largest value over its map) against a brute
    force over the 10,000 test images with a forward hook; read back, not computed, the second time."""
    root, run_id = lenet_store
    model = load_model(run_id, root).eval()
    units = inside.top_images(run_id, root, require_mnist())
    assert not units.cached and (run_dir(run_id, root) / inside.UNITS).is_file()
    graph_layers = inside.layers(model, test_images[0][:1])
    [conv2] = [layer for layer in graph_layers if layer.name == "conv2"]
    caught = hooked_outputs(model, test_images[0], ["conv2"])["conv2"]
    brute = caught[:, 3].amax(dim=(1, 2)).numpy()
    index, score = units.index[0][conv2.node][3], units.score[0][conv2.node][3]
    np.testing.assert_allclose(score, np.sort(brute)[::-1][:inside.K], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(brute[index], score, rtol=1e-5, atol=1e-5)
    [fc1] = [layer for layer in graph_layers if layer.name == "fc1"]  # a strip: a unit is its value
    fc1_out = hooked_outputs(model, test_images[0], ["fc1"])["fc1"][:, 7].numpy()
    np.testing.assert_allclose(units.score[0][fc1.node][7], np.sort(fc1_out)[::-1][:inside.K], rtol=1e-5, atol=1e-5)
    again = inside.top_images(run_id, root, require_mnist())
    assert again.cached
    for a, b in zip(again.index[0], units.index[0]):
        np.testing.assert_array_equal(a, b)


def test_a_units_map_over_images_is_its_channel_of_the_layer(lenet_store, test_images):
    root, run_id = lenet_store
    model = load_model(run_id, root).eval()
    x = test_images[0][:5]
    shown = inside.layers(model, x[:1])
    [conv1] = [layer for layer in shown if layer.name == "conv1"]
    maps = inside.unit_maps(model, x, conv1.node, 4)
    np.testing.assert_allclose(maps, hooked_outputs(model, x, ["conv1"])["conv1"][:, 4].numpy(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "other weights", "shuffled order"])
def test_a_stale_or_damaged_units_file_is_computed_again(lenet_store, tmp_path, damage):
    from safetensors.numpy import load_file, save_file
    root = tmp_path / "runs"
    shutil.copytree(lenet_store[0], root)
    run_id = lenet_store[1]
    inside.top_images(run_id, root, require_mnist())
    path = run_dir(run_id, root) / inside.UNITS
    said = []
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "other weights":
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            meta = json.loads(handle.read(size))["__metadata__"]
        save_file(load_file(path), path, metadata={**meta, "weights_sha256": "0" * 64})
    else:
        arrays = load_file(path)
        arrays["0.1.score"] = arrays["0.1.score"][:, ::-1].copy()
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            meta = json.loads(handle.read(size))["__metadata__"]
        save_file(arrays, path, metadata=meta)
    units = inside.top_images(run_id, root, require_mnist(), report=said.append)
    assert not units.cached
    if damage == "other weights":
        assert not any("cannot be used" in line for line in said)  # stale is no damage: made again quietly
    else:
        assert any(line.startswith("the kept units cannot be used: ") and "computing them again" in line
                   for line in said), said
    assert inside.top_images(run_id, root, require_mnist()).cached


def test_nearest_training_digits_are_a_brute_force_search_of_the_kept_features(lenet_store, test_images):
    """The training features are the model's embed of the run's training images (those its own split
    gives), kept; the nearest by cosine and by Euclidean distance are a brute force over them."""
    from core.data.source import load_split
    from core.analysis.runsplit import SplitFields
    root, run_id = lenet_store
    model = load_model(run_id, root).eval()
    found = inside.training_features(run_id, root, require_mnist())
    config = read_json(run_dir(run_id, root) / "config.json")
    assert len(found.index) == config["train_limit"] == 1000
    fields = SplitFields(config)
    fields.train_limit = config["train_limit"]
    split, _ = load_split(fields, torch.device("cpu"), require_mnist())
    mnist = load_mnist(require_mnist())
    assert torch.equal(normalize_uint8(mnist.train_images[torch.from_numpy(found.index)]), split.x_train)
    np.testing.assert_array_equal(found.labels, split.y_train.numpy())
    with torch.inference_mode():
        np.testing.assert_allclose(found.features[:50], model.embed(split.x_train[:50]).numpy(), rtol=2e-3, atol=2e-3)
    query_x = test_images[0][8:9]
    query = inside.penultimate(model, query_x)
    feats = found.features.astype(np.float64)
    cosine = 1 - feats @ query / (np.linalg.norm(feats, axis=1) * np.linalg.norm(query))
    euclid = np.linalg.norm(feats - query, axis=1)
    for metric, brute in (("cosine", cosine), ("euclidean", euclid)):
        near = inside.nearest(found, query, metric=metric)
        order = np.argsort(brute, kind="stable")[:inside.K]
        np.testing.assert_allclose(near.distance, brute[order], rtol=1e-4, atol=1e-5)
        row = {int(i): r for r, i in enumerate(found.index)}
        np.testing.assert_allclose(brute[[row[int(i)] for i in near.train_index]], near.distance, rtol=1e-4, atol=1e-5)
        assert (np.diff(near.distance) >= -1e-9).all()
        np.testing.assert_array_equal(near.labels, mnist.train_labels.numpy()[near.train_index])
        assert (near.vote, near.votes) == inside.vote(near.labels)
    again = inside.training_features(run_id, root, require_mnist())
    assert again.cached and np.array_equal(again.features, found.features)


def test_a_csv_run_has_no_nearest_mnist_digits_and_a_running_one_is_refused(lenet_store, tmp_path):
    from core.fsio import atomic_write_json
    root = tmp_path / "runs"
    shutil.copytree(lenet_store[0], root)
    run_id = lenet_store[1]
    config = read_json(run_dir(run_id, root) / "config.json")
    atomic_write_json(run_dir(run_id, root) / "config.json", {**config, "csv": "/somewhere/train.csv"})
    with pytest.raises(inside.InsideError, match="trained on a CSV"):
        inside.training_features(run_id, root, require_mnist())
    atomic_write_json(run_dir(run_id, root) / "config.json", config)
    status = read_json(run_dir(run_id, root) / "status.json")
    atomic_write_json(run_dir(run_id, root) / "status.json", {**status, "status": "running"})
    with open(run_dir(run_id, root) / LOCK_NAME, "w") as lock:  # a live owner, as a training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        for compute in (inside.top_images, inside.training_features):
            with pytest.raises(inside.InsideError, match="is still running: its weights change"):
                compute(run_id, root, require_mnist())


@pytest.mark.slow
def test_cli_prints_the_layers_probabilities_and_neighbours_as_json(lenet_store, test_images, tmp_path):
    root, run_id = lenet_store
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "inside", run_id,
                             "--test-index", "8", "--json")
    assert code == 0, err
    result = json.loads(out)
    model = load_model(run_id, root).eval()
    expected = inside.layers(model, test_images[0][8:9])
    assert [(layer["name"], layer["shape"]) for layer in result["layers"]] == [(e.name, list(e.shape)) for e in expected]
    with torch.inference_mode():
        np.testing.assert_allclose(result["probabilities"], model(test_images[0][8:9]).softmax(1)[0].numpy(), atol=1e-6)
    assert result["metric"] == "cosine" and len(result["neighbours"]) == inside.K
    distances = [n["distance"] for n in result["neighbours"]]
    assert distances == sorted(distances)
    labels = load_mnist(require_mnist()).train_labels.numpy()
    assert [n["label"] for n in result["neighbours"]] == [int(labels[n["train_index"]]) for n in result["neighbours"]]
    assert result["knn_vote"] == inside.vote(np.array([n["label"] for n in result["neighbours"]]))[0]
    assert result["input"] == {"test_index": 8, "label": int(test_images[1][8])}
    seven = tmp_path / "seven.png"  # test image 0, as a user's file: black ink on white
    Image.fromarray(255 - load_mnist(require_mnist()).test_images[0].numpy()).save(seven)
    code, plain, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "inside", run_id,
                               "--image", str(seven), "--metric", "euclidean",
                               "--k", "3")
    assert code == 0, err
    assert "conv1" in plain and "nearest training digits (euclidean distance)" in plain and "their vote:" in plain


@pytest.mark.parametrize("args, message", [
    (["--test-index", "10000"], "--test-index must be 0..9999"),
    (["--test-index", "-1"], "--test-index must be 0..9999"),
    (["--test-index", "0", "--member", "2"], "not an ensemble"),
    (["--image", "/nonexistent/seven.png"], "seven.png"),
    (["--test-index", "0", "--k", "0"], "--k"),
])
def test_cli_refuses_bad_options_in_one_line(lenet_store, args, message):
    root, run_id = lenet_store
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "inside", run_id, *args)
    assert code == 2 and out == "" and message in err, (code, err)
    assert "Traceback" not in err


def test_cli_says_which_member_of_an_ensemble(tmp_path, test_images):
    run_id = reference_runs(CHECKPOINTS)["labnet"]
    shutil.copytree(CHECKPOINTS / run_id, tmp_path / run_id, ignore=shutil.ignore_patterns(inside.NEIGHBOURS))
    code, out, err = run_cli("--checkpoints", str(tmp_path), "--data", str(require_mnist()), "inside", run_id,
                             "--test-index", "0", "--member", "4", "--json")
    assert code == 2 and "has 3 members: --member must be 1..3" in err


@pytest.mark.slow
def test_every_shipped_run_ships_its_units_current_and_whole(test_images):
    """Every reference run ships its units file, current for its weights and whole; the mlp's (the
    quickest to recompute) is what computing them gives."""
    runs = reference_runs(CHECKPOINTS)
    for run_id in runs.values():
        units, why = inside.cached_units(run_id, CHECKPOINTS)
        assert units is not None, f"{run_id} ships no usable units: {why or 'none, or stale'}"
    mlp = load_model(runs["mlp"], CHECKPOINTS).eval()
    index, score = inside.top_units(mlp, test_images[0])
    shipped, _ = inside.cached_units(runs["mlp"], CHECKPOINTS)
    for i, s, kept_i, kept_s in zip(index, score, shipped.index[0], shipped.score[0]):
        np.testing.assert_allclose(kept_s, s, rtol=1e-6)
        np.testing.assert_array_equal(kept_i, i)
