"""The exposure detector (core.notadigit.head, core.notadigit.exposure): a classifier of a run's
features taught what is not a digit. On planted features whose answer is known, against
scikit-learn's own predictions, and its images kept apart from the set that measures it."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from core.notadigit import detector as ood
from core.notadigit import exposure
from core.notadigit import nondigits as notdigits
from core.notadigit.evaluation import auroc_fpr
from core.notadigit.head import ALPHA, HIDDEN, MAX_ITER, MEMBERS, fit_head, head_scores


def gaussians(rng, n, d=8, at=(0, 1)):
    """Gaussian classes around 6 * e_k for k in `at`, with their labels."""
    labels = np.arange(n) % len(at)
    return rng.normal(size=(n, d)) + 6.0 * np.eye(d)[np.array(at)[labels]], labels


def as_outputs(feats: np.ndarray) -> ood.Outputs:
    """Features standing for a model's outputs; vector() reads them beside ten zero logits."""
    x = torch.tensor(feats).float()
    return ood.Outputs(torch.zeros(len(x), 10), x, [], [])


def test_a_planted_outlier_cluster_is_told_from_the_classes_after_seeing_other_outliers():
    """Taught with broad noise as its "not a digit", the detector flags a cluster it never saw
    (AUROC near 1) and cannot tell two samples of the classes apart (near 0.5)."""
    rng = np.random.default_rng(0)
    train, labels = gaussians(rng, 300)
    drawn, _ = gaussians(rng, 60)
    broad = rng.uniform(-15, 15, size=(600, 8))
    state = ood.fit_state("exposure", as_outputs(train), torch.tensor(labels),
                          exposure=ood.Exposure(as_outputs(drawn), as_outputs(broad)))
    inside = ood.score("exposure", state, as_outputs(gaussians(rng, 400)[0]))
    unseen = ood.score("exposure", state, as_outputs(gaussians(rng, 200, at=(2,))[0]))
    assert auroc_fpr(unseen, inside)[0] > 0.99
    same = ood.score("exposure", state, as_outputs(gaussians(rng, 400)[0]))
    assert 0.4 < auroc_fpr(same, inside)[0] < 0.6


