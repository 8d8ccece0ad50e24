"""A run's robustness report: its figures against their definitions, its checks, and its cache."""
from __future__ import annotations

import json

import pytest

from core.analysis import robustness
from core.data.corruptions import CORRUPTIONS
from core.store.folder import ROBUSTNESS, WEIGHTS
from core.store.reference import reference_ids
from core.store.runs import load_run
from tests.helpers import REPO, cli_result, require_mnist


@pytest.mark.slow
def test_a_report_is_measured_kept_and_measured_again_for_new_weights(trained_runs, tmp_path):
    root = trained_runs.copy_to(tmp_path / "runs")
    run_id = trained_runs.ids["mlp"]
    first = robustness.robustness(run_id, root, require_mnist(), images=200)
    assert [row["corruption"] for row in first["corruptions"]] == list(CORRUPTIONS)
    assert first["mean_corruption_error"] == pytest.approx(
        sum(100 - row["accuracy"] for row in first["corruptions"]) / len(CORRUPTIONS))
    pgd = [row for row in first["attacks"] if row["attack"] == "pgd"]
    assert [row["epsilon"] for row in pgd] == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert (pgd[-1]["steps"], pgd[-1]["restarts"]) == (50, 10) and all(row["images"] == 200 for row in pgd)
    assert first["checks"]["unbounded_accuracy"] == 0.0 and first["checks"]["falls_with_eps"]
    assert json.loads((root / run_id / ROBUSTNESS).read_text()) == first
    assert robustness.robustness(run_id, root, require_mnist(), images=200) == first  # kept: not measured again
    weights = root / run_id / WEIGHTS
    weights.write_bytes(weights.read_bytes() + b" ")
    assert robustness.cached(run_id, root) is None  # new weights, a new report


def test_the_cli_refuses_a_run_still_training(tmp_path):
    from core.config import TrainConfig
    from core.store.writer import RunWriter
    writer = RunWriter.create(TrainConfig(arch="mlp", name="live").to_dict(), root=tmp_path)
    try:
        writer.start()
        proc = cli_result("--checkpoints", str(tmp_path), "robustness", writer.run_id)
        assert proc.returncode == 2 and "still running" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    finally:
        writer.release()
    assert not (tmp_path / writer.run_id / ROBUSTNESS).exists()


def test_the_robustness_page_draws_the_kept_report_and_attacks_the_gallery(lab_env, trained_runs, tmp_path):
    import torch

    from core.analysis import attacks
    from core.data.mnist import load_mnist
    from core.store.runs import load_model
    from tests.test_app import frame_with, open_page
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    run_id = trained_runs.ids["mlp"]
    kept = robustness.robustness(run_id, root, require_mnist(), images=100)
    at = open_page("robustness")
    at.multiselect(key="rob_runs").set_value([run_id]).run()
    assert not at.exception, [e.value for e in at.exception]
    checks = frame_with(at, "PGD-100x20").iloc[0]
    assert checks["PGD-50x10 at 0.3"] == kept["checks"]["eps_0.3"]["pgd_50x10"]
    assert checks["passed"] == kept["checks"]["passed"]
    curves = [c for c in at.get("vega_lite_chart")]
    assert len(curves) == 2  # attacks and corruptions
    at.selectbox(key="rob_what").set_value("FGSM").run()
    at.select_slider(key="rob_eps").set_value(0.2).run()
    assert not at.exception, [e.value for e in at.exception]
    mnist = load_mnist(require_mnist())
    pixels = mnist.test_images[:8].float().div(255).unsqueeze(1)
    model = load_model(run_id, root)
    attacked = attacks.fgsm(model, pixels, mnist.test_labels[:8].long(), 0.2)
    with torch.no_grad():
        after = attacks.PixelModel(model)(attacked).argmax(1).tolist()
    rows = [list(element.proto.imgs) for element in at.get("image") if len(element.proto.imgs) == 8]
    assert [img.caption.split()[1] for img in rows[1]] == [str(d) for d in after]


@pytest.mark.parametrize("run_id", [i for i in reference_ids(REPO / "checkpoints")
                                    if not load_run(i, REPO / "checkpoints").config.get("sweep")])
def test_folding_batchnorm_for_the_attacks_keeps_every_models_answers(run_id, mnist_root):
    """The report attacks a copy with BatchNorm folded into the convolutions: its logits are the
    model's own to float rounding, and its digits the same, for every shipped architecture."""
    import torch

    from core.data.mnist import load_mnist
    from core.models import folded
    from core.store.runs import load_model
    model = load_model(run_id, REPO / "checkpoints")
    x = (load_mnist(mnist_root).test_images[:500].float().div(255).unsqueeze(1) - 0.1307) / 0.3081
    with torch.no_grad():
        theirs, ours = model(x), folded(load_model(run_id, REPO / "checkpoints"))(x)
    assert torch.allclose(ours, theirs, atol=1e-4) and torch.equal(ours.argmax(1), theirs.argmax(1))
