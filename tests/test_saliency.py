"""Saliency (issue 13, part 2): Captum's Integrated Gradients, checked against the analytic answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.analysis import saliency
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from tests.helpers import require_mnist


def test_the_saliency_of_a_linear_model_is_its_analytic_attribution():
    """For f(x) = Wx + b, Integrated Gradients from the blank page is (x - blank) * W[target],
    exactly, whatever the number of steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    images = normalize_uint8(load_mnist(require_mnist()).test_images[:4])
    targets = [7, 2, 1, 0]
    maps = saliency.attribute(model, images, targets, steps=8)
    weights = model[1].weight.detach().numpy().reshape(10, 28, 28)
    expected = (images.squeeze(1).numpy() - saliency.BLANK) * weights[targets]
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_completeness_the_map_sums_to_the_logit_gained_from_the_blank_page():
    """Integrated Gradients' own guarantee, for a real CNN (an oracle that is not the method)."""
    from core.models import create_model
    torch.manual_seed(0)
    model = create_model("lenet").eval()
    image = normalize_uint8(load_mnist(require_mnist()).test_images[:1])
    maps = saliency.attribute(model, image, 7, steps=256)
    with torch.no_grad():
        gained = model(image)[0, 7] - model(torch.full_like(image, saliency.BLANK))[0, 7]
    assert maps.sum() == pytest.approx(float(gained), rel=0.02, abs=1e-3)


def test_explain_gives_one_map_per_digit_asked_of_an_image_on_the_unit_scale():
    """The pages' entry point: a [0, 1] picture, several digits; the same maps as attribute() on
    the normalised image, digit by digit (the linear model's analytic answer again)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    raw = load_mnist(require_mnist()).test_images[0]
    maps = saliency.explain(model, raw.numpy() / 255.0, [7, 3], steps=8)
    weights = model[1].weight.detach().numpy().reshape(10, 28, 28)
    normalised = normalize_uint8(raw[None]).squeeze().numpy()
    for amap, digit in zip(maps, [7, 3]):
        np.testing.assert_allclose(amap, (normalised - saliency.BLANK) * weights[digit], rtol=1e-4, atol=1e-6)


def test_heatmap_is_red_towards_blue_away_white_for_nothing_and_shades_the_ink():
    amap = np.zeros((28, 28), np.float32)
    amap[3, 4], amap[10, 10], amap[20, 5] = 2.0, -1.0, 0.5
    rgb = saliency.heatmap(amap)
    assert rgb.shape == (28, 28, 3) and rgb.dtype == np.uint8
    assert rgb[3, 4].tolist() == [255, 0, 0]          # the strongest push towards: full red
    assert rgb[10, 10].tolist() == [128, 128, 255]    # half as strong, away: half blue
    assert rgb[20, 5].tolist() == [255, 191, 191]     # a quarter, towards: light red
    assert rgb[0, 0].tolist() == [255, 255, 255]      # no effect: white
    ink = np.zeros((28, 28), np.float32)
    ink[0, 0] = 1.0
    assert saliency.heatmap(amap, ink)[0, 0].tolist() == [166, 166, 166]  # white under full ink: grey
    assert saliency.heatmap(np.zeros((28, 28))).min() == 255  # an empty map is all white, not NaN
    # one extreme pixel (under 2% of the total) does not wash out the rest: it is clipped
    spiky = np.full((28, 28), 1.0, np.float32)
    spiky[0, 0] = 10.0   # 1.3% of the total; scaled by the maximum, every other pixel would be pale
    assert saliency.heatmap(spiky)[0, 0].tolist() == [255, 0, 0]
    assert saliency.heatmap(spiky)[5, 5].tolist() == [255, 0, 0]


def test_targets_must_be_digits_one_per_image():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    images = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match="one target digit"):
        saliency.attribute(model, images, [1])
    with pytest.raises(ValueError, match="one target digit"):
        saliency.attribute(model, images, [1, 10])


@pytest.mark.slow
def test_bench_times_a_saliency_map_for_every_architecture(tmp_path, capsys):
    import json
    from core.cli import main
    from core.models import list_models
    assert main(["--checkpoints", str(tmp_path), "--data", str(require_mnist()), "bench", "--saliency",
                 "--sketch-repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(list_models())
    assert all(0 < t["p50_ms"] <= t["p95_ms"] and t["weights"] == "untrained weights" for t in result.values())
