"""The core library: registry, data, training, saved runs, CLI."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading
from dataclasses import MISSING, fields

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from core.config import ConfigError, TrainConfig
from core.data.mnist import load_mnist, make_split, split_indices
from core.layers import Ensemble, logits_from_features
from core.models import LabNet, UnknownModelError, count_parameters, create_model, get_spec, list_models
from core.store.folder import HISTORY_COLUMNS
from core.store.runs import load_model, load_predictions, load_run
from core.metrics import evaluate
from core.training.loop import train
from core.training.parts import build_optimizer, training_loss
from tests.helpers import run_cli, DATA, REPO, require_mnist, train_new, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real lenet run on 5,000 real training images, shared by this module's tests."""
    root = tmp_path_factory.mktemp("checkpoints")
    return root, train_tiny(root, "lenet")


# --- models -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(3, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (3, 10)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    assert model(x[:1]).shape == (1, 10)  # a batch of one keeps its shape (seed 002's squeeze bug)


@pytest.mark.parametrize("name", list_models())
def test_every_model_exposes_the_features_its_logits_are_computed_from(name):
    """The embedding map's input: penultimate features whose last affine map gives the logits
    the model's own forward computes (an ensemble: its members' features side by side)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        features, logits = model.embed(x), model(x)
        assert features.ndim == 2 and features.shape[0] == 5 and features.shape[1] >= 10
        affine = model.last_affine()
        if affine is None:  # an ensemble: each member's slice is that member's own features
            widths = [m.embed(x).shape[1] for m in model.members]
            for member, part in zip(model.members, features.split(widths, 1)):
                torch.testing.assert_close(part, member.embed(x))
                weight, bias = member.last_affine()
                torch.testing.assert_close(part @ weight.T + bias, member(x), atol=1e-5, rtol=1e-4)
        else:
            weight, bias = affine
            torch.testing.assert_close(features @ weight.T + bias, logits, atol=1e-5, rtol=1e-4)
        # the one-pass logits the not-a-digit detectors read (core.notadigit.detector.outputs)
        torch.testing.assert_close(logits_from_features(model, features), logits, atol=1e-5, rtol=1e-4)


def test_ensemble_members_train_as_if_each_were_alone():
    """labnet's members each get the gradient of their own loss, not a share of a joint one."""
    torch.manual_seed(0)
    ensemble = Ensemble([LabNet() for _ in range(3)])
    solo = copy.deepcopy(ensemble.members[1])
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss, reported, _ = training_loss(ensemble.member_logits(x), y, label_smoothing=0.1)
    loss.backward()
    alone = F.cross_entropy(solo(x), y, label_smoothing=0.1)
    alone.backward()
    theirs = dict(solo.named_parameters())
    for name, p in ensemble.members[1].named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-6)
    members = [F.cross_entropy(m(x), y, label_smoothing=0.1) for m in ensemble.members]
    torch.testing.assert_close(reported, torch.stack(members).mean().detach())


def test_ensemble_predicts_the_members_mean_probability():
    torch.manual_seed(0)
    ensemble = create_model("labnet").eval()
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(1) for m in ensemble.members]).mean(0)
        torch.testing.assert_close(ensemble(x).softmax(1), mean)


def test_cnn16k_is_seed_002s_net():
    assert count_parameters(create_model("cnn16k")) == 16_478  # "16.5k parameters"


