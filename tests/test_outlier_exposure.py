"""Outlier exposure in training (oe_weight): the loss, the setting, and real runs on MNIST that
learn to be unsure on non-digits they never saw (the lab's measuring set, core.notadigit.nondigits)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.config import ConfigError, TrainConfig
from core.data.images import normalize
from core.data.mnist import load_mnist
from core.models import get_spec
from core.notadigit import outlier_exposure as outliers
from core.notadigit.nondigits import make_set
from core.recipe import Recipe
from core.store.runs import load_model, load_run
from tests.helpers import resume_matches_unbroken, train_new


def test_the_uniform_loss_is_the_cross_entropy_to_the_uniform_distribution():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 3
    uniform = torch.full_like(logits, 0.1)
    assert torch.allclose(outliers.uniform_loss(logits), F.cross_entropy(logits, uniform), atol=1e-6)
    # at its least, log 10, when every class is equally likely; a sure prediction costs more
    assert outliers.uniform_loss(torch.zeros(5, 10)).item() == pytest.approx(math.log(10))
    assert outliers.uniform_loss(torch.eye(10) * 20) > 10


def test_an_ensembles_uniform_loss_is_the_sum_of_its_members_own():
    members = torch.randn(32, 3, 10, generator=torch.Generator().manual_seed(1))
    each = sum(F.cross_entropy(members[:, k], torch.full((32, 10), 0.1)) for k in range(3))
    assert torch.allclose(outliers.uniform_loss(members), each, atol=1e-5)


def test_with_adversarial_training_the_exposure_images_are_attacked_towards_a_sure_answer_within_the_ball(mnist_root):
    from core.notadigit.exposure import make_exposure
    from core.data.images import unstandardise
    from core.models import create_model
    torch.manual_seed(0)
    model = create_model("robust").eval()
    images = normalize(make_exposure(keep_in=str(mnist_root / "exposure"))[::400].copy())
    moved = outliers.attack(model, images, 0.3, 5, 0.15, torch.Generator().manual_seed(0))
    pixels, before = unstandardise(moved), unstandardise(images)
    assert abs(pixels - before).max() <= 0.3 + 1e-5 and pixels.min() >= 0 and pixels.max() <= 1
    with torch.no_grad():
        each = [F.cross_entropy(model(x), torch.full((len(x), 10), 0.1), reduction="none") for x in (images, moved)]
    assert (each[1] > each[0]).float().mean() > 0.9   # surer of some digit, image by image
    assert each[1].mean() > 2 * (each[0].mean() - math.log(10)) + math.log(10)


@pytest.mark.parametrize("value", [-0.1, 10.5, float("nan"), "0.5", True])
def test_an_oe_weight_out_of_range_is_refused_by_name(value):
    with pytest.raises(ConfigError, match="oe_weight"):
        TrainConfig(arch="lenet", oe_weight=value)


def test_a_config_saved_before_outlier_exposure_reads_as_trained_without_it():
    saved = TrainConfig(arch="lenet", oe_weight=0.5).to_dict()
    assert TrainConfig.from_dict(saved).oe_weight == 0.5
    del saved["oe_weight"]
    assert TrainConfig.from_dict(saved).oe_weight == 0.0


def test_the_recipe_says_when_it_trains_with_outlier_exposure():
    assert "outlier exposure (weight 0.5)" in Recipe(oe_weight=0.5).describe()
    assert "outlier exposure" not in Recipe().describe()
    assert get_spec("mlp").recipe.oe_weight == 0


@pytest.mark.slow
def test_the_exposure_images_are_the_drawn_set_and_two_made_from_each_of_the_first_training_digits(mnist_root):
    from core.notadigit.exposure import make_exposure
    train_images = normalize(load_mnist(mnist_root).train_images[:3000].numpy() / 255.0)
    images = outliers.exposure_images(train_images, mnist_root)
    drawn = make_exposure(keep_in=str(mnist_root / "exposure"))
    assert images.shape == (len(drawn) + 2 * outliers.FROM_DIGITS, 1, 28, 28)
    assert torch.allclose(images[:len(drawn)], normalize(drawn.copy()))
    # the inverted digits: one minus each of the first FROM_DIGITS training digits
    inverted = normalize(1.0 - load_mnist(mnist_root).train_images[:outliers.FROM_DIGITS].numpy() / 255.0)
    assert torch.allclose(images[len(drawn):len(drawn) + outliers.FROM_DIGITS], inverted, atol=1e-5)


def _max_softmax(run_id: str, root, images) -> float:
    model = load_model(run_id, root)
    with torch.no_grad():
        return model(normalize(images)).softmax(1).max(1).values.mean().item()


@pytest.mark.slow
def test_a_run_with_outlier_exposure_is_unsure_on_non_digits_it_never_saw_and_still_reads_digits(tmp_path, mnist_root):
    base = dict(arch="lenet", epochs=1, train_limit=12000, device="cpu", seed=0)
    plain, status = train_new(TrainConfig(**base), tmp_path, data_root=mnist_root)
    assert status == "finished"
    exposed, status = train_new(TrainConfig(**base, oe_weight=0.5), tmp_path, data_root=mnist_root)
    assert status == "finished"
    notdigits = make_set(load_mnist(mnist_root).train_images[:60].numpy().tobytes())
    letters = notdigits.images[notdigits.kinds == "letter"]
    sure_plain, sure_exposed = _max_softmax(plain, tmp_path, letters), _max_softmax(exposed, tmp_path, letters)
    assert sure_exposed < sure_plain - 0.1, (sure_plain, sure_exposed)
    digits = load_mnist(mnist_root).test_images[:1000].numpy() / 255.0
    accuracy = {run: load_run(run, tmp_path).metrics["val_accuracy"] for run in (plain, exposed)}
    assert _max_softmax(exposed, tmp_path, digits) > sure_exposed + 0.2
    assert accuracy[exposed] > accuracy[plain] - 3, accuracy
    assert load_run(exposed, tmp_path).config["oe_weight"] == 0.5


@pytest.mark.slow
def test_a_run_with_outlier_exposure_cancelled_after_epoch_1_resumes_to_the_unbroken_runs_result(tmp_path):
    resume_matches_unbroken(TrainConfig(arch="lenet", epochs=2, train_limit=2000, device="cpu", seed=0, oe_weight=1.0),
                            tmp_path)
