"""Charts that read (issue 37): the Vega-Lite spec of each chart, as the browser gets it.

Oracles: hues computed here from the hex colours (colorsys), Vega's category10 scheme written out,
the reliability diagram's bin counts from numpy's histogram, p-values from the binomial
distribution and Holm's correction done by hand, and the runs each part of Compare draws read back
from the page's own elements (AppTest, on the shipped reference runs and two really trained runs).
"""
from __future__ import annotations

import colorsys
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.analysis import calibration, robustness
from core.store.reference import reference_ids
from core.store.runs import load_predictions, load_run
from dashboard.charts import WHITE, diverging_scale, reliability_chart, run_palette
from tests.helpers import REPO, best_by_validation
from tests.test_app import frame_with, open_page
from tests.test_significance_pages import mcnemar_p, right
from tests.test_seeds import seed_group  # noqa: F401  (a fixture: a seed group really trained)

SHIPPED = REPO / "checkpoints"
RECIPES = [i for i in reference_ids(SHIPPED) if not load_run(i, SHIPPED).config.get("sweep")]
CATEGORY10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf"]  # Vega's category10: the embedding map's digit colours


def hue(colour: str) -> float:
    """Degrees on the colour wheel of a #rrggbb colour."""
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 360 * colorsys.rgb_to_hls(r, g, b)[0]


def apart(a: float, b: float) -> float:
    """Degrees between two hues, the short way round."""
    d = abs(a - b) % 360
    return min(d, 360 - d)


def layers(spec: dict) -> list[dict]:
    """Every single view of a (nested) layered spec."""
    found = []
    for part in spec.get("layer", [spec]):
        found += layers(part) if "layer" in part else [part]
    return found


def v_mark(view: dict) -> str:
    return view["mark"]["type"] if isinstance(view["mark"], dict) else view["mark"]


def rows(spec: dict, view: dict) -> pd.DataFrame:
    """The data a view of chart.to_dict() draws (its own, or its parent's)."""
    name = (view.get("data") or spec.get("data"))["name"]
    return pd.DataFrame(spec["datasets"][name])


def drawn(at) -> list[tuple[dict, dict[str, pd.DataFrame]]]:
    """Each Vega-Lite chart on an AppTest page: (its spec, its datasets by name)."""
    charts = []
    for chart in at.get("vega_lite_chart"):
        data = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets}
        charts.append((json.loads(chart.proto.spec), data))
    return charts


