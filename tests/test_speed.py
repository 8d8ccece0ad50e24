"""The lean training step (issue 11): what it records and what its shortcuts must not change.

Speed itself is measured by `python -m core bench`, never here; these tests check that each
shortcut gives the same result as the plain way of doing the same thing.
"""
from __future__ import annotations

import copy

import pytest
import torch

from core.config import ConfigError, TrainConfig
from core.models import list_models
from core.store.folder import HISTORY_COLUMNS
from core.store.runs import load_model, load_run
from core.training.loop import build_trainee
from core.training.parts import EMA
from tests.helpers import resume_matches_unbroken, train_tiny


def test_history_splits_each_epoch_into_training_and_validation_seconds(tmp_path):
    run = load_run(train_tiny(tmp_path, "mlp", train_limit=2000), tmp_path)
    h = run.history
    assert list(h.columns) == HISTORY_COLUMNS and len(h) == 2
    assert (h["train_seconds"] > 0).all() and (h["val_seconds"] > 0).all()
    # the parts add up to the epoch's wall time (each rounded to 0.1 ms)
    assert ((h["train_seconds"] + h["val_seconds"] - h["seconds"]).abs() <= 2e-4).all()
    assert run.metrics["seconds"] == pytest.approx(h["seconds"].sum(), abs=1e-3)


@pytest.mark.parametrize("arch", list_models())
def test_the_layout_a_trainee_reports_is_the_one_its_weights_are_in(arch):
    """The oracle is the tensors themselves: the layout the trainee reports (and a run records)
    is the memory format its convolution weights really have; a model without convolutions is
    never channels_last, and channels_last=False gives plain contiguous weights."""
    def conv_layouts(trainee) -> set[bool]:
        weights = [m.weight for m in trainee.model.modules() if isinstance(m, torch.nn.Conv2d)]
        # with one input channel, or a 1x1 kernel, both layouts are the same memory: they tell nothing
        telling = [w for w in weights if w.is_contiguous() != w.is_contiguous(memory_format=torch.channels_last)]
        return {w.is_contiguous(memory_format=torch.channels_last) for w in telling}
    trainee = build_trainee(TrainConfig(arch=arch, device="cpu"), torch.device("cpu"), steps_per_epoch=10)
    layouts = conv_layouts(trainee)
    assert layouts in (set(), {True}, {False})  # one layout for the whole model
    assert trainee.channels_last == (layouts == {True})
    forced = build_trainee(TrainConfig(arch=arch, device="cpu", channels_last=False), torch.device("cpu"), 10)
    assert forced.channels_last is False and conv_layouts(forced) in (set(), {False})
    if layouts:  # asked for, a convolutional model gets it
        asked = build_trainee(TrainConfig(arch=arch, device="cpu", channels_last=True), torch.device("cpu"), 10)
        assert asked.channels_last is True and conv_layouts(asked) == {True}


@pytest.mark.slow
def test_a_run_records_the_layout_it_trained_in(tmp_path):
    lenet = load_run(train_tiny(tmp_path, "lenet", epochs=1, train_limit=500), tmp_path)
    plain = load_run(train_tiny(tmp_path, "lenet", epochs=1, train_limit=500, channels_last=False), tmp_path)
    assert lenet.metrics["channels_last"] is True and plain.metrics["channels_last"] is False
    # the layout changes the arithmetic's order only: the same weights come out, to float tolerance
    a, b = load_model(lenet.run_id, tmp_path).state_dict(), load_model(plain.run_id, tmp_path).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4)


def test_the_ema_update_is_the_lerp_of_every_float_tensor_and_copies_the_rest():
    """Oracle: the average computed the plain way, tensor by tensor from state_dict()."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 26 * 26, 10))
    ema = EMA(model, decay=0.99)
    expected = copy.deepcopy(ema.module.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for n in range(1, 6):
        model.train()
        loss = model(torch.randn(8, 1, 28, 28)).square().mean()  # BatchNorm's buffers move too
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        d = min(0.99, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            expected[k] = expected[k] * d + v * (1 - d) if v.is_floating_point() else v.clone()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)
    assert ema.module.state_dict()["1.num_batches_tracked"].item() == 5


@pytest.mark.slow
def test_an_adam_batchnorm_channels_last_run_resumes_to_the_unbroken_runs_result(tmp_path):
    """speedrun trains with fused Adam, BatchNorm and channels_last: a resume restores all of it."""
    cfg = TrainConfig(arch="speedrun", epochs=2, train_limit=3000, ema=True, device="cpu", seed=0)
    a, b = resume_matches_unbroken(cfg, tmp_path)
    assert a.test_acc == b.test_acc


def test_adam_betas_are_recipe_knobs_and_older_configs_keep_the_ones_they_used():
    assert (TrainConfig(arch="speedrun").beta1, TrainConfig(arch="speedrun").beta2) == (0.7, 0.9)
    assert TrainConfig(arch="lenet").beta1 == 0.9
    fields = {"arch": "speedrun", "optimizer": "adamw", "lr": 0.004}
    # format 2 had no betas: torch's defaults trained it, whatever today's recipe says
    old = TrainConfig.from_dict({"format": 2, **fields})
    assert (old.beta1, old.beta2) == (0.9, 0.999)
    assert TrainConfig.from_dict({"format": 3, **fields}).beta1 == 0.7
    with pytest.raises(ConfigError, match="beta2 must be in"):
        TrainConfig(arch="lenet", beta2=1.0)
    from core.training.parts import build_optimizer
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, TrainConfig(arch="speedrun"))
    assert opt.param_groups[0]["betas"] == (0.7, 0.9)
