"""Not a digit (core.notadigit.detector, core.notadigit.nondigits): detectors on synthetic features whose
answer is known, the threshold by counting, the kept file, and a real run's judgement against the
Mahalanobis distance computed here by hand."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from core.models import list_models
from core.notadigit import detector as ood
from core.notadigit.evaluation import auroc_fpr
from core.notadigit.nondigits import make_set, pad_redrawn
from core.store.folder import OOD, WEIGHTS
from core.store.reference import reference_ids
from core.store.runs import load_model, load_run
from tests.helpers import REPO, cli_result, require_mnist

SHIPPED = REPO / "checkpoints"


def planted(rng, n=600, d=8):
    """Two Gaussian classes far apart, and an outlier cluster away from both (in distance and in
    direction, as the nearest-neighbour detector compares unit-length features)."""
    centres = 10.0 * np.eye(d)[:2]
    labels = np.repeat([0, 1], n // 2)
    inliers = centres[labels] + rng.normal(size=(n, d))
    outliers = rng.normal(size=(n // 3, d)) + 10.0 * np.eye(d)[2]
    return torch.tensor(inliers).float(), torch.tensor(labels), torch.tensor(outliers).float()


def as_outputs(feats: torch.Tensor, depths: int = 0) -> ood.Outputs:
    """Features standing for a model's outputs (the same features at every depth)."""
    return ood.Outputs(torch.zeros(len(feats), 10), feats, [feats] * depths)


@pytest.mark.parametrize("name", ["mahalanobis", "knn", "layers"])
def test_feature_detectors_tell_a_planted_outlier_cluster_from_the_classes(name):
    rng = np.random.default_rng(0)
    train, labels, _ = planted(rng)
    test_in, _, test_out = planted(rng)
    state = ood.fit_state(name, as_outputs(train, 2), labels, val=as_outputs(planted(rng)[0], 2))
    inside = ood.score(name, state, as_outputs(test_in, 2))
    outside = ood.score(name, state, as_outputs(test_out, 2))
    auroc, _ = auroc_fpr(outside, inside)
    assert auroc > 0.99
    same, _ = auroc_fpr(ood.score(name, state, as_outputs(planted(rng)[0], 2)), inside)  # the same distribution
    assert 0.4 < same < 0.6


def test_the_layers_score_is_the_highest_rank_among_the_validation_digits_at_any_depth():
    rng = np.random.default_rng(2)
    train, labels, outliers = planted(rng)
    val = planted(rng)[0]
    state = ood.fit_state("layers", as_outputs(train, 1), labels, val=as_outputs(val, 1))
    assert ood._depths(state) == 2
    single = ood.fit_state("mahalanobis", as_outputs(train), labels)
    raw_val = np.sort(ood.score("mahalanobis", single, as_outputs(val)))
    raw = ood.score("mahalanobis", single, as_outputs(outliers[:50]))
    ranks = np.array([(raw_val <= r).mean() for r in raw])  # both depths see the same features here
    np.testing.assert_allclose(ood.score("layers", state, as_outputs(outliers[:50], 1)), ranks)


def test_mahalanobis_scores_are_half_the_squared_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(1)
    train, labels, outliers = planted(rng)
    state = ood.fit_state("mahalanobis", as_outputs(train), labels)
    z = outliers.double().numpy()
    x, y = train.double().numpy(), labels.numpy()
    means = np.stack([x[y == k].mean(0) for k in (0, 1)])
    scatter = sum((x[y == k] - means[k]).T @ (x[y == k] - means[k]) for k in (0, 1))  # pytorch-ood's: not divided by N
    precision = np.linalg.inv(scatter + 1e-6 * np.eye(len(scatter)))
    d = np.stack([np.einsum("nd,de,ne->n", z - m, precision, z - m) for m in means], 1)
    np.testing.assert_allclose(ood.score("mahalanobis", state, as_outputs(outliers)), 0.5 * d.min(1), rtol=1e-3)


def test_logit_detectors_follow_the_convention_higher_is_less_like_a_digit():
    sure = torch.tensor([[12.0] + [0.0] * 9])
    unsure = torch.zeros(1, 10)
    for name in ("msp", "energy", "maxlogit"):
        high = ood.score(name, {}, ood.Outputs(unsure, torch.zeros(1, 1), []))[0]
        assert high > ood.score(name, {}, ood.Outputs(sure, torch.zeros(1, 1), []))[0], name


