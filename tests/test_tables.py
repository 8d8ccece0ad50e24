"""core.store.tables on `Run`s made in memory, checked against the same computation done another way."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.store import tables
from core.store.folder import HISTORY_COLUMNS
from core.store.runs import Run, is_resumable
from tests.helpers import history_rows, make_run


def test_seconds_per_epoch_and_eta():
    run = make_run(history=history_rows(seconds=(2.0, 4.0)))
    assert tables.seconds_per_epoch(run) == pytest.approx(3.0)
    assert tables.seconds_per_epoch(make_run(metrics={"seconds": 12.0, "epochs": 4})) == pytest.approx(3.0)
    assert tables.seconds_per_epoch(make_run()) is None
    progress = {"epoch": 3, "epochs": 5, "step": 25, "steps": 100, "epoch_seconds": 1.0}
    # a quarter of epoch 3 done at 3 s/epoch: 0.75 * 3 + 2 epochs * 3
    assert tables.eta_seconds(progress, run.history, 5) == pytest.approx(8.25)
    # no finished epoch yet: the current pace, 1 s for a quarter -> 4 s per epoch
    assert tables.eta_seconds(progress, make_run().history, 5) == pytest.approx(0.75 * 4 + 2 * 4)
    assert tables.eta_seconds({}, run.history) is None
    assert tables.epoch_fraction({"step": 5, "steps": 0}) == 0.0


def test_is_resumable():
    assert is_resumable(make_run(status="interrupted", history=history_rows()))
    assert not is_resumable(make_run(status="cancelled"))  # no saved epoch
    assert not is_resumable(make_run(status="finished", history=history_rows()))


def test_run_table_keeps_numbers_sortable():
    runs = [make_run("b", history=history_rows(), metrics={"test_accuracy": 97.5, "parameters": 1234}),
            make_run("a", status="queued")]
    table = tables.run_table(runs)
    assert list(table.columns) == tables.RUN_TABLE_COLUMNS
    assert table["test_acc"].dtype == np.float64 and table["parameters"].dtype == "Int64"
    assert table.sort_values("val_acc")["run_id"].tolist() == ["b", "a"]
    assert table.loc[0, "val_acc"] == 95.0 and table.loc[0, "epochs"] == 2
    assert pd.isna(table.loc[1, "test_acc"])


def test_best_run_per_arch(monkeypatch):
    monkeypatch.setattr(Run, "has_weights", property(lambda self: True))
    # chosen on the kept weights' validation accuracy (the last epoch's): run 1 has the better
    # test score and the better best-ever epoch, but the worse last one
    runs = [make_run("1", arch="lenet", history=history_rows(val_acc=(99.0, 98.0)), metrics={"test_accuracy": 99.0}),
            make_run("2", arch="lenet", history=history_rows(val_acc=(90.0, 98.5)), metrics={"test_accuracy": 98.9}),
            make_run("3", arch="mlp", history=history_rows(), metrics={"test_accuracy": 97.0}),
            make_run("4", arch="mlp", status="failed", history=history_rows(val_acc=(99, 99.9)))]
    assert [r.run_id for r in tables.best_run_per_arch(runs)] == ["3", "2"]  # registry order


def test_active_and_newest():
    runs = [make_run("q", status="queued", created="2026-01-03"),
            make_run("r", status="running", created="2026-01-04"),
            make_run("f", created="2026-01-05"), make_run("zzz-broken", created="")]
    assert [r.run_id for r in tables.active(runs)] == ["r", "q"]
    assert tables.newest(runs).run_id == "f"
    assert tables.newest([]) is None


def test_smooth_matches_pandas_ewm():
    values = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    for weight in (0.3, 0.6, 0.9):
        expected = pd.Series(values).ewm(alpha=1 - weight, adjust=True).mean().to_numpy()
        assert np.allclose(tables.smooth(values, weight), expected)
    assert np.array_equal(tables.smooth(values, 0.0), values)
    with_gap = tables.smooth([1.0, np.nan, 1.0], 0.5)
    assert np.isnan(with_gap[1]) and with_gap[2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tables.smooth(values, 1.0)


def test_curves_long_table():
    runs = [make_run("a", history=history_rows(seconds=(2.0, 4.0))), make_run("b")]
    frame = tables.curves(runs, x="time")
    assert set(frame["panel"]) == set(tables.PANELS) and set(frame["run_id"]) == {"a"}
    val = frame[frame["panel"] == "validation accuracy (%)"]
    assert val["x"].tolist() == [2.0, 6.0] and val["value"].tolist() == [90.0, 95.0]
    assert tables.curves([], x="epoch").empty
    with pytest.raises(ValueError):
        tables.curves(runs, x="step")


def test_live_curves_adds_the_epoch_in_progress():
    history = pd.DataFrame(history_rows(), columns=HISTORY_COLUMNS)
    progress = {"epoch": 3, "epochs": 5, "step": 50, "steps": 100, "train_loss": 0.2, "train_acc": 93.0}
    frame = tables.live_curves(history, progress)
    train_loss = frame[(frame["split"] == "train") & (frame["metric"] == "loss")]
    assert train_loss["epoch"].tolist() == [1, 2, 2.5] and train_loss["value"].iloc[-1] == 0.2
    assert len(tables.live_curves(history, None)) == 8  # 2 epochs x 2 splits x 2 metrics


def test_one_definition_of_resumable_for_the_page_and_the_jobs(tmp_path):
    """The Train page offers Resume where core.store.runs.is_resumable says so, and core.training.jobs.resume
    refuses exactly the others: a run interrupted before its first epoch has nothing to resume from."""
    from core.training import jobs
    from core.config import TrainConfig
    from core.errors import LabError
    from core.store.runs import load_run
    from core.store.writer import RunWriter
    assert not is_resumable(make_run(status="interrupted", history=history_rows(), kind="ensemble"))
    writer = RunWriter.create(TrainConfig(arch="mlp", name="never trained").to_dict(), root=tmp_path)
    writer.release()  # its owner is gone before an epoch: interrupted, with no epoch
    run = load_run(writer.run_id, tmp_path)
    assert run.status == "interrupted" and not is_resumable(run)
    with pytest.raises(LabError, match="is interrupted without a finished epoch; only an interrupted, cancelled or "
                                       "failed run with a finished epoch resumes"):
        jobs.resume(writer.run_id, tmp_path)
    assert load_run(writer.run_id, tmp_path).status == "interrupted"
