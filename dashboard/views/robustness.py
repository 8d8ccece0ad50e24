"""Robustness: how the chosen runs hold up under MNIST-C's corruptions and under FGSM and PGD
attacks (core.analysis.robustness, measured once per weights and kept), side by side, with the
sanity checks of each figure, and a gallery of what a corruption or an attack does to test images."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.analysis import attacks, robustness
from core.data.corruptions import CORRUPTIONS, corrupt
from core.errors import LabError
from core.store.folder import ROBUSTNESS, WEIGHTS
from dashboard import access
from dashboard import glossary
from dashboard.charts import fit_width, run_colour
from dashboard.inference import predictor
from dashboard.notices import report, require_mnist
from dashboard.state import checkpoints_base, file_stamp, mnist, test_images
from dashboard.text import md_text
from dashboard.widgets import by_meaning, default_subjects, digit_grid, finished_runs_or_stop, run_label, unique_names

GALLERY = 8  # test images shown attacked or corrupted


@st.cache_data(max_entries=64, show_spinner=False)
def _kept(base: str, run_id: str, stamp: tuple | None, weights: tuple | None) -> tuple[dict | None, str | None]:
    return robustness.kept(run_id, base) if stamp else (None, None)


def kept_report(run) -> dict | None:
    return report_kept(run)[0]


def report_kept(run) -> tuple[dict | None, str | None]:
    """(the run's kept report, None), or (None, why its file is damaged), or (None, None)."""
    return _kept(checkpoints_base(), run.run_id, file_stamp(run.path / ROBUSTNESS), file_stamp(run.path / WEIGHTS))


def curves(reports: dict[str, dict], own: set[str] = frozenset()) -> alt.LayerChart:
    """Accuracy against eps, a colour per run (run_palette: `own` runs warm, reference runs cool)
    and FGSM solid, PGD dashed; both legends list every entry (runs below the chart, attacks above)."""
    rows = [{"run": name, "epsilon": row["epsilon"], "accuracy": row["accuracy"],
             "attack": "PGD" if row["attack"] in ("pgd", "none") else "FGSM",
             "settings": (f"PGD-{row['steps']}x{row['restarts']}" if row["attack"] == "pgd" else row["attack"].upper())}
            for name, found in reports.items() for row in found["attacks"]]
    rows += [{**r, "attack": "FGSM", "settings": "clean"} for r in rows if r["settings"] == "NONE"]
    frame = pd.DataFrame(rows)
    frame["settings"] = frame["settings"].replace("NONE", "clean")
    names = list(reports)
    base = alt.Chart(frame).encode(
        x=alt.X("epsilon:Q", title="eps (L-inf, pixels on [0, 1])"),
        y=alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=run_colour("run", names, own),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("attack:N"), alt.Tooltip("settings:N", title="attack settings"),
                 alt.Tooltip("epsilon:Q", title="eps"), alt.Tooltip("accuracy:Q", title="accuracy (%)", format=".2f")])
    # The points are a layer of their own: a line's point overlay would make Vega-Lite draw the
    # attack legend's dashes with a filled point's transparent stroke, i.e. not at all.
    lines = base.mark_line(strokeWidth=2).encode(
        strokeDash=alt.StrokeDash("attack:N", title="attack", sort=["FGSM", "PGD"],
                                  scale=alt.Scale(domain=["FGSM", "PGD"], range=[[1, 0], [6, 3]]),
                                  legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeColor="#333333",
                                                    symbolSize=400)),
        detail="attack:N")
    return fit_width(alt.layer(lines, base.mark_circle(size=30, opacity=1)).properties(height=320))


def bars(reports: dict[str, dict], own: set[str] = frozenset()) -> alt.Chart:
    """Accuracy under each corruption, a bar per run in run_palette's colours, every label shown
    (angled; the whole name in the tooltip), the run legend below the chart."""
    frame = pd.DataFrame([{"run": name, "corruption": row["corruption"].replace("_", " "), "accuracy": row["accuracy"]}
                          for name, found in reports.items() for row in found["corruptions"]])
    return fit_width(alt.Chart(frame).mark_bar().encode(
        x=alt.X("corruption:N", title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False, labelLimit=90)),
        xOffset=alt.XOffset("run:N", sort=list(reports)),
        y=alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=run_colour("run", list(reports), own, symbol="square"),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("corruption:N"),
                 alt.Tooltip("accuracy:Q", title="accuracy (%)", format=".2f")],
    ).properties(height=320))


