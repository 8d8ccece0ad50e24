"""The Search page (dashboard/views/search.py) with streamlit.testing.v1.AppTest, on real studies:
one made beforehand by `python -m core search` (real Optuna, the tiny mlp trained on real MNIST),
and real studies started from the page's form, whose driver process trains them.

The oracle of every figure is the trials' run folders, read by hand: config.json's name ("<study>
#<n>") numbers a trial, status.json says finished or cancelled (a pruned trial's run is cancelled
with "pruned by study ..."), history.csv has one row per epoch trained and its last val_acc is the
trial's validation accuracy."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import DATA, REPO, run_cli
from tests.test_app import texts

APP = REPO / "dashboard" / "app.py"
TIMEOUT = 60  # s per script run: the machine is shared with training jobs
STUDY = "tiny"
RUN_TO_END = 120  # s a study started from the form may take to finish


@pytest.fixture(scope="module")
def store(tmp_path_factory, mnist_root) -> Path:
    """A run store holding one finished study of 6 tiny mlp trials (3 epochs at most; ASHA prunes
    some after their first epoch)."""
    root = tmp_path_factory.mktemp("search") / "checkpoints"
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(DATA), "search", "--arch", "mlp",
                             "--param", "lr=0.01:1:log", "--param", "batch_size=32,128,512", "--trials", "6",
                             "--epochs", "3", "--train-limit", "2000", "--val-size", "500", "--device", "cpu",
                             "--study", STUDY, "--quiet")
    assert code == 0, out + err
    return root


def by_hand(root: Path, study: str = STUDY) -> list[dict]:
    """The study's trials from their run folders, in trial order: number, run_id, state
    (finished | pruned), epochs, val_acc, the validation curve."""
    trials = []
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        config = json.loads((folder / "config.json").read_text())
        if config.get("study") != study:
            continue
        status = json.loads((folder / "status.json").read_text())
        with open(folder / "history.csv", newline="") as f:
            history = list(csv.DictReader(f))
        if status["status"] == "finished":
            state = "finished"
        else:
            assert status["status"] == "cancelled" and status["message"].startswith("pruned by study"), status
            state = "pruned"
        trials.append({"number": int(config["name"].rsplit("#", 1)[1]), "run_id": folder.name, "state": state,
                       "epochs": len(history), "val_acc": float(history[-1]["val_acc"]),
                       "curve": [float(row["val_acc"]) for row in history]})
    return sorted(trials, key=lambda t: t["number"])


def open_search(study: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if study is not None:
        at.query_params["study"] = study
    at.switch_page("views/search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at




def chart(at: AppTest, description: str, column: str | None = None) -> tuple[dict, "pd.DataFrame"]:
    """The page's chart described as `description`: its spec and its data (its first dataset, or
    the first with `column`: the parallel coordinates' axis labels are a dataset of their own)."""
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        if spec.get("description") == description:
            frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in element.proto.datasets]
            return spec, next(f for f in frames if column is None or column in f.columns)
    raise AssertionError(f"no chart {description!r} on the page")


def wait_for_state(name: str, root: Path, wanted: str, timeout: float) -> str:
    from core.training import search
    deadline = time.monotonic() + timeout
    state = search.study_state(name, root)
    while state != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        state = search.study_state(name, root)
    return state


def fill_form(at: AppTest, name: str, *, trials: int, epochs: int, limit: int, pruner: str) -> None:
    """The form on its defaults (lr and batch_size, ranges from the mlp recipe), but a small study."""
    at.text_input(key="search_name").set_value(name)
    at.number_input(key="search_low_batch_size").set_value(32)
    at.number_input(key="search_high_batch_size").set_value(256)
    at.number_input(key="search_trials").set_value(trials)
    at.number_input(key="search_epochs").set_value(epochs)
    at.number_input(key="search_limit").set_value(limit)
    at.selectbox(key="search_pruner").set_value(pruner)
    at.selectbox(key="search_device").set_value("cpu")


# --- no study, a bad request ------------------------------------------------------------------

def test_without_a_study_the_page_says_what_to_do_and_shows_the_form(lab_env):
    at = open_search()
    assert at.title[0].value == "Search"
    assert "No study yet" in texts(at)
    assert at.multiselect(key="search_knobs").value == ["lr", "batch_size"]
    # The ranges come from the mlp recipe (lr 0.1, batch size 64): a tenth to ten times it, lr on a log scale.
    assert (at.number_input(key="search_low_lr").value, at.number_input(key="search_high_lr").value) == \
        pytest.approx((0.01, 1.0))
    assert at.checkbox(key="search_log_lr").value is True
    assert (at.number_input(key="search_low_batch_size").value, at.number_input(key="search_high_batch_size").value) \
        == (6, 640)
    assert at.number_input(key="search_epochs").value == 10  # the recipe's 20, capped


