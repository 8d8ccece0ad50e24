"""Small widgets the pages share: status badges, run labels and the run picker, durations,
digits shown large, and the openers of the pages about finished runs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

from core.store import tables
from core.store.runs import Run
from dashboard.notices import no_runs_notice, require_mnist, show_run_warnings
from dashboard.state import load_runs, saved_predictions

# help texts of figures several pages show
VAL_HELP = "validation accuracy of the weights the run keeps and tests (its last epoch; the EMA's with EMA)"
CLEAN_HELP = ("Test accuracy on the 9,985 test images whose label was not among the 15 that human "
              "reviewers confirmed wrong (Northcutt et al., 2021; see the Label issues page)")

STATUS_COLOURS = {"running": "blue", "queued": "violet", "finished": "green", "failed": "red",
                  "cancelled": "gray", "interrupted": "orange", "unknown": "gray",
                  "damaged": "red"}
STATUS_ICONS = {"running": ":material/progress_activity:", "queued": ":material/schedule:",
                "finished": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/cancel:", "interrupted": ":material/pause_circle:",
                "unknown": ":material/help:", "damaged": ":material/broken_image:"}


# --- status -----------------------------------------------------------------------------------

def status_badge(status: str) -> None:
    st.badge(status, icon=STATUS_ICONS.get(status), color=STATUS_COLOURS.get(status, "gray"))


def status_text(status: str) -> str:
    """A status as inline markdown badge (for use inside st.markdown)."""
    return f":{STATUS_COLOURS.get(status, 'gray')}-badge[{STATUS_ICONS.get(status, '')} {status}]"


# --- runs in pickers and labels ---------------------------------------------------------------

def unique_names(runs: Sequence[Run]) -> dict[str, str]:
    """run id -> a short name that tells runs apart: the name, then its architecture where
    names repeat, then the start time (from the id) where both do."""
    def count(keys):
        return {k: keys.count(k) for k in keys}
    names = count([r.name for r in runs])
    out = {r.run_id: (r.name if names[r.name] == 1 else f"{r.name} · {r.arch}") for r in runs}
    again = count(list(out.values()))
    return {rid: (label if again[label] == 1 else f"{label} · {rid[:15]}") for rid, label in out.items()}


def run_label(run: Run) -> str:
    """How a run is named in every picker: a reference run says so, whatever its name."""
    acc = f" · {run.test_acc:.2f}%" if run.test_acc is not None else ""
    if run.reference:  # named by what it is; a sweep cell keeps its own name (lr=... bs=...)
        plain = run.name in ("reference", f"{run.arch} reference")
        return f"reference · {run.arch}{acc}" if plain else f"reference · {run.name} · {run.arch}{acc}"
    return f"{run.name} · {run.arch}{acc}"


def pick_run(label: str, runs: Sequence[Run], key: str, *, query_param: str | None = None,
             default: str | None = None, help: str | None = None) -> Run | None:
    """A selectbox of runs. With `query_param`, `?<param>=<run id>` preselects a run and the
    URL follows the choice (so a link can open a page on a given run)."""
    if not runs:
        return None
    by_id = {r.run_id: r for r in runs}
    ids = list(by_id)
    wanted = st.query_params.get(query_param) if query_param else None
    if wanted in by_id and st.session_state.get(f"{key}__from_url") != wanted:
        st.session_state[key] = wanted          # a link asked for this run
        st.session_state[f"{key}__from_url"] = wanted
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = default if default in by_id else ids[0]
    run_id = st.selectbox(label, ids, key=key, format_func=lambda i: run_label(by_id[i]), help=help)
    if query_param and st.query_params.get(query_param) != run_id:
        st.query_params[query_param] = run_id
        st.session_state[f"{key}__from_url"] = run_id
    return by_id[run_id]


def is_recipe_reference(run: Run) -> bool:
    """A reference run of a recipe (shipped with the lab), not a cell of a shipped sweep."""
    return run.reference and not run.config.get("sweep")


def by_validation(runs: Sequence[Run]) -> list[Run]:
    """`runs` best validation accuracy first (equal ones by run id), runs without a validation
    figure after them by run id. Every default "best" of the pages is this order: the test set
    reports on a run, it never picks one."""
    return sorted(runs, key=lambda r: (r.val_acc is None, -(r.val_acc or 0.0), r.run_id))


def default_subjects(runs: Sequence[Run]) -> list[Run]:
    """The runs a page about finished runs opens on, best first: the reference run of each recipe
    by validation accuracy (by_validation), then the user's own newest
    finished run trained for two epochs or more beside them. An unfinished run, a 1-epoch trial of
    the user's or a sweep cell is never among them (a reference run counts whatever its epochs: the
    speedrun recipe is one epoch long). Only when none qualifies, the newest finished run (so a lab
    holding a single quick trial still opens on it)."""
    finished = [r for r in runs if r.finished_with("test figure")]
    reference = by_validation([r for r in finished if is_recipe_reference(r)])
    own = [r for r in finished if not r.reference and r.epochs_done >= 2]
    newest_own = tables.newest(own)
    chosen = reference + ([newest_own] if newest_own else [])
    if not chosen and finished:
        chosen = [tables.newest(finished)]
    return chosen


def by_meaning(runs: Sequence[Run]) -> list[Run]:
    """`runs` for a picker: default_subjects first, then the others in their given order."""
    first = default_subjects(runs)
    ids = {r.run_id for r in first}
    return first + [r for r in runs if r.run_id not in ids]


# --- durations and digits ---------------------------------------------------------------------

def format_seconds(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so a 28x28 digit (or an RGB heatmap, 28x28x3) stays crisp
    in the browser."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image) * 255, 0, 255).astype(np.uint8)
    return image.repeat(scale, 0).repeat(scale, 1)


def digit_image(image: np.ndarray, width: int = 140, caption: str | None = None,
                output_format: str = "auto") -> None:
    """One digit (uint8 0..255 or floats on [0, 1]) shown large and crisp (output_format="PNG":
    lossless, pixel for pixel what the models see, as the Sketch page shows it)."""
    scale = max(1, width // image.shape[-1])
    st.image(enlarge(image, scale), caption=caption, width=width, output_format=output_format)


def digit_grid(images: np.ndarray, captions: Sequence[str] | None = None, *, size: int = 84,
               empty: str = "No images to show.") -> None:
    """A wrapping grid of digits with a caption under each."""
    if len(images) == 0:
        st.caption(empty)
        return
    scale = max(1, size // images.shape[-1])
    st.image([enlarge(im, scale) for im in images], caption=list(captions) if captions is not None else None,
             width=size)


# --- page openers -----------------------------------------------------------------------------

def finished_runs_or_stop(what_next: str, *, needs: str = "predictions") -> list[Run]:
    """The finished runs that have saved `needs` ("predictions" or "weights"), after warning
    about damaged run folders; when there is none, say `what_next` and stop the page."""
    runs = load_runs()
    finished = [r for r in runs if r.finished_with(needs)]
    if not finished:
        no_runs_notice(what_next)
        st.stop()
    show_run_warnings(runs)
    return finished


def finished_run_or_stop(what_next: str, key: str, needs_mnist: str | None = None):
    """The opening of a page about one finished run: say what to do when there is none,
    warn about damaged runs, let the user pick one (its id follows the URL's ?run=), and
    load its saved predictions. Returns (runs with predictions, picked run, predictions);
    stops the page when any of them is missing."""
    finished = finished_runs_or_stop(what_next)
    if needs_mnist and not require_mnist(needs_mnist):
        st.stop()
    run = pick_run("Run", by_meaning(finished), key=key, query_param="run")
    preds = saved_predictions(run)
    if preds is None:
        st.stop()
    return finished, run, preds