def test_the_kept_head_scores_as_scikit_learn_predicts():
    """The forward pass over the kept tensors gives each member's log-odds as scikit-learn's
    predict_proba does (the oracle: the same members fitted again), averaged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(1)
    inliers, outliers = rng.normal(size=(120, 5)), rng.normal(0.7, 1.3, size=(120, 5))  # overlapping
    state = fit_head(inliers, outliers, seed=4)
    probe = rng.normal(0.3, 1.1, size=(50, 5))
    x = np.concatenate([inliers, outliers]).astype(np.float32)
    scaler = StandardScaler().fit(x)
    odds = []
    for member in range(MEMBERS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted = MLPClassifier(HIDDEN, alpha=ALPHA, max_iter=MAX_ITER, random_state=4 + member).fit(
                scaler.transform(x), np.r_[np.zeros(120), np.ones(120)])
        p = fitted.predict_proba(scaler.transform(probe.astype(np.float32)))[:, 1]
        odds.append(np.log(p) - np.log1p(-p))
    np.testing.assert_allclose(head_scores(state, torch.tensor(probe).float()), np.mean(odds, 0), rtol=1e-2, atol=1e-2)


def test_fitting_without_the_exposure_images_is_refused_in_words():
    with pytest.raises(ValueError, match="exposure images"):
        ood.fit_state("exposure", as_outputs(np.zeros((4, 3))), torch.zeros(4, dtype=torch.long))


@pytest.mark.slow  # a second or more
def test_the_exposure_images_are_deterministic_and_apart_from_the_measuring_set():
    first, again = exposure.make_exposure(per_kind=40), exposure.make_exposure.__wrapped__(per_kind=40)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (40 * 3 + 10 + 60, 28, 28) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1
    assert (first.reshape(len(first), -1).max(1) > 0.25).all()  # each has ink (the packaged hairline faces are faint)
    typefaces = {Path(path).name for path in exposure.packaged_fonts()} | set(exposure.FONTS)
    assert not typefaces & set(notdigits.FONTS)
    assert not any(name.lower().startswith("dejavu") for name in typefaces)
    assert exposure.SEED != 0  # notdigits.make_set's
    measuring = notdigits.make_set(b"", seed=0).images.reshape(-1, 784)
    taught = first.reshape(-1, 784)
    nearest = np.sqrt(((taught[:, None, :] - measuring[None]) ** 2).sum(-1)).min(1)
    assert nearest.min() > 1.0  # not one image of the measuring set among them


@pytest.mark.slow  # a second or more
def test_every_packaged_font_draws_each_letter_and_the_set_holds_them():
    """The seven packaged families are installed and each of their files draws every letter (none
    as the font's "missing" box); the set's last 3 * per_kind // 2 images are new letters, none of
    them one of the STIX and Computer Modern glyphs before them."""
    fonts = exposure.packaged_fonts()
    families = {Path(path).parent.parent.name for path in fonts}
    assert families == set(exposure.PACKAGED)
    rng = np.random.default_rng(0)
    for font in fonts:
        for char in notdigits.LETTERS:
            drawn = exposure._glyph(char, font, rng)
            assert drawn is not None and drawn.max() > 0.25, f"{Path(font).name} cannot draw {char!r}"
    per_kind = 40
    made = exposure.make_exposure(per_kind=per_kind)
    letters = made[exposure.count(per_kind) - 3 * per_kind // 2:]
    assert len({Path(path).name for path in fonts}) == len(fonts) >= 40
    first = made[:per_kind].reshape(per_kind, -1)
    distance = np.sqrt(((letters.reshape(len(letters), -1)[:, None] - first[None]) ** 2).sum(-1)).min(1)
    assert distance.min() > 0.5


def test_the_exposure_images_are_kept_once_drawn_reused_and_drawn_again_when_damaged(tmp_path):
    make = exposure.make_exposure.__wrapped__  # past the process's memo: what a new process does
    drawn = make(per_kind=20)
    kept = make(per_kind=20, keep_in=str(tmp_path))
    [path] = tmp_path.glob("exposure-20-*.npy")
    np.testing.assert_array_equal(kept, drawn)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), drawn)
    stamp = path.stat().st_mtime_ns
    np.testing.assert_array_equal(make(per_kind=20, keep_in=str(tmp_path)), drawn)
    assert path.stat().st_mtime_ns == stamp  # read back, not drawn and written again
    for damage in (path.read_bytes()[: path.stat().st_size // 2],  # cut short
                   b"\x93NUMPY" + b"\x00" * 40,  # not an array
                   None):  # an array of the wrong size
        if damage is None:
            np.save(path, drawn[:5])
        else:
            path.write_bytes(damage)
        again = make(per_kind=20, keep_in=str(tmp_path))
        np.testing.assert_array_equal(again, drawn)
        np.testing.assert_array_equal(np.load(path, allow_pickle=False), drawn)  # and kept whole again
    stale = tmp_path / "exposure-20-2-0000000000000000.npy"  # drawn by other code: left for the new one
    np.save(stale, drawn)
    path.unlink()
    make(per_kind=20, keep_in=str(tmp_path))
    assert not stale.exists() and path.exists()
    blocked = tmp_path / "a file"  # a folder that cannot be made: drawn, nothing kept, no error
    blocked.write_text("not a folder")
    np.testing.assert_array_equal(make(per_kind=20, keep_in=str(blocked / "exposure")), drawn)


def test_the_digits_own_part_is_each_digit_inverted_and_faint_specks():
    digits = np.random.default_rng(2).uniform(0, 1, size=(7, 28, 28)).astype(np.float32)
    made = exposure.from_digits(digits)
    np.testing.assert_allclose(made[:7], 1.0 - digits)
    specks = made[7:]
    assert specks.shape == (7, 28, 28)
    assert (specks.max(axis=(1, 2)) > 0).all() and specks.max() <= 0.6
    assert ((specks > 0).sum(axis=(1, 2)) < 7 * 36 + 1).all()  # at most seven 6x6 squares of grey