def test_the_not_a_digit_set_is_deterministic_and_of_every_kind():
    first, again = make_set(b"", seed=0), make_set.__wrapped__(b"", seed=0)
    np.testing.assert_array_equal(first.images, again.images)
    assert set(first.kinds) == {"letter", "shape", "scribble", "noise", "blank"}
    assert first.images.dtype == np.float32 and first.images.shape[1:] == (28, 28)
    assert 0 <= first.images.min() and first.images.max() <= 1
    halves = first.part(False), first.part(True)
    assert len(halves[0]) + len(halves[1]) == len(first)
    assert not set(halves[0].names) & set(halves[1].names)


def test_pad_redrawn_digits_keep_their_place_and_get_solid_strokes(mnist_root):
    from core.data.mnist import load_mnist
    digits = load_mnist(mnist_root).test_images[:20].numpy() / 255.0
    redrawn = pad_redrawn(digits)
    for before, after in zip(digits, redrawn):
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.6  # the same digit where it was
    assert np.abs(redrawn - digits).mean() > 0.01  # drawn again, not copied


def test_pad_redrawn_strokes_are_the_medial_axis_dilated_by_the_pens_disk(mnist_root):
    """The oracle: the same strokes by a morphological dilation with the pen's round footprint
    (what the function did before it measured distances instead, on the whole canvas), digit for digit,
    bit for bit; inverted digits too, whose ink meets the canvas's edges."""
    from PIL import Image
    from scipy import ndimage
    from core.data.images import to_mnist
    from core.data.mnist import load_mnist
    from core.notadigit.nondigits import CANVAS, PEN
    digits = load_mnist(mnist_root).test_images[:40].numpy() / 255.0
    digits = np.concatenate([digits, 1.0 - digits[:4]])
    disk = np.hypot(*np.mgrid[-PEN // 2:PEN // 2 + 1, -PEN // 2:PEN // 2 + 1]) <= PEN / 2
    expected = []
    for digit in digits.astype(np.float32):
        big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((CANVAS, CANVAS), Image.BILINEAR))
        distance = ndimage.distance_transform_edt(big > 127)
        ridge = (big > 127) & (distance >= ndimage.maximum_filter(distance, size=3)) & (distance > 1)
        expected.append(to_mnist((ndimage.binary_dilation(ridge, structure=disk) * 255).astype(np.uint8)))
    assert np.array_equal(pad_redrawn(digits), np.stack(expected))
    faint = np.full((1, 28, 28), 0.3, dtype=np.float32)  # no ink over half on: kept as it was
    assert np.array_equal(pad_redrawn(faint), faint)


@pytest.fixture
def lenet(tmp_path):
    run_id = next(i for i in reference_ids(SHIPPED) if load_run(i, SHIPPED).arch == "lenet")
    shutil.copytree(SHIPPED / run_id, tmp_path / run_id)
    (tmp_path / run_id / OOD).unlink(missing_ok=True)
    return tmp_path, run_id


@pytest.mark.slow
@pytest.mark.usefixtures("quick_head")
def test_a_runs_threshold_accepts_99_percent_of_its_validation_digits_and_is_kept(lenet):
    from core.analysis.runsplit import run_split
    root, run_id = lenet
    fitted = ood.fit(run_id, root, require_mnist(), name="mahalanobis")
    split, _ = run_split(load_run(run_id, root), root, require_mnist())
    scores, flags = fitted.judge(load_model(run_id, root), split.x_val)
    # by counting: the threshold is the score of the validation digit at the 99% rank, so exactly the
    # digits up to that rank pass (4,951 of 5,000: numpy's "higher" quantile of 0.99 * 4,999)
    assert (~flags).sum() == int(np.ceil(ood.ACCEPT * (len(flags) - 1))) + 1
    assert ood.ACCEPT <= (~flags).mean() <= ood.ACCEPT + 1 / len(flags)
    kept, damage = ood.read_kept(run_id, root)
    assert damage is None and kept.threshold == fitted.threshold and kept.name == "mahalanobis"
    assert torch.equal(kept.state["precision"], fitted.state["precision"])
    path = root / run_id / OOD
    path.write_bytes(b"not a detector")
    assert ood.read_kept(run_id, root)[1] == "ood.safetensors is no whole safetensors file (SafetensorError)"
    again = ood.detector_for(run_id, root, require_mnist())  # fitted again: the default detector
    assert again.name == ood.DEFAULT and ood.read_kept(run_id, root)[0].threshold == again.threshold
    refitted = ood.fit(run_id, root, require_mnist())  # deterministic: what lets `ship` measure its own fit
    assert refitted.threshold == again.threshold and refitted.state.keys() == again.state.keys()
    assert all(torch.equal(refitted.state[key], again.state[key]) for key in again.state)
    weights = root / run_id / WEIGHTS
    weights.write_bytes(weights.read_bytes() + b" ")  # new weights: the kept fit no longer counts
    assert ood.read_kept(run_id, root) == (None, None)


@pytest.mark.slow
def test_predict_says_not_a_digit_as_the_detector_computed_here_does(lenet, tmp_path):
    from PIL import Image
    from core.data.mnist import load_mnist
    root, run_id = lenet
    fitted = ood.fit(run_id, root, require_mnist(), name="mahalanobis")
    model = load_model(run_id, root)
    digit = load_mnist(require_mnist()).test_images[0].numpy()
    files = {"digit.png": digit}
    for k, image in enumerate(make_set(b"").images[::40]):
        files[f"other{k}.png"] = (image * 255).astype(np.uint8)
    for name, image in files.items():
        Image.fromarray(image).save(tmp_path / name)
    proc = cli_result("--checkpoints", str(root), "--data", str(require_mnist()), "predict", run_id,
                      *[str(tmp_path / n) for n in files], "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    from core.data.images import normalize, preprocess
    for line in lines:
        image, _ = preprocess(line["file"])
        x = normalize(image)
        with torch.inference_mode():
            z = model.embed(x).double().numpy()[0]
        mu, precision = fitted.state["mu"].double().numpy(), fitted.state["precision"].double().numpy()
        by_hand = 0.5 * min(float((z - m) @ precision @ (z - m)) for m in mu)
        assert line["ood_score"] == pytest.approx(by_hand, rel=1e-3)
        assert line["not_a_digit"] == (by_hand > fitted.threshold)
    assert not lines[0]["not_a_digit"]  # a real test digit passes
    assert any(line["not_a_digit"] for line in lines[1:])
    plain = cli_result("--checkpoints", str(root), "predict", run_id, *[str(tmp_path / n) for n in files])
    flagged = [line["file"] for line in lines if line["not_a_digit"]]
    for row in plain.stdout.splitlines():
        assert ("not a digit" in row) == any(row.startswith(f + ":") for f in flagged)


def shipped_copy(root, arch: str) -> str:
    run_id = next(i for i in reference_ids(SHIPPED) if load_run(i, SHIPPED).arch == arch)
    shutil.copytree(SHIPPED / run_id, root / run_id)
    return run_id


def says_not_a_digit(bodies: str, run, score: float | None = None, threshold: float | None = None) -> bool:
    """Whether the Sketch page's row of `run` says "Not a digit to this model"; where it does and a
    score is given, its tooltip must give that score and the threshold."""
    import html
    import re
    found = re.search(r'<h3 class="sk-why" title="not-a-digit score ([^,]+), above this model&#x27;s threshold ([^:]+):'
                      r'[^"]*">Not a digit to this model</h3>(?:<span class="sk-flag"[^>]*>[^<]*</span>)?</div><p>'
                      + re.escape(f"{html.escape(run.name)} · {html.escape(run.arch)} · it would say"), bodies)
    if found and score is not None:
        assert float(found.group(1)) == pytest.approx(score, rel=1e-3)
        assert float(found.group(2)) == pytest.approx(threshold, rel=1e-3)
    return bool(found)


def test_sketch_says_not_a_digit_where_the_detector_does(lab_env, tmp_path, drawn, mnist_root):
    """A drawn hash, star and scribble, then a real 7: each model's card says "Not a digit" exactly
    where its shipped detector flags the drawing, and a 7 is a digit to every model."""
    from core.analysis.predict import Predictor
    from core.data.images import normalize, to_mnist
    from core.data.mnist import load_mnist
    from core.notadigit.nondigits import make_set
    from dashboard.views.sketch import decode_drawing
    from tests.test_app import open_page, pad_drawing
    root = lab_env(tmp_path / "runs")
    ids = [shipped_copy(root, arch) for arch in ("lenet", "resnet")]
    others = make_set(b"")
    drawings = [others.images[list(others.names).index(name)] for name in ("shape hash #0", "shape star #0", "scribble #3")]
    seven = load_mnist(mnist_root).test_images[0].numpy() / 255.0
    at = open_page("sketch")
    flagged_somewhere = False
    for image, is_digit in [*[(d, False) for d in drawings], (seven, True)]:
        drawn.value = pad_drawing((image * 255).astype(np.uint8))
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        digit = to_mnist(decode_drawing(drawn.value))
        bodies = " ".join(element.proto.body for element in at.get("html"))
        for run_id in ids:
            detector, _ = ood.read_kept(run_id, root)
            model = Predictor.from_run(run_id, root).model
            (score,), (flag,) = detector.judge(model, normalize(digit))
            run = load_run(run_id, root)
            said = says_not_a_digit(bodies, run, score, detector.threshold)
            assert said == bool(flag), (run.arch, is_digit)
            flagged_somewhere |= bool(flag)
            if is_digit:
                assert not flag
    assert flagged_somewhere


@pytest.mark.slow
@pytest.mark.usefixtures("quick_head")
def test_sketch_fits_a_missing_or_damaged_check_from_its_button_and_judges_the_next_drawings(lab_env, tmp_path, drawn,
                                                                                           mnist_root):
    """A run whose check is damaged (warned) and one that has none (listed): one click of "Fit the
    check" fits both, kept for their weights; then a 7 and a hash drawn in turn are judged on each
    card as the kept detectors judge them."""
    from core.analysis.predict import Predictor
    from core.data.images import normalize, to_mnist
    from core.data.mnist import load_mnist
    from core.notadigit.nondigits import make_set
    from dashboard.text import md_text
    from dashboard.views.sketch import decode_drawing
    from tests.test_app import open_page, pad_drawing, texts
    root = lab_env(tmp_path / "runs")
    damaged, missing = shipped_copy(root, "lenet"), shipped_copy(root, "mlp")
    (root / damaged / OOD).write_bytes(b"not a detector")
    (root / missing / OOD).unlink()
    seven = load_mnist(mnist_root).test_images[0].numpy() / 255.0
    others = make_set(b"")
    hash_sign = others.images[list(others.names).index("shape hash #0")]
    drawn.value = pad_drawing((seven * 255).astype(np.uint8))
    at = open_page("sketch")
    shown = texts(at)
    assert "check cannot be used: ood.safetensors is no whole safetensors file" in shown and "not fitted yet for" in shown
    assert md_text(load_run(missing, root).name) in shown
    [button] = [b for b in at.button if b.key == "sketch_fit_ood"]
    button.click().run(timeout=600)
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert "check cannot be used" not in shown and "not fitted yet" not in shown
    assert not [b for b in at.button if b.key == "sketch_fit_ood"]  # nothing left to fit
    kept = {}
    for run_id in (damaged, missing):
        kept[run_id], damage = ood.read_kept(run_id, root)
        assert kept[run_id] is not None and damage is None  # whole, of these weights
    for image in (seven, hash_sign):
        drawn.value = pad_drawing((image * 255).astype(np.uint8))
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        digit = to_mnist(decode_drawing(drawn.value))
        bodies = " ".join(element.proto.body for element in at.get("html"))
        for run_id, detector in kept.items():
            _, (flag,) = detector.judge(Predictor.from_run(run_id, root).model, normalize(digit))
            run = load_run(run_id, root)
            assert says_not_a_digit(bodies, run) == bool(flag), run.arch
            if image is seven:
                assert not flag


def test_a_white_square_and_an_empty_pad_are_refused_in_words_and_a_dot_is_judged(tmp_path):
    from PIL import Image
    from core.data.images import ImageError, to_mnist
    with pytest.raises(ImageError, match="one light colour all over"):
        to_mnist(np.full((280, 280), 255, dtype=np.uint8))
    with pytest.raises(ImageError, match="empty"):
        to_mnist(np.zeros((280, 280), dtype=np.uint8))
    dot = np.zeros((280, 280), dtype=np.uint8)
    dot[130:150, 130:150] = 255
    run_id = shipped_copy(tmp_path, "lenet")
    Image.fromarray(dot).save(tmp_path / "dot.png")
    Image.fromarray(np.full((280, 280), 255, dtype=np.uint8)).save(tmp_path / "white.png")
    proc = cli_result("--checkpoints", str(tmp_path), "predict", run_id, str(tmp_path / "dot.png"),
                      str(tmp_path / "white.png"), "--json")
    dot_line, white_line = (json.loads(line) for line in proc.stdout.splitlines())
    assert dot_line["not_a_digit"] in (True, False) and isinstance(dot_line["ood_score"], float)
    assert "one light colour" in white_line["error"] and proc.returncode == 1


def test_predict_without_a_detector_says_so_and_predicts(trained_runs, tmp_path):
    from PIL import Image
    from core.data.mnist import load_mnist
    digit = load_mnist(require_mnist()).test_images[0].numpy()
    Image.fromarray(digit).save(tmp_path / "seven.png")
    run_id = trained_runs.ids["mlp"]
    proc = cli_result("--checkpoints", str(trained_runs.root), "--data", str(tmp_path / "no-mnist"), "predict",
                      run_id, str(tmp_path / "seven.png"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: no not-a-digit check:") and "fetch" in proc.stderr
    line = json.loads(proc.stdout)
    assert line["not_a_digit"] is None and line["ood_score"] is None
    assert line["digit"] == int(np.argmax(line["probabilities"]))
    assert not (trained_runs.root / run_id / OOD).exists()


def test_mistakes_shows_each_shown_images_score_from_the_runs_detector(lab_env, tmp_path, mnist_root):
    from core.analysis.predict import Predictor
    from core.analysis.predictions import mistakes
    from core.data.images import normalize
    from core.data.mnist import load_mnist
    from core.store.runs import load_predictions
    from tests.test_app import open_page
    root = lab_env(tmp_path / "runs")
    run_id = shipped_copy(root, "lenet")
    at = open_page("mistakes")
    at.toggle(key="mis_ood").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    gallery = max((list(element.proto.imgs) for element in at.get("image")), key=len)  # the page's gallery
    shown = mistakes(load_predictions(run_id, root), order="confident")["index"].to_numpy()[:40]
    images = load_mnist(mnist_root).test_images.numpy()[shown] / 255.0
    detector, _ = ood.read_kept(run_id, root)
    scores, flags = detector.judge(Predictor.from_run(run_id, root).model, normalize(images))
    texts = [image.caption for image in gallery]
    assert len(texts) == len(shown)
    for text, score, flag in zip(texts, scores, flags):
        assert text.endswith(f"{'NOT A DIGIT ' if flag else ''}score {score:.3g}"), text


def grid_means(out: torch.Tensor, side: int) -> torch.Tensor:
    """Each channel's map averaged over side x side cells, cell i covering rows (and columns)
    floor(i * H / side) up to ceil((i + 1) * H / side): the oracle of the grids, cell by cell."""
    h, w = out.shape[-2:]
    cells = [out[..., (i * h) // side:-((-(i + 1) * h) // side), (j * w) // side:-((-(j + 1) * w) // side)].mean((-2, -1))
             for i in range(side) for j in range(side)]
    return torch.stack(cells, -1).flatten(1)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in ("labnet", "cnn16k") else a
                                  for a in list_models()])  # the two deepest take seconds each
@pytest.mark.parametrize("many", [False, True])
def test_what_the_detectors_read_is_what_the_model_computes(arch, many):
    """`outputs` takes one pass where the logits follow from the features: its logits, features,
    channel means and grids equal the model's own forward, its embed and hooks on a plain forward
    pass (the oracle), batch boundaries included (BATCH + 7 images)."""
    from core.models import create_model
    torch.manual_seed(0)
    model = create_model(arch).eval()
    x = torch.randn(ood.BATCH + 7, 1, 28, 28)
    convs = ood.convolutions(model)
    maps = [[] for _ in convs]
    hooks = [c.register_forward_hook(lambda _m, _i, out, k=k: maps[k].append(out.float()))
             for k, c in enumerate(convs)]
    with torch.no_grad():
        logits = model(x)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        feats = model.embed(x)
    got = ood.outputs(model, x.clone(), many=many)
    torch.testing.assert_close(got.logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.feats, feats, atol=1e-4, rtol=1e-4)
    deep = maps[len(maps) - min(ood.LAYERS, len(maps)):]
    assert len(got.layers) == len(deep) and len(got.grids) == len(convs)
    for found, expected in zip(got.layers, deep):
        torch.testing.assert_close(found, torch.cat(expected).mean((2, 3)), atol=1e-4, rtol=1e-4)
    for found, expected in zip(got.grids, maps):
        out = torch.cat(expected)
        side = min(ood.GRID, int((ood.GRID_VALUES / len(convs) / out.shape[1]) ** 0.5), *out.shape[-2:]) or 1
        assert found.shape[1] <= max(ood.GRID_VALUES // len(convs), out.shape[1])
        torch.testing.assert_close(found, grid_means(out, side), atol=1e-4, rtol=1e-4)
    assert got.vector().shape == (len(x), sum(g.shape[1] for g in got.grids) + feats.flatten(1).shape[1] + 10)
