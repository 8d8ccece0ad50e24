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
    found, robust = attacks.pgd(model, pixels, labels, eps, steps=20, step_size=eps / 4, restarts=2)
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
