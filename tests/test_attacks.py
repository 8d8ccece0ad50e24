"""Attacks against closed forms: PGD on a linear model reaches the worst case eps times the L1
norm of the weight difference (in pixel units, through the normalisation); FGSM is one PGD step
of eps without a random start; an unbounded attack leaves nothing standing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.analysis import attacks
from core.data.images import MNIST_STD


def two_class_linear(seed: int = 0) -> nn.Module:
    """A linear model where only digits 0 and 1 compete (the others' bias is far below)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.normal_(0, 0.01)
        model[1].bias.copy_(torch.tensor([0.5, 0.0] + [-100.0] * 8))
    return model.eval()


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_pgd_on_a_linear_model_reaches_its_closed_form_worst_case(eps):
    model = two_class_linear()
    pixels = torch.full((3, 1, 28, 28), 0.5)  # room to move both ways for eps <= 0.5
    labels = torch.zeros(3, dtype=torch.long)
    w = model[1].weight.detach()
    clean = attacks.PixelModel(model)(pixels)
    worst = (clean[:, 0] - clean[:, 1]) - eps / MNIST_STD * (w[0] - w[1]).abs().sum()  # closed form
    found, robust = attacks.pgd(model, pixels, labels, eps, steps=20, step_size=eps / 4, restarts=2,
                                stop_at_first=False)   # every image walks all its steps to the worst case
    attacked = attacks.PixelModel(model)(found)
    np.testing.assert_allclose((attacked[:, 0] - attacked[:, 1]).detach().numpy(), worst.detach().numpy(), rtol=1e-4)
    assert (found - pixels).abs().max() <= eps + 1e-6
    assert torch.equal(robust, worst > 0)


def test_fgsm_is_one_pgd_step_of_eps_without_a_random_start():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    pixels = torch.rand(8, 1, 28, 28)
    labels = torch.randint(0, 10, (8,))
    one_step, _ = attacks.pgd(model, pixels, labels, 0.1, steps=1, step_size=0.1, random_start=False)
    from_fgsm = attacks.fgsm(model, pixels, labels, 0.1)
    still_right = attacks.PixelModel(model)(pixels).argmax(1) == labels  # pgd leaves wrong images alone
    assert torch.allclose(one_step[still_right], from_fgsm[still_right], atol=1e-6)
    assert 0.0 <= from_fgsm.min() and from_fgsm.max() <= 1.0


def test_stopping_at_the_first_fooling_point_finds_what_captums_pgd_finds_and_no_less():
    """Captum's PGD judges each image by its last point; the lab's leaves an image at the first point
    that fools it. Every image Captum fools, the lab's fools; every image the full walk fools, the early
    stop fools; each image called fooled is misclassified at the point kept, inside the ball; and where
    Captum moves a pixel, the full walk moves it the same way (Captum leaves pixels whose gradient is
    below 1e-6 alone)."""
    import warnings

    from captum.robust import PGD
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    pixels = torch.rand(300, 1, 28, 28)
    with torch.no_grad():
        labels = attacks.PixelModel(model)(pixels).argmax(1)
    for eps, steps in ((0.01, 10), (0.03, 5)):
        ours, robust = attacks.pgd(model, pixels, labels, eps, steps, 2.5 * eps / steps, random_start=False)
        full, robust_full = attacks.pgd(model, pixels, labels, eps, steps, 2.5 * eps / steps, random_start=False,
                                        stop_at_first=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = PGD(attacks.PixelModel(model), loss_func=attacks.cross_entropy, lower_bound=0.0,
                         upper_bound=1.0).perturb(pixels.clone().requires_grad_(True), radius=eps,
                                                  step_size=2.5 * eps / steps, step_num=steps, target=labels).detach()
        with torch.no_grad():
            fooled_by_captum = attacks.PixelModel(model)(theirs).argmax(1) != labels
            still_wrong = attacks.PixelModel(model)(ours[~robust]).argmax(1) != labels[~robust]
        assert 0 < int(fooled_by_captum.sum()) < len(labels)       # the case has both kinds
        assert not (fooled_by_captum & robust).any() and not (~robust_full & robust).any()
        assert still_wrong.all() and (ours - pixels).abs().max() <= eps + 1e-6
        moved = (theirs - pixels).abs() > 1e-6
        same = (full[moved] - theirs[moved]).abs() < 1e-5
        assert same.float().mean() > 0.99, f"{int((~same).sum())} of {int(moved.sum())} pixels differ"


def test_the_margin_loss_is_the_largest_wrong_logit_less_the_true_one():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    labels = torch.tensor([1, 0])
    assert attacks.margin(logits, labels).tolist() == [-3.0, 3.0]


def test_an_unbounded_attack_leaves_no_image_standing(trained_runs, mnist_root):
    from core.data.mnist import load_mnist
    from core.store.runs import load_model
    model = load_model(trained_runs.ids["mlp"], trained_runs.root)
    mnist = load_mnist(mnist_root)
    pixels = mnist.test_images[:100].float().div(255).unsqueeze(1)
    labels = mnist.test_labels[:100].long()
    assert attacks.robust_accuracy(model, pixels, labels, 0.0, steps=1, restarts=1) > 50
    assert attacks.robust_accuracy(model, pixels, labels, 1.0, steps=10, restarts=1) == 0.0
    low = attacks.robust_accuracy(model, pixels, labels, 0.05, steps=10, restarts=1)
    high = attacks.robust_accuracy(model, pixels, labels, 0.2, steps=10, restarts=1)
    assert high <= low


def test_the_smallest_flip_is_where_the_linear_model_crosses_over():
    """For the two-class linear model the answer flips exactly when eps reaches the margin over
    the L1 norm of the weight difference (in pixel units): the bisection finds that eps."""
    model = two_class_linear(3)
    pixels = torch.full((1, 1, 28, 28), 0.5)
    w = model[1].weight.detach()
    clean = attacks.PixelModel(model)(pixels)[0]
    crossing = float(((clean[0] - clean[1]) * MNIST_STD / (w[0] - w[1]).abs().sum()).detach())
    eps, changed, digit = attacks.smallest_flip(model, pixels, hi=0.5, tolerance=0.002, steps=20)
    assert digit == 1 and abs(eps - crossing) <= 0.002 + 1e-3
    assert (changed - pixels).abs().max() <= eps + 1e-6
    assert attacks.smallest_flip(model, pixels, hi=crossing * 0.5) is None


def test_sketch_says_what_would_change_the_models_mind(lab_env, trained_runs, drawn, mnist_root):
    import re

    from core.analysis.predict import Predictor
    from core.data.images import to_mnist
    from core.data.mnist import load_mnist
    from dashboard.views.sketch import decode_drawing
    from tests.test_app import open_page, pad_drawing
    lab_env(trained_runs.root)
    drawn.value = pad_drawing(load_mnist(mnist_root).test_images[0].numpy())
    at = open_page("sketch")
    at.toggle(key="sketch_mind").set_value(True).run()
    run_id = at.selectbox(key="sketch_mind_run").value
    assert not at.exception, [e.value for e in at.exception]
    text = next(m.value for m in at.markdown if "makes it say" in m.value)
    eps, new = re.search(r"at most \*\*([\d.]+)\*\* \(of 1\) makes it say \*\*(\d)\*\*", text).groups()
    model = Predictor.from_run(run_id, trained_runs.root)
    digit = torch.from_numpy(to_mnist(decode_drawing(drawn.value)))[None, None]
    before = int(model.probabilities(digit[0, 0].numpy()).argmax())
    assert int(new) != before
    # the ball of that radius holds a change of answer, a ball well inside it does not
    _, robust = attacks.pgd(model.model, digit, torch.tensor([before]), float(eps), 20, 2.5 * float(eps) / 20)
    assert not robust[0]
    _, robust = attacks.pgd(model.model, digit, torch.tensor([before]), float(eps) / 3, 20, 2.5 * float(eps) / 60)
    assert robust[0]


def test_bench_flip_times_every_architecture(tmp_path, mnist_root):
    from core.bench.costs import flip_latency
    from core.models import list_models
    found = flip_latency(repeats=1, root=tmp_path, data_root=mnist_root, report=lambda line: None)
    assert list(found) == list_models()
    for row in found.values():
        assert row["weights"] == "untrained weights" and row["median_s"] > 0
        assert row["eps"] is None or 0 < row["eps"] <= 0.5