def test_a_bad_range_shows_its_one_line_error_and_creates_nothing(lab_env):
    from core.config import ConfigError
    from core.training.search import parse_param
    from dashboard.text import md_text
    at = open_search()
    at.number_input(key="search_low_lr").set_value(1.0)
    at.number_input(key="search_high_lr").set_value(0.01)
    at.button(key="search_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with pytest.raises(ConfigError) as refused:
        parse_param("lr=1.0:0.01:log")
    assert [e.value for e in at.error] == [md_text(refused.value)]
    assert not (lab_env.empty / ".studies").exists() or not any((lab_env.empty / ".studies").iterdir())
    assert not any(p.name != ".studies" for p in lab_env.empty.iterdir())  # no run either


# --- a finished study -----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_table_shows_every_trial_as_its_run_folder_says(lab_env, store):
    lab_env(store)
    trials = by_hand(store)
    assert len(trials) == 6 and any(t["state"] == "pruned" for t in trials)
    at = open_search(STUDY)
    assert at.selectbox(key="search_pick").value == STUDY
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert table["trial"].tolist() == [t["number"] for t in trials]
    assert table["state"].tolist() == [t["state"] for t in trials]
    assert table["epochs"].tolist() == [t["epochs"] for t in trials]
    assert table["val_acc"].tolist() == pytest.approx([t["val_acc"] for t in trials])
    assert table["run_id"].tolist() == [t["run_id"] for t in trials]
    assert {"lr", "batch_size"} <= set(table.columns)
    best = max((t for t in trials if t["state"] == "finished"), key=lambda t: (t["val_acc"], -t["number"]))
    assert f"Best so far: trial #{best['number']}**, {best['val_acc']:.2f}% validation accuracy" in texts(at)


@pytest.mark.slow
def test_the_charts_draw_the_best_so_far_and_pruned_curves_cut_where_they_stopped(lab_env, store):
    lab_env(store)
    trials = by_hand(store)
    at = open_search(STUDY)
    # History: x the epochs spent when each trial ended, y the best finished trial's accuracy so far.
    _, history = chart(at, "search-history")
    history = history.sort_values("trial")
    spent, best, expected_spent, expected_best = 0, None, [], []
    for t in trials:
        spent += t["epochs"]
        if t["state"] == "finished":
            best = t["val_acc"] if best is None else max(best, t["val_acc"])
        expected_spent.append(spent)
        expected_best.append(math.nan if best is None else best)
    assert history["epochs_spent"].tolist() == expected_spent
    assert history["best_so_far"].tolist() == pytest.approx(expected_best, nan_ok=True)
    # Curves: every epoch of every trial; a pruned one ends at its last epoch, before the third.
    _, curves = chart(at, "search-curves")
    for t in trials:
        rows = curves[curves["trial"] == t["number"]].sort_values("epoch")
        assert rows["epoch"].tolist() == list(range(1, t["epochs"] + 1))
        assert rows["val_acc"].tolist() == pytest.approx(t["curve"])
        assert rows["last"].tolist() == [False] * (t["epochs"] - 1) + [True]
        if t["state"] == "pruned":
            assert t["epochs"] < 3 and set(rows["state"]) == {"pruned"}
    # Parallel coordinates: one line per finished or pruned trial, each knob on 0..1 of its range.
    _, parallel = chart(at, "search-parallel", "trial")
    assert sorted(parallel["trial"]) == [t["number"] for t in trials]
    assert parallel["lr"].between(0, 1).all() and set(parallel["batch_size"]) <= {0.0, 0.5, 1.0}
    # Importance: its sentence says how many more finished trials it needs.
    finished = sum(t["state"] == "finished" for t in trials)
    if finished < 5:
        assert f"{finished} so far, {5 - finished} more needed" in texts(at)
    else:
        chart(at, "search-importance")


@pytest.mark.slow
def test_the_best_trial_and_picked_trials_open_in_compare(lab_env, store):
    lab_env(store)
    trials = by_hand(store)
    best = max((t for t in trials if t["state"] == "finished"), key=lambda t: (t["val_acc"], -t["number"]))
    at = open_search(STUDY)
    at.button(key="search_compare_best").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Compare"
    assert at.multiselect(key="compare_runs").value == [best["run_id"]]

    at = open_search(STUDY)
    finished = [t for t in sorted(trials, key=lambda t: (-t["val_acc"], t["number"])) if t["state"] == "finished"]
    assert at.multiselect(key=f"search_compare_pick_{STUDY}").value == [t["run_id"] for t in finished[:2]]
    picked = [trials[-1]["run_id"], trials[0]["run_id"]]
    at.multiselect(key=f"search_compare_pick_{STUDY}").set_value(picked).run()
    at.button(key="search_compare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Compare"
    assert at.multiselect(key="compare_runs").value == picked


@pytest.mark.slow
def test_a_damaged_study_says_why_and_a_study_without_trials_says_so(lab_env, tmp_path):
    from core.config import TrainConfig
    from core.errors import LabError
    from core.training import search
    from dashboard.text import md_text
    root = lab_env(tmp_path / "lab")
    root.mkdir()
    settings = search.Settings(study="empty", base=TrainConfig(arch="mlp", epochs=1).to_dict(),
                               params=(search.parse_param("lr=0.01:1:log"),), trials=3)
    search.new_study(settings, root)  # created, no driver yet: no trial
    broken = root / ".studies" / "broken"
    broken.mkdir()
    (broken / "settings.json").write_text("{ this is not json")
    with pytest.raises(LabError) as why:
        search.load_study("broken", root)
    at = open_search("broken")
    assert [e.value for e in at.error] == [md_text(why.value)]
    assert at.button(key="search_start")  # the rest of the page still works: the form, the picker
    at.selectbox(key="search_pick").set_value("empty").run()
    assert not at.exception and not at.error
    assert "No trial yet" in texts(at)


# --- studies started from the form -------------------------------------------------------------

@pytest.mark.slow
def test_a_study_started_from_the_form_runs_to_its_end(lab_env, request):
    from core.training import search
    at = open_search()
    fill_form(at, "from-form", trials=5, epochs=1, limit=500, pruner="none")
    at.button(key="search_start").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    root = lab_env.empty
    request.addfinalizer(lambda: search.cancel("from-form", root))  # a failed test leaves no driver behind
    assert search.study_names(root) == ["from-form"]
    assert wait_for_state("from-form", root, "finished", RUN_TO_END) == "finished", \
        (root / ".studies" / "from-form" / "driver.log").read_text()[-3000:]
    settings, _ = search.load_study("from-form", root)
    assert [p.text for p in settings.params] == ["lr=0.01:1:log", "batch_size=32:256:log"]
    assert (settings.trials, settings.pruner, settings.base["epochs"], settings.base["train_limit"]) == \
        (5, "none", 1, 500)
    trials = by_hand(root, "from-form")
    assert [t["state"] for t in trials] == ["finished"] * 5
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert table["val_acc"].tolist() == pytest.approx([t["val_acc"] for t in trials])
    _, importance = chart(at, "search-importance")  # 5 finished trials, 2 knobs: the importance shows
    assert set(importance["knob"]) == {"lr", "batch_size"}
    assert importance["importance"].sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_cancel_stops_a_running_study_and_its_trial_run_reads_cancelled(lab_env, request):
    from core.store.runs import load_run
    from core.training import search
    at = open_search()
    fill_form(at, "to-cancel", trials=50, epochs=10, limit=2000, pruner="none")
    at.button(key="search_start").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    root = lab_env.empty
    request.addfinalizer(lambda: search.cancel("to-cancel", root))
    deadline = time.monotonic() + 60
    running = []
    while not running and time.monotonic() < deadline:  # a trial training now, its run created
        time.sleep(0.5)
        if search.study_state("to-cancel", root) != "running":
            continue
        _, study = search.load_study("to-cancel", root)
        running = [r for r in search.trial_rows(study) if r["state"] == "running" and r["run_id"]
                   and load_run(r["run_id"], root).status == "running"]
    assert running, (root / ".studies" / "to-cancel" / "driver.log").read_text()[-3000:]
    at.run()
    at.button(key="search_cancel_to-cancel").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert wait_for_state("to-cancel", root, "cancelled", 60) == "cancelled"
    _, study = search.load_study("to-cancel", root)
    left = [r for r in search.trial_rows(study, live=False) if r["state"] == "interrupted"]  # training when cancelled
    assert len(left) == 1 and left[0]["number"] >= running[0]["number"]
    assert load_run(left[0]["run_id"], root).status == "cancelled"
    assert left[0]["epochs"] < 10  # stopped before its end
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [b for b in at.button if b.key == "search_cancel_to-cancel"]  # nothing to cancel now
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert table.loc[table["trial"] == left[0]["number"], "state"].tolist() == ["interrupted"]
