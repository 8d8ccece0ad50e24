"""Label issues: the test images whose given label is most likely wrong, ranked by cleanlab
from the chosen runs' saved test probabilities (core.analysis.label_issues); the 15 labels human
reviewers confirmed wrong are marked, so a mistake of the dataset is told from one of the model."""
from __future__ import annotations

import streamlit as st

from core.analysis import label_issues
from core.errors import LabError
from dashboard.explain import image_picker
from dashboard.notices import report
from dashboard.state import label_ranking, test_images, usable_default_runs
from dashboard.text import md_text
from dashboard.widgets import digit_grid, finished_runs_or_stop, run_label, unique_names

SHOWN = (30, 60, 100, 200)


def page() -> None:
    """The label issues page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Label issues")
    st.caption("Some test labels are wrong, and a model that disagrees with them is right. The images are "
               "ranked by cleanlab's label quality score (self-confidence: the probability the chosen runs, "
               "averaged, give the label; lowest first), computed from their saved test probabilities.")
    candidates = finished_runs_or_stop("No finished run with saved test predictions yet: train one on the "
                                       "**Train** page.")
    by_id = {r.run_id: r for r in candidates}
    usable, skipped = usable_default_runs()
    for warning in skipped:  # picked by default but unusable: left out, by name
        st.warning(md_text(warning[:1].upper() + warning[1:]), icon=":material/warning:")
    default = [i for i in usable if i in by_id]
    chosen = st.multiselect("Runs whose probabilities rank the images", list(by_id), default=default,
                            format_func=lambda i: run_label(by_id[i]), key="li_runs",
                            help="By default the reference run of each default recipe; their probabilities are averaged.")
    if not chosen:
        st.info("Pick at least one run.", icon=":material/lightbulb:")
        st.stop()
    images = test_images()
    if images is None:
        st.stop()
    try:
        ranking = label_ranking(chosen)
    except LabError as exc:
        report(exc)
        st.stop()
    confirmed = label_issues.confirmed_errors()
    m = st.columns(3)
    m[0].metric("Confirmed label errors in the top 30", f"{ranking.confirmed_in_top(30)} of 15")
    m[1].metric("… in the top 100", f"{ranking.confirmed_in_top(100)} of 15")
    m[2].metric("Runs averaged", len(chosen))
    st.caption(f"Confirmed errors: {confirmed['source']}")
    c = st.columns([1, 2])
    shown = c[0].selectbox("Show the top", SHOWN, index=1, key="li_top")
    only_confirmed = c[1].toggle("Only the 15 confirmed label errors", key="li_confirmed")
    table = ranking.table[ranking.table["confirmed"]] if only_confirmed else ranking.top(shown)
    names = unique_names([by_id[i] for i in chosen])
    captions = [f"#{r.index} · label {r.label} → {r.suggested} · {r.score:.3f}"
                + (" · confirmed" if r.confirmed else "") + f" · {len(r.agree)}/{len(chosen)} agree"
                for r in table.itertuples()]
    digit_grid(images[table["index"].to_numpy()], captions, size=84)
    image_picker([by_id[i] for i in chosen], images, table["index"].to_numpy(), table["label"].to_numpy(),
                 key="li_why")
    with st.expander("As a table (which runs agree with the suggested digit)"):
        st.dataframe(table.assign(agree=[", ".join(names[i] for i in a) for a in table["agree"]]),
                     hide_index=True, width="stretch", key="li_table",
                     column_config={"index": "Test image", "label": "Given label", "suggested": "Suggested",
                                    "score": st.column_config.NumberColumn("Label quality", format="%.4f"),
                                    "agree": "Runs predicting the suggested digit",
                                    "confirmed": st.column_config.CheckboxColumn("Confirmed error")})


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
