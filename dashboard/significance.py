"""Compare's "Is the difference real?": two runs' 2x2 table, McNemar's exact test and the paired
interval of their difference, in a sentence; more runs as a matrix of Holm-corrected p-values;
two seed groups by Welch's t-test (core.analysis.compare, core.stats)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis.compare import Comparison, compare_groups, group_sentence, p_text
from core.errors import LabError
from core.stats import ALPHA
from core.store import tables
from core.store.runs import Run
from dashboard.charts import p_value_matrix
from dashboard.notices import report
from dashboard.state import pairwise
from dashboard.text import md_text
from dashboard.widgets import run_label, unique_names

MAX_RUNS = 12  # a matrix larger than this is not read


def default_pick(candidates: list[Run], chosen: list[Run]) -> list[str]:
    """The runs ticked in the table when two or more can be compared, else the reference runs of
    the default recipes, else the newest two."""
    ids = {r.run_id for r in candidates}
    ticked = [r.run_id for r in chosen if r.run_id in ids]
    if len(ticked) >= 2:
        return ticked[:MAX_RUNS]
    reference = [r.run_id for r in candidates if r.reference and not r.config.get("sweep")]
    return (reference if len(reference) >= 2 else [r.run_id for r in candidates][:2])[:MAX_RUNS]


def two_runs(result: Comparison, names: dict[str, str]) -> None:
    a, b, t = result.a, result.b, result.table
    left, right = st.columns([1.2, 1], gap="large")
    with left:
        table = pd.DataFrame({f"{names[b.run_id]} right": [t.both, t.b_only],
                              f"{names[b.run_id]} wrong": [t.a_only, t.neither]},
                             index=[f"{names[a.run_id]} right", f"{names[a.run_id]} wrong"])
        st.dataframe(table, key="sig_table", width="stretch")
        st.caption(f"{t.n:,} test images, each counted once. Only the off-diagonal cells "
                   f"({t.a_only:,} and {t.b_only:,}) tell the two runs apart.")
    with right:
        (st.success if t.significant else st.info)(md_text(result.sentence()), icon=":material/balance:")
        low, high = (100 * x for x in t.difference_ci)
        for figures in (a, b):
            ci_low, ci_high = figures.ci95
            st.markdown(f"**{md_text(names[figures.run_id])}**: {figures.accuracy:.2f}% "
                        f"(95% CI {ci_low:.2f}–{ci_high:.2f}%)")
        st.markdown(f"Difference {100 * t.difference:+.2f} points, paired 95% interval {low:+.2f} to "
                    f"{high:+.2f}; McNemar's exact test {p_text(t.p_value)}.")


def pairs_section(runs: list[Run], chosen: list[Run]) -> None:
    st.subheader("Is the difference real?", divider="gray")
    st.caption("Two runs tested on the same images are compared image by image: McNemar's exact test counts the "
               "images only one of them gets right (Dietterich 1998). More runs: every pair's p-value, "
               "Holm-corrected for the number of pairs. Accuracies carry their 95% Wilson interval.")
    candidates = [r for r in runs if r.finished_with("predictions")]
    if len(candidates) < 2:
        st.info("Two finished runs with saved test predictions are needed to compare.", icon=":material/balance:")
        return
    by_id = {r.run_id: r for r in candidates}
    picked = st.multiselect("Runs to compare", list(by_id), default=default_pick(candidates, chosen),
                            format_func=lambda i: run_label(by_id[i]), key="sig_runs", max_selections=MAX_RUNS,
                            help="ticked rows of the table come first; two runs show their table, more a matrix")
    if len(picked) < 2:
        st.info("Pick two runs or more.", icon=":material/lightbulb:")
        return
    try:
        result = pairwise(picked)
    except LabError as exc:
        report(exc)
        return
    names = unique_names([by_id[i] for i in picked])
    if len(picked) == 2:
        two_runs(result.comparisons[(picked[0], picked[1])], names)
        return
    st.altair_chart(p_value_matrix(result.adjusted, names, ALPHA, height=max(220, 46 * len(picked))))
    different = int((result.adjusted.to_numpy() < ALPHA).sum() // 2)
    st.caption(f"{different} of {len(result.comparisons)} pairs differ at the {ALPHA:.0%} level after Holm's "
               "correction. Pick a pair to read it:")
    pairs = list(result.comparisons)
    pair = st.selectbox("Pair", pairs, format_func=lambda p: f"{names[p[0]]} vs {names[p[1]]}", key="sig_pair")
    if pair is not None:
        two_runs(result.comparisons[pair], names)


def groups_section(runs: list[Run]) -> None:
    """Welch's t-test of two seed groups' per-seed test accuracies."""
    groups = sorted({g for g in map(tables.run_group, runs) if g})
    if len(groups) < 2:
        return
    st.markdown("**Two seed groups**: Welch's t-test of their per-seed test accuracies")
    left, right = st.columns(2)
    first = left.selectbox("Group", groups, key="sig_group_a")
    second = right.selectbox("against", [g for g in groups if g != first], key="sig_group_b")
    if first is None or second is None:
        return
    members = {g: [r for r in runs if tables.run_group(r) == g] for g in (first, second)}
    test = compare_groups(members[first], members[second])
    (st.info if not test.tested or test.p_value >= ALPHA else st.success)(
        md_text(group_sentence(first, second, test)), icon=":material/stacked_line_chart:")