def test_lenet_matches_seed_001_layers():
    m = create_model("lenet")
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv1.kernel_size) == (1, 10, (5, 5))
    assert (m.conv2.out_channels, m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (20, 320, 50, 10)


@pytest.mark.parametrize("name", list_models())
def test_train_with_only_an_architecture_trains_the_recipe_that_models_shows(name):
    """`python -m core train --arch NAME` builds the optimizer that `python -m core models`
    describes for NAME, from every field of its recipe."""
    from core.cli import build_parser
    from core.commands import config_from_args
    recipe = get_spec(name).recipe
    cfg = config_from_args(build_parser().parse_args(["train", "--arch", name]))
    assert {k: getattr(cfg, k) for k in recipe.as_dict()} == recipe.as_dict()
    optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg)
    group = optimizer.param_groups[0]
    assert type(optimizer).__name__.lower() == recipe.optimizer
    assert (group["lr"], group["weight_decay"]) == (recipe.lr, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        assert (group["momentum"], group["nesterov"]) == (recipe.momentum, recipe.nesterov)
    code, out, _ = run_cli("models")
    assert code == 0
    assert any(line.split()[:1] == [name] and line.endswith(recipe.describe()) for line in out.splitlines())


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(UnknownModelError) as err:
        create_model("vgg99")
    assert "lenet" in str(err.value) and "vgg99" in str(err.value)


# --- data ---------------------------------------------------------------------------------

def test_real_mnist_is_genuine():
    mnist = load_mnist(require_mnist())
    assert mnist.train_images.shape == (60_000, 28, 28) and mnist.test_images.shape == (10_000, 28, 28)
    pixels = mnist.train_images.float() / 255
    assert abs(pixels.mean().item() - 0.1307) < 1e-3 and abs(pixels.std().item() - 0.3081) < 1e-3
    assert torch.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_one_seed_fixes_the_split():
    a_train, a_val = split_indices(60_000, 5_000, seed=3)
    b_train, b_val = split_indices(60_000, 5_000, seed=3)
    c_train, c_val = split_indices(60_000, 5_000, seed=4)
    assert torch.equal(a_val, b_val) and torch.equal(a_train, b_train)
    assert not torch.equal(a_val, c_val)
    assert len(a_train) == 55_000 and len(a_val) == 5_000
    assert len(set(a_train.tolist()) & set(a_val.tolist())) == 0


def test_split_keeps_the_test_set_whole_and_apart():
    mnist = load_mnist(require_mnist())
    split = make_split(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                       val_size=5000, seed=0, train_limit=1000)
    assert len(split.x_train) == 1000 and len(split.x_val) == 5000 and len(split.x_test) == 10_000
    assert torch.equal(split.y_test, mnist.test_labels)
    # normalised as the preprocessing module says
    assert abs(split.x_test.mean().item()) < 0.05 and abs(split.x_test.std().item() - 1) < 0.05


# --- training and the run folder ------------------------------------------------------------

@pytest.mark.slow
def test_short_training_learns(trained):
    root, run_id = trained
    run = load_run(run_id, root)
    assert run.status == "finished"
    assert list(run.history["epoch"]) == [1, 2]
    assert run.val_acc > 90.0          # chance is 10%
    assert run.test_acc > 90.0


def test_run_folder_format(trained):
    root, run_id = trained
    path = root / run_id
    history = pd.read_csv(path / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    metrics = json.loads((path / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    assert metrics["test_accuracy"] == pytest.approx(np.trace(cm) / 100, abs=1e-6)
    for key in ("test_loss", "precision", "recall", "parameters", "device", "seconds"):
        assert key in metrics
    assert len(metrics["precision"]) == 10 and metrics["parameters"] == 21_840
    config = TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
    assert config.arch == "lenet" and config.train_limit == 5000 and config.lr == 1e-3
    assert json.loads((path / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_saved_run_reloads_and_gives_the_same_predictions(trained):
    root, run_id = trained
    model = load_model(run_id, root)
    mnist = load_mnist(DATA)
    split = make_split(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                       val_size=5000, seed=0, train_limit=10)
    _, acc, probs = evaluate(model, split.x_test, split.y_test)
    saved = load_predictions(run_id, root)
    assert np.array_equal(saved["labels"], mnist.test_labels.numpy())
    assert np.allclose(saved["probabilities"], probs.numpy(), atol=1e-5)
    assert np.array_equal(saved["predicted"], probs.argmax(1).numpy())
    assert acc == pytest.approx(load_run(run_id, root).test_acc, abs=1e-6)


@pytest.mark.slow
def test_an_ensemble_trains_saves_and_reloads_through_the_real_loop(tmp_path):
    run_id = train_tiny(tmp_path, "labnet", epochs=1, train_limit=1000, val_size=500, schedule="none", lr=0.02)
    run = load_run(run_id, tmp_path)
    assert np.isfinite(run.history["train_loss"]).all()
    assert run.metrics["parameters"] == count_parameters(create_model("labnet"))
    model = load_model(run_id, tmp_path)
    mnist = load_mnist(DATA)
    split = make_split(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                       val_size=5000, seed=0, train_limit=10)
    _, _, probs = evaluate(model, split.x_test[:512], split.y_test[:512])
    saved = load_predictions(run_id, tmp_path)
    assert np.allclose(saved["probabilities"][:512], probs.numpy(), atol=1e-5)


def test_accuracy_is_exact_so_a_target_met_exactly_is_met():
    """9,970 right of 10,000 is 99.70%, not float32's 99.6999979 (which misses a 99.7% target)."""
    y = torch.arange(10_000) % 10
    predicted = y.clone()
    predicted[:30] = (predicted[:30] + 1) % 10
    one_hot = F.one_hot(predicted, 10).float()

    class Lookup(torch.nn.Module):  # the "model" answers from the first pixel, which holds the index
        def forward(self, x):
            return one_hot[x[:, 0, 0, 0].long()]

    x = torch.zeros(10_000, 1, 28, 28)
    x[:, 0, 0, 0] = torch.arange(10_000).float()
    _, acc, _ = evaluate(Lookup(), x, y)
    assert acc == 99.7


def test_same_seed_same_run(tmp_path):
    a = train_tiny(tmp_path, "mlp", epochs=1, train_limit=2000)
    b = train_tiny(tmp_path, "mlp", epochs=1, train_limit=2000)
    ha, hb = load_run(a, tmp_path).history, load_run(b, tmp_path).history
    assert ha["val_acc"].tolist() == hb["val_acc"].tolist()
    assert ha["train_loss"].tolist() == hb["train_loss"].tolist()


def test_progress_callback_reports_within_and_after_epochs(tmp_path):
    events = []
    train_new(TrainConfig(arch="mlp", epochs=2, train_limit=3000, device="cpu"), tmp_path, callback=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    steps = [e for e in events if e.kind == "step" and e.epoch == 1]
    assert len(steps) >= 5 and steps[-1].step == steps[-1].steps  # a progress bar can be drawn
    assert all(0 <= e.train_acc <= 100 for e in steps)


# --- configuration and the CLI's refusals ---------------------------------------------------

@pytest.mark.parametrize("override, word", [
    ({"epochs": 0}, "epochs"), ({"epochs": 2.5}, "epochs"), ({"batch_size": 0}, "batch_size"),
    ({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"schedule": "poly"}, "schedule"),
    ({"device": "tpu"}, "device"), ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"arch": "nope"}, "nope"), ({"train_limit": 0}, "train_limit"),
])
def test_config_refuses_bad_values(override, word):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{"arch": "lenet", **override})
    assert word in str(err.value) and "\n" not in str(err.value)


def test_config_fills_the_recipe_keeps_what_was_given_and_round_trips():
    recipe = get_spec("cnn16k").recipe.as_dict()
    given = {"epochs": recipe["epochs"] + 1, "lr": recipe["lr"] / 2}
    cfg = TrainConfig(arch="cnn16k", **given)
    assert {k: getattr(cfg, k) for k in recipe} == {**recipe, **given}
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("argv, word", [
    (["--epochs", "0"], "epochs"), (["--epochs", "abc"], "abc"), (["--lr", "-1"], "lr"),
    (["--lr", "nan"], "nan"), (["--batch-size", "0"], "batch_size"), (["--optimizer", "foo"], "foo"),
    (["--momentum", "1.5"], "momentum"), (["--device", "tpu"], "tpu"), (["--seed", "-3"], "seed"),
])
def test_cli_refuses_bad_options_in_one_line(argv, word, tmp_path):
    code, out, err = run_cli("--checkpoints", str(tmp_path), "train", "--arch", "lenet", *argv)
    assert code == 2
    assert err.startswith("error:") and word in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing was created


def test_cli_unknown_arch_lists_the_known(tmp_path):
    code, _, err = run_cli("--checkpoints", str(tmp_path), "train", "--arch", "alexnet")
    assert code == 2 and "lenet" in err and "alexnet" in err


def option_help(help_text: str) -> dict[str, str]:
    """`--flag` -> the words of its help, from argparse's option list."""
    options = help_text.split("\noptions:\n", 1)[1]
    helps = {}
    for block in re.split(r"\n(?=  -)", options):  # each option starts on a line of its own
        invocation, _, words = block.strip().partition("  ")
        if "\n" in invocation:  # a long invocation puts the help on the next line
            invocation, _, words = block.strip().partition("\n")
        for flag in re.findall(r"--[a-z0-9-]+", invocation):
            helps[flag] = " ".join(words.split())
    return helps


def test_cli_help_states_every_config_fields_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli("train", "--help")
    assert code == 0
    helps = option_help(out)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in helps, f"{f.name} has no {flag} option"
        text = helps[flag]
        if f.default is MISSING:  # required (arch): no default to state
            continue
        assert text.count("default") == 1, f"{flag} should state its default once: {text!r}"
        if f.metadata.get("recipe"):
            assert "default: the architecture's recipe" in text, (flag, text)
        elif f.default is None:  # stated in words (all images, on CUDA...), never as Python's None
            assert "None" not in text, (flag, text)
        else:
            assert f"default: {f.default}" in text, (flag, text)


@pytest.mark.slow
def test_cli_is_a_real_program(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "train",
                           "--arch", "lenet", "--lr", "zero"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "zero" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_models_lists_names_parameters_and_recipes():
    code, out, _ = run_cli("models")
    assert code == 0
    for name in list_models():
        assert name in out
    assert "16,478" in out and "adam lr 0.001, batch 64, 10 epochs" in out


def test_cli_runs_lists_a_run(trained):
    root, run_id = trained
    code, out, _ = run_cli("--checkpoints", str(root), "runs")
    line = next(l for l in out.splitlines() if l.startswith(run_id))
    run = load_run(run_id, root)
    assert "lenet" in line and "finished" in line and f"{run.test_acc:.2f}" in line


def test_cli_sweep_runs_the_grid(tmp_path):
    code, out, err = run_cli("--checkpoints", str(tmp_path), "--data", str(require_mnist()), "sweep",
                             "--arch", "mlp", "--lr", "0.05,0.2", "--batch-size", "64,256",
                             "--epochs", "1", "--train-limit", "1500", "--quiet")
    assert code == 0, err
    from core.store.runs import list_runs
    runs = list_runs(tmp_path)
    assert len(runs) == 4 and len({r.config["sweep"] for r in runs}) == 1
    assert {(r.config["lr"], r.config["batch_size"]) for r in runs} == {(0.05, 64), (0.05, 256), (0.2, 64), (0.2, 256)}
    assert all(r.status == "finished" for r in runs)
    assert "0.05" in out and "256" in out  # the grid of validation accuracies


def test_cli_sweep_refuses_a_bad_list(tmp_path):
    code, _, err = run_cli("--checkpoints", str(tmp_path), "sweep", "--arch", "mlp", "--lr", "0.1,x", "--batch-size", "64")
    assert code == 2 and "--lr" in err


def test_ema_warms_up_then_averages():
    from core.training.parts import EMA
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    model.weight.data.fill_(1.0)
    ema.update(model)  # warm-up: decay (1+1)/(10+1) = 0.1818..., not 0.9
    assert ema.module.weight.flatten().tolist() == pytest.approx([1 - 2 / 11] * 2)
    for _ in range(200):
        ema.update(model)
    assert ema.module.weight.flatten().tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    restored = EMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 201 and torch.equal(restored.module.weight, ema.module.weight)


@pytest.mark.slow
def test_an_ema_run_cancelled_after_epoch_1_resumes_to_the_unbroken_runs_result(tmp_path):
    cfg = TrainConfig(arch="mlp", epochs=2, train_limit=3000, ema=True, device="cpu", seed=0)
    unbroken, status = train_new(cfg, tmp_path)
    assert status == "finished"

    stop = threading.Event()

    def cancel_after_epoch_1(event):
        if event.kind == "epoch" and event.epoch == 1:
            stop.set()  # the loop stops at the first step of epoch 2
    broken, status = train_new(cfg, tmp_path, callback=cancel_after_epoch_1, stop=stop)
    assert status == "cancelled"
    assert load_run(broken, tmp_path).history["epoch"].tolist() == [1]
    assert train(broken, resume=True, root=tmp_path, data_root=require_mnist()) == "finished"

    a, b = load_run(unbroken, tmp_path), load_run(broken, tmp_path)
    same = [c for c in HISTORY_COLUMNS if not c.endswith("seconds")]  # all but the wall times
    pd.testing.assert_frame_equal(a.history[same], b.history[same])
    assert a.history["val_acc"].iloc[0] > 50    # the average is useful from the first epoch
    kept_a, kept_b = load_model(unbroken, tmp_path).state_dict(), load_model(broken, tmp_path).state_dict()
    assert kept_a.keys() == kept_b.keys()      # the EMA weights fit the architecture
    for name in kept_a:
        assert torch.equal(kept_a[name], kept_b[name]), name
    assert a.test_acc == b.test_acc