def checks_table(reports: dict[str, dict]) -> None:
    rows = []
    for name, found in reports.items():
        c = found["checks"]
        rows.append({"run": name, "passed": c["passed"], "PGD-50x10 at 0.3": c["eps_0.3"]["pgd_50x10"],
                     "PGD-100x20": c["eps_0.3"]["pgd_100x20"], "margin loss": c["eps_0.3"]["pgd_50x10_margin_loss"],
                     "unbounded attack": c["unbounded_accuracy"], "falls with eps": c["falls_with_eps"],
                     "images": c["images"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="rob_checks", column_config={
        "PGD-50x10 at 0.3": st.column_config.NumberColumn(help=glossary.sentence("pgd")),
        "margin loss": st.column_config.NumberColumn(help=glossary.sentence("margin_loss"))})
    st.caption("Carlini et al. (2019)'s checks, on the first 500 test images: an unbounded attack must leave no "
               "image standing, a stronger attack or the margin loss must not find much more than PGD-50x10 with "
               "cross-entropy; where they do, the lower figure is the honest one.")
    glossary.captions("margin_loss")


def gallery(run, images: np.ndarray) -> None:
    st.subheader("What it does to an image", divider="gray")
    left, right = st.columns(2)
    what = left.selectbox("Corruption or attack", ["PGD", "FGSM", *CORRUPTIONS], key="rob_what",
                          format_func=lambda k: k.replace("_", " "))
    eps = right.select_slider("eps", list(attacks.EPSILONS), value=0.1, key="rob_eps",
                              disabled=what not in ("PGD", "FGSM"), help=glossary.help_text("eps"))
    if what in ("PGD", "FGSM"):
        right.caption(f"eps {eps:g}: {glossary.eps_words(eps)}.")
    model = predictor(run)
    if model is None:
        return
    arrays = mnist()
    if arrays is None:
        return
    labels = arrays["test_labels"]
    pixels = torch.from_numpy(images[:GALLERY] / 255.0).float().unsqueeze(1)
    y = torch.from_numpy(labels[:GALLERY]).long()
    if what == "PGD":
        changed, _ = attacks.pgd(model.model, pixels, y, eps, steps=20, step_size=2.5 * eps / 20)
    elif what == "FGSM":
        changed = attacks.fgsm(model.model, pixels, y, eps)
    else:
        changed = torch.from_numpy(corrupt(what, pixels[:, 0].numpy(), seed=0)).unsqueeze(1)
    with torch.no_grad():
        before = attacks.PixelModel(model.model)(pixels).argmax(1).numpy()
        after = attacks.PixelModel(model.model)(changed).argmax(1).numpy()
    difference = (changed - pixels)[:, 0].numpy()
    shown = np.clip(0.5 + difference / (2 * max(float(np.abs(difference).max()), 1e-6)), 0, 1)
    digit_grid((pixels[:, 0].numpy() * 255).astype(np.uint8), [f"{int(t)} → {int(b)}" for t, b in zip(y, before)])
    digit_grid((changed[:, 0].numpy() * 255).astype(np.uint8),
               [f"now {int(a)}" + (" (changed)" if a != b else "") for a, b in zip(after, before)])
    digit_grid((shown * 255).astype(np.uint8), ["the change"] * GALLERY)
    st.caption("Rows: the test image (true digit → the run's answer), the image after it, and the change "
               "(grey is none, light added ink, dark removed). PGD here: 20 steps of 2.5 eps / 20, one random start.")


def page() -> None:
    """The robustness page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Robustness")
    st.caption("Accuracy on the 10,000 test images under MNIST-C's corruptions and under FGSM and PGD attacks "
               "(L-inf, pixels on [0, 1]), measured once per run's weights and kept in its folder.")
    candidates = finished_runs_or_stop("No finished run yet: train one on the **Train** page, then see how it "
                                       "holds up here.", needs="weights")
    if not require_mnist("Robustness"):
        st.stop()
    by_id = {r.run_id: r for r in by_meaning(candidates)}  # the best runs first
    measured = [i for i in by_id if kept_report(by_id[i]) is not None]
    firsts = {r.run_id for r in default_subjects(candidates)}  # the default: those of them measured
    default = [i for i in measured if i in firsts][:4] or list(by_id)[:1]
    chosen = st.multiselect("Runs", list(by_id), default=default, key="rob_runs",
                            format_func=lambda i: run_label(by_id[i]))
    runs = [by_id[i] for i in chosen]
    missing = [r for r in runs if kept_report(r) is None]
    for run in missing:
        if damage := report_kept(run)[1]:
            st.warning(f"**{md_text(run.name)}**: the kept report cannot be used: {md_text(damage)}. Measure it again.",
                       icon=":material/warning:")
        if st.button(f"Measure {run.name} (about 3-10 minutes on a CPU)", key=f"rob_measure_{run.run_id}",
                     icon=":material/shield:", disabled=access.locked(),
                     help=access.LOCKED_HELP if access.locked() else None) \
                and access.allowed("measure robustness"):
            try:
                with st.spinner(f"Corrupting and attacking 10,000 test images with {run.name}…", show_time=True):
                    robustness.robustness(run.run_id, checkpoints_base())
            except LabError as exc:
                report(exc, f"**{md_text(run.name)}**")
            else:
                st.rerun()
    names = unique_names(runs)
    reports = {names[r.run_id]: kept_report(r) for r in runs if kept_report(r) is not None}
    if reports:
        left, right = st.columns(2, gap="large")
        left.subheader("Against attacks", divider="gray")
        own = {names[r.run_id] for r in runs if not r.reference}
        left.altair_chart(curves(reports, own), width="stretch")
        with left:
            glossary.captions("eps", "fgsm", "pgd")
        right.subheader("Under corruptions", divider="gray")
        right.altair_chart(bars(reports, own), width="stretch")
        with right:
            glossary.captions("corruption")
        checks_table(reports)
    elif runs:
        st.info("None of the chosen runs is measured yet: measure one above.", icon=":material/shield:")
    images = test_images()
    if runs and images is not None:
        gallery(runs[0], images)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
