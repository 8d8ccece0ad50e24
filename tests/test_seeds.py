"""Issue 13, part 5: one recipe over several seeds (`train --seeds`, the Train page's Seeds) as
one seed group; the group's accuracy as mean ± std and its curves as bands, each checked
against numpy (sample std, ddof=1) computed here from the runs themselves."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.store import tables
from core.config import TrainConfig
from tests.helpers import run_cli, history_rows, make_run, require_mnist

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TIMEOUT = 60
TINY = ("--arch", "mlp", "--epochs", "1", "--train-limit", "500", "--device", "cpu", "--quiet")


def text(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}%"


@pytest.fixture(scope="module")
def seed_group(tmp_path_factory):
    """A seed group really trained by `train --seeds 0,1` (two tiny mlp runs): (root, stdout)."""
    root = tmp_path_factory.mktemp("seeds")
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "train", *TINY,
                             "--epochs", "2", "--seeds", "0,1")
    assert code == 0, err
    return root, out


# --- the config ----------------------------------------------------------------------------

def test_group_is_a_run_field_not_a_recipe_field_and_old_configs_read_as_none():
    from core.config import RECIPE_FIELDS
    assert "group" not in RECIPE_FIELDS
    assert TrainConfig(arch="mlp").group is None
    old = TrainConfig(arch="mlp", seed=3).to_dict()
    del old["group"]
    assert TrainConfig.from_dict(old).group is None
    assert TrainConfig.from_dict({**old, "group": "g"}).group == "g"
    from core.config import ConfigError
    with pytest.raises(ConfigError, match="group id"):
        TrainConfig(arch="mlp", group="")


# --- the CLI -------------------------------------------------------------------------------

def test_cli_seeds_trains_one_run_per_seed_in_one_group_and_prints_mean_and_std(seed_group):
    from core.store.runs import list_runs
    root, out = seed_group
    runs = list_runs(root)
    assert len(runs) == 2 and {r.status for r in runs} == {"finished"}
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    (group,) = {r.config["group"] for r in runs}
    assert group.startswith("seeds-")
    assert {r.config["epochs"] for r in runs} == {2} and {r.config["train_limit"] for r in runs} == {500}
    for run in runs:  # each run's result is printed
        assert f"{run.run_id}  seed {run.config['seed']}  finished" in out
        assert f"test {run.test_acc:.2f}%" in out
    test = np.array([r.test_acc for r in runs])
    val = np.array([r.val_acc for r in runs])
    last = out.strip().splitlines()[-1]
    assert last == (f"group {group}: test accuracy {text(test.mean(), test.std(ddof=1))}, "
                    f"val {text(val.mean(), val.std(ddof=1))}, over the finished runs: 2 runs")


@pytest.mark.parametrize("seeds, words", [
    ("x", "'x' in the seeds is not a whole number"),
    ("0,-1", "seed must be a whole number 0..4,294,967,295"),
    ("0,4294967296", "seed must be a whole number 0..4,294,967,295 (torch keeps 32 bits of a seed"),
    (",", "give at least one of the seeds"),
    (",".join(map(str, range(21))), "at most 20 seeds, got 21"),
    ("0.5", "'0.5' in the seeds is not a whole number"),
])
def test_cli_refuses_a_bad_seed_list_in_one_line_and_creates_no_run(tmp_path, seeds, words):
    root = tmp_path / "runs"
    code, out, err = run_cli("--checkpoints", str(root), "train", *TINY, "--seeds", seeds)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert not root.exists()


@pytest.mark.parametrize("extra, option", [(("--seed", "3"), "--seed"), (("--resume", "x"), "--resume"),
                                           (("--run-id", "x"), "--run-id")])
def test_cli_seeds_refuses_seed_resume_and_run_id(tmp_path, extra, option):
    root = tmp_path / "runs"
    code, _, err = run_cli("--checkpoints", str(root), "train", *TINY, "--seeds", "0,1", *extra)
    assert code == 2 and err.count("\n") == 1
    assert err == f"error: --seeds gives each run its seed; leave out {option}\n"
    assert not root.exists()


# --- the tables ----------------------------------------------------------------------------

def grouped_runs() -> list:
    """Hand-made runs: group a (3 runs), group b (1 run), one ungrouped run."""
    runs = []
    for i, (test, vals) in enumerate([(97.1, (90.0, 95.5)), (97.9, (91.0, 96.25)), (98.4, (93.5, 97.0))]):
        runs.append(make_run(f"20260101-00000{i}-mlp", group="seeds-a", seed=i, history=history_rows(
            seconds=(2.0 + i, 3.0), val_acc=vals), metrics={"test_accuracy": test}))
    runs.append(make_run("20260102-000000-mlp", group="seeds-b", history=history_rows(),
                         metrics={"test_accuracy": 96.0}))
    runs.append(make_run("20260103-000000-lenet", arch="lenet", history=history_rows(),
                         metrics={"test_accuracy": 99.0}))
    return runs


def test_group_table_is_numpys_mean_and_sample_std():
    runs = grouped_runs()
    table = tables.group_table(runs).set_index("group")
    assert list(table.index) == ["seeds-b", "seeds-a"]  # newest group first; ungrouped runs left out
    test = np.array([97.1, 97.9, 98.4])
    val = np.array([95.5, 96.25, 97.0])  # each run's last epoch
    a = table.loc["seeds-a"]
    assert (a.runs, a.n, a.arch) == (3, 3, "mlp")
    assert a.test_mean == pytest.approx(test.mean()) and a.test_std == pytest.approx(test.std(ddof=1))
    assert a.val_mean == pytest.approx(val.mean()) and a.val_std == pytest.approx(val.std(ddof=1))
    assert a.test_text == text(test.mean(), test.std(ddof=1))
    b = table.loc["seeds-b"]  # one run: std is undefined
    assert b.n == 1 and b.test_mean == 96.0 and math.isnan(b.test_std) and b.test_text == "96.00 ± –%"
    groups = tables.run_table(runs)["group"]
    assert groups[:4].tolist() == ["seeds-a"] * 3 + ["seeds-b"] and pd.isna(groups[4])


def test_group_table_counts_only_runs_with_a_test_accuracy():
    runs = grouped_runs()[:3]
    runs.append(make_run("20260101-000009-mlp", status="running", group="seeds-a", history=history_rows()))
    a = tables.group_table(runs).iloc[0]
    assert (a.runs, a.n) == (4, 3)
    assert a.test_std == pytest.approx(np.std([97.1, 97.9, 98.4], ddof=1))
    assert tables.group_table([]).empty and list(tables.group_table([]).columns) == tables.GROUP_COLUMNS


def test_group_curves_are_the_mean_and_std_per_epoch():
    runs = grouped_runs()
    bands = tables.group_curves(runs)
    assert set(bands["group"]) == {"seeds-a", "seeds-b"}
    a = bands[(bands.group == "seeds-a") & (bands.panel == "validation accuracy (%)")].set_index("epoch")
    per_epoch = np.array([[90.0, 91.0, 93.5], [95.5, 96.25, 97.0]])
    assert list(a.index) == [1, 2] and list(a.n) == [3, 3]
    np.testing.assert_allclose(a["value"], per_epoch.mean(axis=1))
    np.testing.assert_allclose(a["std"], per_epoch.std(axis=1, ddof=1))
    np.testing.assert_allclose(a["lower"], per_epoch.mean(axis=1) - per_epoch.std(axis=1, ddof=1))
    np.testing.assert_allclose(a["upper"], per_epoch.mean(axis=1) + per_epoch.std(axis=1, ddof=1))
    timed = tables.group_curves(runs, x="time")  # x: the mean over the seeds of each epoch's time
    t = timed[(timed.group == "seeds-a") & (timed.panel == "train loss")].set_index("epoch")["x"]
    np.testing.assert_allclose(t, [np.mean([2.0, 3.0, 4.0]), np.mean([5.0, 6.0, 7.0])])
    b = bands[bands.group == "seeds-b"]
    assert b["std"].isna().all() and (b["n"] == 1).all()


def test_group_table_and_curves_on_real_runs(seed_group):
    from core.store.runs import list_runs
    root, _ = seed_group
    runs = list_runs(root)
    row = tables.group_table(runs).iloc[0]
    test = [r.test_acc for r in runs]
    assert row.n == 2 and row.test_mean == pytest.approx(np.mean(test))
    assert row.test_std == pytest.approx(np.std(test, ddof=1))
    bands = tables.group_curves(runs)
    for panel, column in (("train loss", "train_loss"), ("validation accuracy (%)", "val_acc")):
        got = bands[bands.panel == panel].set_index("epoch")
        matrix = np.array([pd.to_numeric(r.history[column]).to_numpy() for r in runs])  # runs x epochs
        np.testing.assert_allclose(got["value"], matrix.mean(axis=0))
        np.testing.assert_allclose(got["std"], matrix.std(axis=0, ddof=1))


# --- the dashboard -------------------------------------------------------------------------

def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{page}.py").run()  # "/" is the first page
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_compare_shows_each_groups_mean_and_std_and_draws_it_as_a_band(lab_env, seed_group, trained_runs, tmp_path):
    import shutil
    from core.store.runs import list_runs
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    for folder in seed_group[0].iterdir():
        if not folder.name.startswith("."):
            shutil.copytree(folder, root / folder.name)
    group_runs = [r for r in list_runs(root) if r.config.get("group")]
    (group,) = {r.config["group"] for r in group_runs}
    test = np.array([r.test_acc for r in group_runs])
    val = np.array([r.val_acc for r in group_runs])
    at = open_page("compare")
    groups = next(d.value for d in at.dataframe if "test_text" in d.value.columns).set_index("group")
    assert groups.loc[group, "test_text"] == text(test.mean(), test.std(ddof=1))
    assert groups.loc[group, "val_text"] == text(val.mean(), val.std(ddof=1))
    runs_frame = next(d.value for d in at.dataframe if "run_id" in d.value.columns).set_index("run_id")
    assert {runs_frame.loc[r.run_id, "group"] for r in group_runs} == {group}
    at.multiselect(key="compare_runs").set_value([r.run_id for r in group_runs]).run()  # a group member picked
    chart = next(c for c in at.get("vega_lite_chart") if '"accuracy (%)"' in c.proto.spec)  # the accuracy curves
    spec = chart.proto.spec
    assert '"area"' in spec and '"y2"' in spec
    import pyarrow as pa
    drawn = pd.concat([pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets])
    band = drawn[drawn["run"] == f"{group} (mean ± std, 2 runs)"]
    band = band[band["panel"] == "validation accuracy (%)"].set_index("epoch").sort_index()
    matrix = np.array([pd.to_numeric(r.history["val_acc"]).to_numpy() for r in group_runs])
    np.testing.assert_allclose(band["value"], matrix.mean(axis=0))
    np.testing.assert_allclose(band["upper"] - band["value"], matrix.std(axis=0, ddof=1))
    at.toggle(key="compare_bands").set_value(False).run()  # as before: one line per run
    assert not at.exception
    assert not any('"area"' in c.proto.spec for c in at.get("vega_lite_chart"))


def test_train_page_with_seeds_launches_one_run_per_seed_in_one_group(lab_env, monkeypatch):
    from core.training import jobs
    from core.store.runs import list_runs
    launched = []

    def fake_launch(writer, root=None, data_root=None):
        launched.append(writer.run_id)
        writer.release()
    monkeypatch.setattr(jobs, "launch_prepared", fake_launch)
    monkeypatch.setattr(jobs, "launch", lambda config: pytest.fail("a seed group launches prepared runs"))
    at = open_page("train")
    at.selectbox(key="train_arch").set_value("mlp").run()
    at.number_input(key="train_epochs").set_value(2)
    at.text_input(key="train_seeds").set_value("4, 5, 6")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = list_runs(lab_env.empty)
    assert sorted(launched) == sorted(r.run_id for r in runs) and len(runs) == 3
    assert sorted(r.config["seed"] for r in runs) == [4, 5, 6]
    (group,) = {r.config["group"] for r in runs}
    assert {r.config["epochs"] for r in runs} == {2}
    assert [s.value for s in at.success if group in s.value]


def test_train_page_refuses_a_bad_seed_list_and_creates_no_run(lab_env, monkeypatch):
    from core.training import jobs
    monkeypatch.setattr(jobs, "launch_prepared", lambda *a, **k: pytest.fail("nothing should start"))
    at = open_page("train")
    at.text_input(key="train_seeds").set_value("0, x")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert [e.value for e in at.error] == ["'x' in the seeds is not a whole number"]
    assert not any(lab_env.empty.iterdir())
