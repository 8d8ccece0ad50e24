"""The "exposure" detector's classifier: outlier exposure (Hendrycks, Mazeika & Dietterich 2019) on
a run's frozen features. Three small scikit-learn MLPs (two hidden layers of 64 units) learn to tell
the run's own training digits (some of them redrawn as the Sketch pad draws them) from the lab's
exposure images (core.notadigit.exposure), reading what the model computes at every depth
(core.notadigit.detector.Outputs.vector). The score of an image is the members' mean log-odds of "not a digit".

What is kept is plain tensors (the scaler's mean and scale, each member's weights and biases), and
the score is their forward pass here, the same numbers as scikit-learn's predict_proba (tested, to
the half precision the weights are kept in), so the run folder holds no pickle. The threshold is
set on these scores, after the rounding.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

MEMBERS = 3           # MLPs averaged, each from its own seed: three small ones vary less than one of their size
HIDDEN = (64, 64)     # two layers: with the packaged fonts' letters among the exposure images, one of 32 left
                      # `robust` at 85% of the selection half, two of 64 at 90-91% (docs/not-a-digit.md)
ALPHA = 1e-3          # L2 penalty
MAX_ITER = 200        # Adam epochs at most


def fit_head(inliers: np.ndarray, outliers: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fitted members as tensors, from feature vectors of digits (label 0) and not (label 1)."""
    # heavy: scikit-learn, only for a fit (a kept head is scored by head_scores, with torch)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    x = np.concatenate([inliers, outliers]).astype(np.float32)
    y = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    scaler = StandardScaler().fit(x)
    scaled = scaler.transform(x)
    state = {"head_mean": torch.from_numpy(scaler.mean_).float(), "head_scale": torch.from_numpy(scaler.scale_).float()}
    for member in range(MEMBERS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # MAX_ITER is a budget, not a failure
            fitted = MLPClassifier(HIDDEN, alpha=ALPHA, max_iter=MAX_ITER, random_state=seed + member).fit(scaled, y)
        for depth, (weights, bias) in enumerate(zip(fitted.coefs_, fitted.intercepts_)):
            state[f"head{member}_w{depth}"] = torch.from_numpy(weights).half()  # kept as half: half the bytes in a shipped run
            state[f"head{member}_b{depth}"] = torch.from_numpy(bias).half()
    return state


def members(state: dict[str, torch.Tensor]) -> int:
    return sum(key.startswith("head") and key.endswith("_w0") for key in state)


def depths(state: dict[str, torch.Tensor], member: int) -> int:
    """How many weight matrices member `member` keeps (its hidden layers and the output)."""
    return sum(key.startswith(f"head{member}_w") for key in state)


def head_scores(state: dict[str, torch.Tensor], vectors: torch.Tensor) -> np.ndarray:
    """The members' mean log-odds that each feature vector (N, D) is not a digit; higher: less
    like a digit."""
    x = (vectors.float() - state["head_mean"]) / state["head_scale"]
    found = []
    for member in range(members(state)):
        h = x
        layers = depths(state, member)
        for depth in range(layers):
            h = h @ state[f"head{member}_w{depth}"].float() + state[f"head{member}_b{depth}"].float()
            if depth < layers - 1:
                h = torch.relu(h)
        found.append(h[:, 0])
    return torch.stack(found).mean(0).double().numpy()