def chart_data(spec: dict, data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(list(data.values()), ignore_index=True) if data else pd.DataFrame()


# --- colours -------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", range(1, 11))
def test_each_run_has_its_own_hue_and_a_users_run_never_shares_a_reference_runs_family(count):
    names = [f"run {i}" for i in range(count)]
    for mine in range(count + 1):
        own = set(names[:mine])
        palette = run_palette(names, own)
        assert list(palette) == names
        hues = {n: hue(c) for n, c in palette.items()}
        for a, b in itertools.combinations(names, 2):
            assert apart(hues[a], hues[b]) >= 30, (count, mine, palette)
        for a in own:
            for b in set(names) - own:
                assert apart(hues[a], hues[b]) >= 39, (count, mine, palette)  # a family gap of 40 degrees


def test_robustness_charts_list_every_run_below_and_tell_fgsm_from_pgd():
    from dashboard.views.robustness import bars, curves
    picked = RECIPES[:5]
    reports = {load_run(i, SHIPPED).name: robustness.kept(i, SHIPPED)[0] for i in picked}
    names = list(reports)
    own = {names[-1]}  # as if the last were the user's own run
    for chart in (curves(reports, own), bars(reports, own)):
        spec = chart.to_dict()
        colour = layers(spec)[0]["encoding"]["color"]
        assert colour["scale"]["domain"] == names  # every picked run is a legend entry
        assert colour["legend"]["orient"] == "bottom" and colour["legend"]["columns"] == 2
        assert spec["autosize"]["type"] == "fit-x"  # the legend below adds height, never squeezes the plot
        colours = dict(zip(names, colour["scale"]["range"]))
        for a, b in itertools.combinations(names, 2):
            assert apart(hue(colours[a]), hue(colours[b])) >= 30
        assert set(rows(spec, layers(spec)[0])["run"]) == set(names)
    spec = curves(reports, own).to_dict()
    (lines,) = [v for v in layers(spec) if "strokeDash" in v["encoding"]]
    dash = lines["encoding"]["strokeDash"]
    assert dash["scale"]["domain"] == ["FGSM", "PGD"]
    assert dash["scale"]["range"][0] != dash["scale"]["range"][1]
    assert dash["legend"]["symbolStrokeColor"]  # the legend's dashes are drawn, not transparent
    assert set(rows(spec, lines)["attack"]) == {"FGSM", "PGD"}
    corruption_axis = bars(reports, own).to_dict()["encoding"]["x"]["axis"]
    assert corruption_axis["labelOverlap"] is False and corruption_axis["labelAngle"] != 0  # every label shows


# --- scales that start or centre at white --------------------------------------------------------

@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    for run_id in RECIPES:
        shutil.copytree(SHIPPED / run_id, root / run_id)
    return root


def test_the_confusion_matrix_draws_an_empty_cell_white(lab_env, shipped):
    lab_env(shipped)
    mlp = next(i for i in RECIPES if load_run(i, shipped).arch == "mlp")
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(mlp).run()
    (spec, data), = [(s, d) for s, d in drawn(at) if '"predicted"' in json.dumps(s.get("encoding", s))
                     or any("predicted" in json.dumps(v) for v in s.get("layer", []))][:1]
    colour = next(v["encoding"]["color"] for v in layers(spec) if "color" in v.get("encoding", {})
                  and v["encoding"]["color"].get("field") == "shown")
    assert colour["scale"]["range"][0] == WHITE and colour["scale"]["domain"][0] == 0
    assert colour["scale"]["interpolate"] in ("lab", "rgb")  # HCL would start from a pale cyan, not white
    cells = chart_data(spec, data)
    saved = load_predictions(mlp, shipped)
    matrix = np.zeros((10, 10), int)
    np.add.at(matrix, (saved["labels"], saved["predicted"]), 1)
    assert (cells["count"] == 0).sum() == (matrix == 0).sum() > 0  # cells with no image exist: drawn white


def test_the_run_difference_matrix_is_centred_on_white(lab_env, shipped):
    lab_env(shipped)
    at = open_page("mistakes")
    change = [v for s, _ in drawn(at) for part in s.get("hconcat", []) for v in layers(part)
              if v.get("encoding", {}).get("color", {}).get("field") == "better"]
    assert change, "no run-difference matrix on the Mistakes page"
    scale = change[0]["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["range"][1] == WHITE and scale["interpolate"] in ("lab", "rgb")
    assert scale["domain"][0] == -scale["domain"][1]
    counts = [v["encoding"]["color"]["scale"] for s, _ in drawn(at) for part in s.get("hconcat", [])
              for v in layers(part) if v.get("encoding", {}).get("color", {}).get("field") == "count"]
    assert counts and all(c["range"][0] == WHITE and c["domain"][0] == 0 for c in counts)
    assert diverging_scale(3).to_dict()["domainMid"] == 0


# --- the reliability diagram ---------------------------------------------------------------------

def test_the_reliability_diagram_counts_the_images_of_each_bin():
    run_id = RECIPES[0]
    saved = load_predictions(run_id, SHIPPED)
    probs = saved["probabilities"].astype("float64")
    spec = reliability_chart({"as trained": calibration.reliability(probs, saved["labels"])}).to_dict()
    (bars,) = [v for v in layers(spec) if v["encoding"]["y"].get("field") == "count"]
    assert v_mark(bars) in ("bar", "rect") and bars["encoding"]["y2"] == {"datum": 0}  # a bar from zero
    shown = rows(spec, bars).sort_values("lower")
    histogram, edges = np.histogram(probs.max(1), bins=calibration.BINS, range=(0, 1))
    assert shown["count"].tolist() == histogram[histogram > 0].tolist()
    assert shown["lower"].tolist() == pytest.approx(edges[:-1][histogram > 0].tolist())
    assert shown["count"].sum() == len(probs)


# --- the embedding map ---------------------------------------------------------------------------

def test_label_errors_on_the_embedding_map_use_a_colour_and_shape_no_digit_uses():
    from dashboard.views.embedding import chart
    frame = pd.DataFrame({"x": np.arange(20.0), "y": np.arange(20.0), "index": np.arange(20),
                          "digit": [str(d % 10) for d in range(20)], "predicted": [d % 10 for d in range(20)],
                          "ring": [""] * 16 + ["mistake", "mistake", "label", "label"]})
    spec = chart(frame).to_dict()
    dots, marks = layers(spec)
    assert dots["mark"]["type"] == "circle" and dots["encoding"]["color"]["scale"]["scheme"] == "category10"
    assert marks["mark"]["color"].lower() not in CATEGORY10
    shape = dict(zip(marks["encoding"]["shape"]["scale"]["domain"], marks["encoding"]["shape"]["scale"]["range"]))
    assert shape["label error (confirmed)"] not in ("circle", dots["mark"]["type"])
    assert set(rows(spec, marks)["mark"]) == {"the run's mistake", "label error (confirmed)"}


# --- Compare: one selection ----------------------------------------------------------------------

@pytest.fixture
def lab(lab_env, shipped, trained_runs, tmp_path):
    """The shipped recipes' reference runs beside the user's two trained runs: mlp (2 epochs) and,
    newer, lenet (1 epoch)."""
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    for run_id in RECIPES:
        shutil.copytree(shipped / run_id, root / run_id)
    return root


def curve_runs(at) -> set[str]:
    """The runs Compare's curves draw (both charts: loss and accuracy), read from their data."""
    found = [set(chart_data(s, d)["run"]) for s, d in drawn(at) if "run (click to highlight)" in json.dumps(s)]
    assert len(found) == 2, "Compare draws its curves as two charts, loss and accuracy"
    assert found[0] == found[1]
    return found[0]


def grid_runs(at) -> set[str]:
    found = [set(chart_data(s, d)["row_id"]) for s, d in drawn(at) if "Holm-corrected p-values" in json.dumps(s)]
    assert len(found) == 1, "no p-value grid"
    return found[0]


def test_compare_opens_on_the_best_reference_runs_and_the_users_newest_real_run(lab, trained_runs):
    at = open_page("compare")
    picked = at.multiselect(key="compare_runs").value
    best = best_by_validation(RECIPES, lab)[:4]
    assert picked == best + [trained_runs.ids["mlp"]]  # the 1-epoch lenet, newer, is not a default
    names = {i: load_run(i, lab).name for i in picked}
    assert curve_runs(at) == set(names.values())
    assert grid_runs(at) == set(picked)
    table = frame_with(at, "test_acc")
    accuracies = table["test_acc"].dropna().tolist()
    assert accuracies == sorted(accuracies, reverse=True)  # the best first
    assert table["run_id"].iloc[0] == best[0]


def test_one_selection_drives_the_curves_the_significance_and_the_seed_bands(lab, trained_runs):
    at = open_page("compare")
    two = [RECIPES[0], trained_runs.ids["lenet"]]
    at.multiselect(key="compare_runs").set_value(two).run()
    assert not at.exception, [e.value for e in at.exception]
    names = [load_run(i, lab).name for i in two]
    assert curve_runs(at) == set(names)
    assert not [s for s, _ in drawn(at) if "Holm-corrected p-values" in json.dumps(s)]  # two runs: no grid
    frame_with(at, f"{names[1]} right")  # their 2x2 table
    a, b = right(two[0], lab), right(two[1], lab)
    p = mcnemar_p(a, b)
    text = " ".join(m.value for m in at.markdown)
    assert "McNemar's exact test, uncorrected: p " in text
    assert (f"p = {p:.2f}" if p >= 0.01 else "p < 0.001" if p < 0.001 else f"p = {p:.3f}") in text

    at.switch_page("views/robustness.py").run()  # another page and back: the selection stays
    at.switch_page("views/compare.py").run()
    assert at.multiselect(key="compare_runs").value == two
    assert curve_runs(at) == set(names)

    three = RECIPES[:3]
    at.multiselect(key="compare_runs").set_value(three).run()
    assert grid_runs(at) == set(three)
    assert curve_runs(at) == {load_run(i, lab).name for i in three}
    pair = at.selectbox(key="sig_pair").value
    assert pair == (three[0], three[1])  # the first two picked
    hits = {i: right(i, lab) for i in three}
    pairs = list(itertools.combinations(three, 2))
    raw = {q: mcnemar_p(hits[q[0]], hits[q[1]]) for q in pairs}
    running, holm = 0.0, {}
    for rank, q in enumerate(sorted(raw, key=raw.get)):  # Holm by hand
        running = max(running, min(1.0, raw[q] * (len(pairs) - rank)))
        holm[q] = running
    from core.analysis.compare import p_text
    text = " ".join(m.value for m in at.markdown)
    assert (f"McNemar's exact test, uncorrected: {p_text(raw[pair])}; Holm-corrected for the 3 pairs of the "
            f"grid: {p_text(holm[pair])}.") in text
    grid = next(s for s, _ in drawn(at) if "Holm-corrected p-values" in json.dumps(s))
    tooltips = [t.get("title") for v in layers(grid) for t in v.get("encoding", {}).get("tooltip", [])]
    tooltips += [t.get("title") for t in grid.get("encoding", {}).get("tooltip", [])]
    assert "p, Holm-corrected" in tooltips and "run" in tooltips and "against" in tooltips
    assert None not in tooltips  # no raw field names
    axes = [e[k]["axis"] for e in [grid.get("encoding", {})] + [v.get("encoding", {}) for v in layers(grid)]
            for k in ("x", "y") if "axis" in e.get(k, {})]
    assert len(axes) >= 2
    assert all(a["labelOverlap"] is False for a in axes)  # every run's label shows


def test_a_seed_group_member_in_the_selection_is_drawn_as_its_band(lab_env, seed_group, trained_runs, tmp_path):
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    for folder in seed_group[0].iterdir():
        if not folder.name.startswith("."):
            shutil.copytree(folder, root / folder.name)
    from core.store.runs import list_runs
    members = [r for r in list_runs(root) if r.config.get("group")]
    at = open_page("compare")
    at.multiselect(key="compare_runs").set_value([members[0].run_id, trained_runs.ids["mlp"]]).run()
    assert not at.exception, [e.value for e in at.exception]
    group = members[0].config["group"]
    assert curve_runs(at) == {f"{group} (mean ± std, {len(members)} runs)", load_run(trained_runs.ids["mlp"], root).name}
    frame_with(at, f"{load_run(trained_runs.ids['mlp'], root).name} right")  # the same two in the significance test


@pytest.mark.slow  # a second or more
def test_compare_preselects_the_runs_named_in_its_url_and_names_the_unknown(lab, trained_runs):
    from streamlit.testing.v1 import AppTest
    wanted = [trained_runs.ids["lenet"], RECIPES[2]]
    at = AppTest.from_file(str(REPO / "dashboard" / "views" / "compare.py"), default_timeout=120)
    at.query_params["runs"] = f"{wanted[0]},no-such-run,{wanted[1]}"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="compare_runs").value == wanted
    assert any("no-such-run" in w.value for w in at.warning)
    assert curve_runs(at) == {load_run(i, lab).name for i in wanted}
    at.multiselect(key="compare_runs").set_value([RECIPES[0], RECIPES[1]]).run()  # the user picks again
    at.run()
    assert at.multiselect(key="compare_runs").value == [RECIPES[0], RECIPES[1]]


@pytest.mark.slow  # a second or more
def test_a_run_finished_while_the_user_was_elsewhere_joins_the_default_selection(lab_env, shipped, trained_runs,
                                                                               tmp_path):
    root = lab_env(tmp_path / "runs")
    for run_id in RECIPES:
        shutil.copytree(shipped / run_id, root / run_id)
    at = open_page("compare")
    best = best_by_validation(RECIPES, root)[:4]
    assert at.multiselect(key="compare_runs").value == best
    at.switch_page("views/train.py").run()
    mlp = trained_runs.ids["mlp"]  # two epochs, finished: as if just trained
    shutil.copytree(trained_runs.root / mlp, root / mlp)
    at.switch_page("views/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="compare_runs").value == best + [mlp]
    assert load_run(mlp, root).name in curve_runs(at)
