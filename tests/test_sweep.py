"""core.training.grids's list grammar and its views of sweep runs, on `Run`s made in memory."""
from __future__ import annotations

import pytest

from core.training import grids as sweep
from core.errors import LabError
from tests.helpers import history_rows, make_run


def test_parse_values():
    assert sweep.parse_values("0.01, 0.1 0.01;1e-3") == [0.01, 0.1, 0.001]
    assert sweep.parse_values("32,64", int, "batch sizes") == [32, 64]
    for text, message in (("", "at least one"), ("0.1, fast", "'fast'"), ("64, 12.5", "whole number"),
                          ("nan", "finite")):
        with pytest.raises(LabError, match=message):  # the page and the CLI show it as one line
            sweep.parse_values(text, int if "12.5" in text else float)


def test_sweep_table_and_cells():
    runs = [make_run("s1", sweep="sweep-1", lr=0.1, batch_size=64, history=history_rows()),
            make_run("s2", sweep="sweep-1", lr=0.01, batch_size=64, status="queued"),
            make_run("s3", sweep="sweep-0", lr=0.1, batch_size=32), make_run("x")]
    assert sweep.sweep_ids(runs) == ["sweep-1", "sweep-0"]
    table = sweep.sweep_table(runs, "sweep-1")
    assert list(table.columns) == sweep.SWEEP_COLUMNS
    assert table["run_id"].tolist() == ["s2", "s1"]  # sorted by learning rate
    cells = sweep.sweep_cells(table)
    assert cells["label"].tolist() == ["queued", "95.00"] and cells["lr_text"].tolist() == ["0.01", "0.1"]


def test_the_page_sends_the_ray_driver_every_knob_of_the_sweeps_config():
    """What the Sweep page hands `sweep --ray` reads back, through the real parser, as the same
    config: nothing the caller set is dropped on the way to the cluster (Ray is not needed)."""
    from core.cli import build_parser
    from core.commands import config_from_args
    from core.config import TrainConfig
    from core.training.raylaunch import sweep_args
    base = TrainConfig(arch="cnn16k", epochs=3, train_limit=2000, device="cpu", seed=7, optimizer="adamw",
                       lr=0.003, batch_size=64, weight_decay=1e-4, ema=False, augment="none", val_size=900)
    args = build_parser().parse_args(sweep_args(base, [0.003, 0.01], [64, 128]))
    assert args.lr == "0.003,0.01" and args.batch_size == "64,128"
    assert config_from_args(args, lr=0.003, batch_size=64) == base
