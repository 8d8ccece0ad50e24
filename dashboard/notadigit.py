"""Not a digit on the pages: the dashboard's view of core.notadigit (which owns the concept; this
module only shows it). Sketch's check for the chosen models (fit it where missing; how well it was
measured), and the score of the test images a gallery shows (Mistakes, the embedding map's selection)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.data.images import normalize
from core.errors import LabError
from core.notadigit.detector import fit
from dashboard import access
from dashboard import glossary
from dashboard.inference import detector, predictor
from dashboard.notices import report
from dashboard.state import checkpoints_base
from dashboard.text import md_text


# A check is weak below this share of the held-out non-digits flagged: the target every
# convolutional reference run meets (90.5-97.8%; docs/not-a-digit.md, "How well the default check
# does"), which the MLP recipes miss (mlp 62.5%, mlp_ln 77.1%).
WEAK_BELOW = 0.90
MLP_ARCHS = ("mlp", "mlp_ln")  # no convolutions: their reference runs' checks are the weak ones


def held_out_flagged(found) -> float | None:
    """The share of the held-out non-digits the detector flagged when it was measured (its kept
    evaluation, for its own kind of detector), or None if it was not measured."""
    row = (found.evaluation or {}).get("detectors", {}).get(found.name) if found is not None else None
    flagged = (row or {}).get("held-out", {}).get("flagged")
    return float(flagged) if flagged is not None else None


def check_weakness(run, found) -> str | None:
    """Why the run's not-a-digit check should not be trusted, in words, or None if it can be:
    no check fitted; measured to flag under WEAK_BELOW of the held-out non-digits; or not measured
    and the run is an MLP, whose measured reference checks are the weak ones."""
    if found is None:
        return "no not-a-digit check fitted: this model names a digit for anything (fit it below)"
    flagged = held_out_flagged(found)
    if flagged is not None and flagged < WEAK_BELOW:
        return (f"weak not-a-digit check: it caught {flagged:.1%} of the held-out non-digits it was measured on; "
                f"the lab aims for {WEAK_BELOW:.0%}")
    if flagged is None and run.arch in MLP_ARCHS:
        return ("weak not-a-digit check: not measured for this run, and the checks of the MLP reference runs "
                "catch only 62-77% of non-digits; the lab aims for 90%")
    return None


def ood_marks(run, images, indices) -> dict[int, str]:
    """Test image index -> what the run's not-a-digit detector says of it (score, and whether it
    is above the threshold), for the images shown; {} if the run has no detector fitted."""
    found, model = detector(run)[0], predictor(run)
    if found is None or model is None:
        return {}
    scores, flags = found.judge(model.model, normalize(images[indices] / 255.0))
    return {int(i): f" · {'NOT A DIGIT ' if flag else ''}score {score:.3g}" for i, score, flag in zip(indices, scores, flags)}


def ood_toggle(run, key: str) -> None:
    fitted = detector(run)[0] is not None
    st.toggle("Not-a-digit scores", key=f"{key}_ood", disabled=not fitted,
              help=glossary.help_text("ood_score", "each image's outlier score by the run's not-a-digit detector, "
                                      "marked where it is above the threshold (the dataset has odd images)") if fitted else
                   "the run has no not-a-digit detector fitted yet: fit it on the Sketch page or with `python -m core ood RUN`")


def ood_section(models: list) -> None:
    """Which models can say "not a digit", a button to fit the check for those that cannot yet,
    and how well each check was measured to work (where it was)."""
    found = {run.run_id: detector(run) for run in models}
    missing = [run for run in models if found[run.run_id][0] is None]
    for run in missing:
        damage = found[run.run_id][1]
        if damage:
            st.warning(f"**{md_text(run.name)}**: its not-a-digit check cannot be used: {md_text(damage)}. Fit it again.",
                       icon=":material/warning:")
    if missing:
        names = ", ".join(md_text(r.name) for r in missing)
        left, right = st.columns([3, 1])
        left.caption(f"Not-a-digit check not fitted yet for {names}: their rows always name a digit.")
        if right.button("Fit the check", icon=":material/block:", key="sketch_fit_ood", disabled=access.locked(),
                        help=access.LOCKED_HELP if access.locked() else
                        "each model's detector learns its training digits' features and the lab's images of "
                        "what is not a digit, and sets its threshold so that 99% of its validation digits pass: "
                        "half a minute to a minute per model on a 2-core CPU (the first on a machine also draws "
                        "the lab's images, some 17 s)") and access.allowed("fit the not-a-digit check"):
            for run in missing:
                try:
                    with st.spinner(f"Fitting the not-a-digit check of {run.name}…"):
                        fit(run.run_id, checkpoints_base())
                except LabError as exc:
                    report(exc, f"**{md_text(run.name)}**")
            st.rerun()
    measured = {run.name: det.evaluation for run in models if (det := found[run.run_id][0]) is not None
                and det.evaluation.get("detectors")}
    if measured:
        with st.expander("How well each model tells a digit from something else"):
            st.caption("On the lab's own set of letters, shapes, scribbles, noise, blank and inverted images (the "
                       "half not used to choose the default detector), against MNIST's 10,000 test digits; "
                       "flagged at each model's threshold (99% of its validation digits pass). A model whose "
                       f"default check flags under {WEAK_BELOW:.0%} of the non-digits is marked weak.")
            glossary.captions("auroc", "fpr95")
            rows = [{"model": name, "detector": det_name, "non-digits flagged": row["held-out"]["flagged"],
                     "AUROC": row["held-out"]["auroc"], "FPR at 95% TPR": row["held-out"]["fpr95tpr"],
                     "test digits flagged": row["test_flagged"], "pad-drawn digits flagged": row["pad_flagged"]}
                    for name, figures in measured.items() for det_name, row in figures["detectors"].items()]
            config = {c: st.column_config.NumberColumn(format="percent") for c in
                      ("non-digits flagged", "test digits flagged", "pad-drawn digits flagged")}
            config["AUROC"] = st.column_config.NumberColumn(help=glossary.sentence("auroc"))
            config["FPR at 95% TPR"] = st.column_config.NumberColumn(help=glossary.sentence("fpr95"))
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="sketch_ood_table",
                         column_config=config)
