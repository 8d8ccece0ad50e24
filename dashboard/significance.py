"""Compare's "Is the difference real?" on the page's one selection of runs: two runs' 2x2 table,
McNemar's exact test and the paired interval of their difference, in a sentence; more runs as a
clickable grid of Holm-corrected p-values, a cell opening its pair;
two seed groups by Welch's t-test (core.analysis.compare, core.stats)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis.compare import Comparison, compare_groups, group_sentence, p_text
from core.errors import LabError
from core.stats import ALPHA
from core.store import tables
from core.store.runs import Run
from dashboard import glossary
from dashboard.charts import p_value_matrix
from dashboard.notices import report
from dashboard.state import pairwise
from dashboard.text import md_text
from dashboard.widgets import unique_names

MAX_RUNS = 12  # a matrix larger than this is not read


def pair_p_lines(result: Comparison, adjusted: float | None, pairs: int) -> str:
    """The p-values of one pair, each named: McNemar's uncorrected p and, where the pair was read
    out of a grid, the Holm-corrected one the grid shows."""
    line = f"McNemar's exact test, uncorrected: {p_text(result.table.p_value)}"
    if adjusted is not None:
        line += f"; Holm-corrected for the {pairs} pairs of the grid: {p_text(adjusted)}"
    return line + "."


def two_runs(result: Comparison, names: dict[str, str], adjusted: float | None = None, pairs: int = 1) -> None:
    """One pair: its 2x2 table, the verdict in a sentence, both accuracies and the paired interval
    of their difference; `adjusted` is the pair's Holm-corrected p when read out of a grid."""
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
                    f"{high:+.2f}. {pair_p_lines(result, adjusted, pairs)}")
        if adjusted is not None and (adjusted < ALPHA) != t.significant:
            st.caption("The sentence above reads the uncorrected p; with this many pairs, the Holm-corrected "
                       "p is the one to trust.")


def pick_pair_from_grid() -> None:
    """A click on a cell of the p-value grid picks that pair in the Pair box (one source of truth)."""
    state = st.session_state.get("sig_grid")
    points = (state or {}).get("selection", {}).get("pair") or []
    if points and points[0].get("row_id") and points[0].get("column_id"):
        row, column = points[0]["row_id"], points[0]["column_id"]
        pairs = st.session_state.get("sig_pairs_shown", [])
        for pair in pairs:
            if set(pair) == {row, column}:
                st.session_state["sig_pair"] = pair


def pairs_section(picked_runs: list[Run]) -> None:
    """Whether the picked runs (Compare's one selection) really differ: two runs as a 2x2 table
    and a sentence; more as a clickable grid of Holm-corrected p-values, a cell opening its pair."""
    st.subheader("Is the difference real?", divider="gray")
    st.caption("Two runs tested on the same images are compared image by image: McNemar's exact test counts the "
               "images only one of them gets right (Dietterich 1998). More runs: every pair's p-value, "
               "Holm-corrected for the number of pairs. Accuracies carry their 95% Wilson interval.")
    glossary.captions("p_value", "holm", "interval")
    candidates = [r for r in picked_runs if r.finished_with("predictions")]
    left_out = [r for r in picked_runs if not r.finished_with("predictions")]
    if left_out:
        st.caption("Left out here, no saved test predictions yet: "
                   + ", ".join(md_text(r.name) for r in left_out) + ".")
    if len(candidates) < 2:
        st.info("Pick two or more finished runs with saved test predictions above to test whether they differ.",
                icon=":material/balance:")
        return
    picked = [r.run_id for r in candidates][:MAX_RUNS]
    try:
        result = pairwise(picked)
    except LabError as exc:
        report(exc)
        return
    names = unique_names(candidates[:MAX_RUNS])
    if len(picked) == 2:
        two_runs(result.comparisons[(picked[0], picked[1])], names)
        return
    pairs = list(result.comparisons)
    st.session_state["sig_pairs_shown"] = pairs
    st.caption(f"Every pair of the {len(picked)} runs: click a cell to read that pair below.")
    st.altair_chart(p_value_matrix(result.adjusted, names, ALPHA, height=max(220, 46 * len(picked))),
                    key="sig_grid", on_select=pick_pair_from_grid, selection_mode="pair", width="stretch")
    different = int((result.adjusted.to_numpy() < ALPHA).sum() // 2)
    st.caption(f"{different} of {len(result.comparisons)} pairs differ at the {ALPHA:.0%} level after Holm's "
               "correction. Click a cell of the grid or pick a pair here:")
    if st.session_state.get("sig_pair") not in pairs:
        st.session_state["sig_pair"] = pairs[0]  # the first two picked: by default the best two runs
    pair = st.selectbox("Pair", pairs, format_func=lambda p: f"{names[p[0]]} vs {names[p[1]]}", key="sig_pair")
    if pair is not None:
        two_runs(result.comparisons[pair], names, adjusted=float(result.adjusted.loc[pair[0], pair[1]]),
                 pairs=len(pairs))


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
