"""Adversarial training (a recipe's adv_eps; the `robust` recipe): the loop's attack against Captum's,
the held-out PGD check that catches catastrophic overfitting, and a resumed run drawing what an
unbroken one draws."""
from __future__ import annotations

import warnings

import pytest
import torch

from captum.robust import PGD

from core.analysis.attacks import PixelModel, cross_entropy
from core.config import ConfigError, TrainConfig
from core.data.images import standardise
from core.models import create_model, get_spec
from core.store.runs import load_model, load_run
from core.training import adversarial
from core.training.loop import Trainee, check_robustness
from tests.helpers import REPO, require_mnist, resume_matches_unbroken

SHIPPED = REPO / "checkpoints"


def mnist_pixels(n: int = 200, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from core.data.mnist import load_mnist
    mnist = load_mnist(require_mnist())
    return (mnist.test_images[offset:offset + n].float().div(255).unsqueeze(1),
            mnist.test_labels[offset:offset + n].long())


def shipped(recipe: str) -> str:
    return next(p.name for p in SHIPPED.iterdir() if p.name.endswith(f"-{recipe}-reference"))


@pytest.mark.parametrize("model_kind, steps, eps", [("lenet", 1, 0.3), ("linear", 5, 0.1), ("linear", 1, 0.3)])
def test_the_loops_attack_without_a_random_start_is_captums_pgd(model_kind, steps, eps):
    """Where Captum moves a pixel, the loop's attack moves it the same way. Captum leaves alone the
    pixels whose gradient is below 1e-6 (background far from the digit, for lenet) and the loop's
    attack does not, so their paths part after one step; a linear model has no such pixels."""
    if model_kind == "lenet":
        model = load_model(shipped("lenet"), SHIPPED).eval()
    else:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    pixels, labels = mnist_pixels()
    with torch.no_grad():
        labels = model(standardise(pixels)).argmax(1) if model_kind == "linear" else labels
    step = 2.5 * eps / steps
    ours = adversarial.perturb(model, standardise(pixels), labels, eps, steps, step, None) * 0.3081 + 0.1307
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PGD(PixelModel(model), loss_func=cross_entropy, lower_bound=0.0, upper_bound=1.0).perturb(
            pixels.clone().requires_grad_(True), radius=eps, step_size=step, step_num=steps, target=labels).detach()
    moved = (theirs - pixels).abs() > 1e-6
    assert moved.float().mean() > 0.15     # (a pixel at 0 pushed down stays at 0)
    close = (ours - theirs).abs()[moved] < 1e-4
    assert close.float().mean() > 0.999, f"{(~close).sum()} of {moved.sum()} pixels differ"
    assert (ours - pixels).abs().max() <= eps + 1e-5


def test_the_attack_stays_in_the_ball_and_the_image():
    torch.manual_seed(0)
    model = create_model("robust").eval()
    pixels, labels = mnist_pixels()
    found = adversarial.perturb(model, standardise(pixels), labels, 0.3, 3, 0.1, torch.Generator().manual_seed(1))
    found = found * 0.3081 + 0.1307
    assert (found - pixels).abs().max() <= 0.3 + 1e-5
    assert found.min() >= -1e-5 and found.max() <= 1 + 1e-5
    assert (found - pixels).abs().max() > 0.29            # it does move (the ball's edge is reached)
    with torch.no_grad():                                  # and it hurts: the loss rises
        before = torch.nn.functional.cross_entropy(model(standardise(pixels)), labels)
        after = torch.nn.functional.cross_entropy(model(standardise(found)), labels)
    assert after > before


@pytest.mark.parametrize("checks, best", [([], None), ([50.0], None), ([50.0, 60.0, 70.0], None),
                                          ([50.0, 80.0, 61.0], None), ([50.0, 80.0, 59.0], 1),
                                          ([80.0, 80.0, 10.0], 0), ([10.0, 0.0], None)])
def test_a_collapse_is_a_fall_of_more_than_20_points_below_the_best_epoch(checks, best):
    assert adversarial.collapsed(checks) == best


@pytest.mark.slow  # a second or more
def test_catastrophic_overfitting_keeps_the_best_epochs_weights_and_cuts_the_history(tmp_path):
    """A real model and a real check: the shipped lenet holds up at eps 0.05; its weights scrambled
    (what a collapse looks like) fall far below, and the check brings the good weights back."""
    from core.analysis.runsplit import run_split
    run_id = shipped("lenet")
    model = load_model(run_id, SHIPPED)
    split, _ = run_split(load_run(run_id, SHIPPED), SHIPPED)
    cfg = TrainConfig(arch="lenet", adv_eps=0.05)
    t = Trainee(model=model, forward=model, optimizer=None, scheduler=None, ema=None, shuffle=None, aug=None,
                device=torch.device("cpu"), bf16=False, channels_last=False)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    history = [{"epoch": 1}]
    assert check_robustness(t, cfg, split, history) == ""
    assert history[0]["val_robust_acc"] > 60
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    history.append({"epoch": 2})
    stopped = check_robustness(t, cfg, split, history)
    assert "catastrophic overfitting at epoch 2" in stopped and "kept epoch 1" in stopped
    assert [row["epoch"] for row in history] == [1]
    for name, value in model.state_dict().items():
        assert torch.equal(value, good[name]), name


@pytest.mark.parametrize("field, value", [("adv_eps", -0.1), ("adv_eps", 1.5), ("adv_steps", 0),
                                          ("adv_step", 0.0)])
def test_adversarial_settings_out_of_range_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(arch="mlp", **{field: value})


def test_the_robust_recipe_trains_adversarially_and_says_so():
    recipe = get_spec("robust").recipe
    assert recipe.adv_eps == 0.3 and "adversarial training (PGD-5, eps 0.3" in recipe.describe()
    assert "FGSM with a random start" in recipe.__class__(adv_eps=0.3).describe()
    assert get_spec("mlp").recipe.adv_eps == 0 and "adversarial" not in get_spec("mlp").recipe.describe()


@pytest.mark.slow
def test_an_adversarial_run_cancelled_after_epoch_1_resumes_to_the_unbroken_runs_result(tmp_path):
    cfg = TrainConfig(arch="robust", epochs=2, train_limit=3000, device="cpu", seed=0)
    a, b = resume_matches_unbroken(cfg, tmp_path)
    assert a.metrics["robust_checks"] == b.metrics["robust_checks"]
    assert [c["epoch"] for c in a.metrics["robust_checks"]] == [1, 2]
    assert a.metrics["robust_check"]["epsilon"] == 0.3
