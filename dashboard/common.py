"""Widgets and cached readers shared by every page (the pages stay thin views over core).

Caching: a run folder is read once and again only when one of its small files changes
(load_runs keeps each Run beside the mtimes, sizes and inodes of its files), so a finished run
costs a few stats per render and the Train page's timer looks at the active runs alone;
predictions are re-read when their file changes, models live in st.cache_resource. Every call
into core passes root=None so $MNIST_LAB_CHECKPOINTS / $MNIST_LAB_DATA steer it.

Errors: a LabError (core.errors) is the user's to read and becomes a message; anything else is a
bug or a fault of the machine and is shown with its traceback (st.exception).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.data import mnist as data_mod
from core.data import handwriting
from core.metrics import check_predictions
from core.errors import LabError
from core.store.runs import (ACTIVE, DATASET, PREDICTIONS, SMALL_FILES, WEIGHTS, Run, RunError, checkpoints_dir,
                       effective_status, list_run_ids, load_predictions, load_run, read_json)

VAL_HELP = "validation accuracy of the weights the run keeps and tests (its last epoch; the EMA's with EMA)"
STATUS_COLOURS = {"running": "blue", "queued": "violet", "finished": "green", "failed": "red",
                  "cancelled": "gray", "interrupted": "orange", "unknown": "gray",
                  "damaged": "red"}
STATUS_ICONS = {"running": ":material/progress_activity:", "queued": ":material/schedule:",
                "finished": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/cancel:", "interrupted": ":material/pause_circle:",
                "unknown": ":material/help:", "damaged": ":material/broken_image:"}


# --- text from run folders in Markdown ---------------------------------------------------------

_MD_CUT = ":small[]"  # an empty <span>: nothing to see, but the text on either side is two text nodes
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>$~|{}!#+=&@^]"      # always escaped
                         r"|(?<![^\W_])[-_]|[-_](?![^\W_])"  # - and _, except between two letters or digits
                         r"|:(?!\s)")                        # a colon, except before a space
_MD_LIST_NUMBER = re.compile(r"(^|[\r\n])([ \t]*\d+)([.)])")  # "1." or "1)" opening a line: a list
_MD_CUTS = re.compile(r"(?i:(?<=www)(?=\.))|(?<=[-<>~=])(?=\\[-<>~=])")


def _md_escape(match: re.Match) -> str:
    char = match.group()
    if char == ":":
        return "\\:" + _MD_CUT
    return (_MD_CUT if char == "@" else "") + "\\" + char


def md_text(text: object) -> str:
    """`text` (a run's name or group, a message that quotes values from a run folder) made safe
    to put in a string Streamlit renders as Markdown (st.markdown, captions, alerts, toasts, the
    labels of tabs, expanders, widgets and metrics, radio options): it shows exactly as typed,
    as no link, emphasis, code, heading, list, table, HTML, colour directive (`:red[...]`), icon
    (`:material/...:`), emoji (`:smile:`), LaTeX (`$x$`) or typographic arrow (`->`).

    A backslash goes before each ASCII punctuation character that can mean something in
    CommonMark, GFM or Streamlit (CommonMark shows `\\X` as X): always before \\ ` * [ ] < > $ ~ |
    { } ! # + = & @ ^; before - and _ unless both neighbours are letters or digits (`t10k-labels`,
    `member_archs`: no emphasis, list or arrow can start there); before a colon unless a space
    follows; before the . or ) of a number that opens a line. ' " , ; ? % / ( and a lone . stay
    as they are, so messages read the same in the page's source.

    Streamlit 1.67's frontend also changes the text after the Markdown is parsed, where the
    backslashes are gone: in each text node, web and e-mail addresses become links (GFM
    autolink literals: `https://...`, `www....`, `a@b.c`), `:material_x:` and `:streamlit:`
    icons, `:smile:` an emoji, `->`, `--` and `>=` arrows and dashes. Those patterns are cut
    apart with an empty `:small[]` directive (an empty span): after each escaped colon, before
    each @, before the dot after "www" and between two of - < > ~ =.
    tests/e2e/test_names_browser.py checks all this in Chromium.

    The result is for Markdown only (a table, a chart or st.text shows text as it is) and must
    not follow a colon directly (the colon could join it into a shortcode, or be the one before
    a `:small[]`, which is then no directive)."""
    escaped = _MD_SPECIAL.sub(_md_escape, str(text))
    escaped = _MD_LIST_NUMBER.sub(r"\1\2\\\3", escaped)
    return _MD_CUTS.sub(_MD_CUT, escaped)


# --- cached readers ---------------------------------------------------------------------------

def _base() -> str:
    return str(checkpoints_dir(None).resolve())


def _signature(folder: str) -> tuple:
    """(mtime, size, inode) of each file `load_run` reads (core.store.runs.SMALL_FILES): every run file
    is written by renaming a new file into place, so any write changes the signature."""
    out = []
    for name in SMALL_FILES:
        try:
            stat = os.stat(os.path.join(folder, name))
            out.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class _RunStore:
    """What one checkpoints folder held when last read: run id -> (signature, Run), and the
    folder's listing with the (mtime, inode) of the folder it came from. Shared by every session
    of this process; a Run in it is never changed (load_runs hands out copies where the status
    differs), so no reader sees another's edit."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[tuple, Run]] = {}
        self.listing: tuple[tuple, list[str]] | None = None


@st.cache_resource(max_entries=8, show_spinner=False)
def _store(base: str) -> _RunStore:
    return _RunStore()


def _folder_stamp(base: str) -> tuple | None:
    try:
        stat = os.stat(base)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _read(store: _RunStore, base: str, run_id: str) -> Run | None:
    """The run, read again only if its files changed since it was last read."""
    signature = _signature(os.path.join(base, run_id))
    cached = store.runs.get(run_id)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        run = load_run(run_id, base)
    except RunError:  # removed while we listed
        store.runs.pop(run_id, None)
        return None
    store.runs[run_id] = (signature, run)
    return run


def _live(run: Run) -> Run:
    """The run with its status as of now: an active one (by its files) counts only while a
    process holds its lock, which no file records, so it is checked on every call."""
    if run.status_info.get("status") not in ACTIVE:
        return run
    status = effective_status(run.status_info, run.path)
    return run if status == run.status else dataclasses.replace(run, status=status)


def load_runs(*, active_only: bool = False) -> list[Run]:
    """Every run, newest first. Each run folder is read once and then only when one of its
    files changed (a finished, failed or cancelled run is read once); liveness is checked anew.

    active_only (the Train page's one-second timer): only the runs whose files say queued or
    running are looked at; every other run is the one read last time, and the folder is listed
    again only when runs were added or removed."""
    base = _base()
    store = _store(base)
    stamp = _folder_stamp(base)
    if active_only and store.listing is not None and store.listing[0] == stamp:
        ids = store.listing[1]
    else:
        ids = list_run_ids(base)
        store.listing = (stamp, ids)
        for gone in set(store.runs) - set(ids):
            store.runs.pop(gone, None)
    runs = []
    for run_id in ids:
        cached = store.runs.get(run_id)
        if active_only and cached is not None and cached[1].status_info.get("status") not in ACTIVE:
            run = cached[1]  # settled: its folder is not even looked at
        else:
            run = _read(store, base, run_id)
        if run is not None:
            runs.append(_live(run))
    return runs


def dataset_info(run: Run) -> dict:
    """What the run trained on (its dataset.json), or {} when it has none (older runs)."""
    path = run.path / DATASET
    return _read_dataset(str(path), _mtime(path))


@st.cache_data(max_entries=256, show_spinner=False)
def _read_dataset(path: str, mtime: int) -> dict:
    if not mtime:  # no such file
        return {}
    return read_json(Path(path)) or {}


def _mtime(path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@st.cache_data(ttl=600, max_entries=24, show_spinner=False)
def _read_predictions(base: str, run_id: str, mtime: int) -> dict[str, np.ndarray]:
    return load_predictions(run_id, base)


CLEAN_HELP = ("Test accuracy on the 9,985 test images whose label was not among the 15 that human "
              "reviewers confirmed wrong (Northcutt et al., 2021; see the Label issues page)")


@st.cache_data(max_entries=4096, show_spinner=False)
def _accuracy_without_confirmed(base: str, run_id: str, mtime: int) -> tuple[float | None, str | None]:
    """(the figure, None), or (None, why the predictions cannot be used). Kept apart from the
    predictions' own small cache: Compare's table asks it of every run on every rerun, and one
    figure per run is all it needs."""
    from core.analysis.label_issues import accuracy_without_confirmed
    try:
        return accuracy_without_confirmed(run_id, base)[1], None
    except RunError as exc:
        return None, str(exc)


def accuracy_without_confirmed(run: Run) -> float | None:
    """The run's test accuracy without the 15 confirmed label errors, None without predictions."""
    if not run.has_predictions:
        return None
    return _accuracy_without_confirmed(_base(), run.run_id, _mtime(run.path / PREDICTIONS))[0]


def predictions_problem(run: Run) -> str | None:
    """Why the run's saved test predictions cannot be used, None if they can (or there are none)."""
    if not run.has_predictions:
        return None
    return _accuracy_without_confirmed(_base(), run.run_id, _mtime(run.path / PREDICTIONS))[1]


def predictions(run: Run) -> dict[str, np.ndarray] | None:
    """The run's saved test predictions, or None after showing a warning."""
    try:
        preds = _read_predictions(_base(), run.run_id, _mtime(run.path / PREDICTIONS))
    except RunError as exc:
        st.warning(f"**{md_text(run.name)}**: {md_text(exc)}", icon=":material/warning:")
        return None
    problem = check_predictions(preds)
    if problem:
        st.warning(f"**{md_text(run.name)}**: {md_text(problem)}", icon=":material/warning:")
        return None
    return preds


def _stamp(path) -> tuple | None:
    """(mtime, size, inode) of a file, None if it is missing: weights are written by renaming a
    new file into place, so a rewritten file always has another stamp."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


@st.cache_resource(max_entries=32, show_spinner="Loading model…")
def _predictor(base: str, run_id: str, weights: tuple | None):
    from core.analysis.predict import Predictor
    return Predictor.from_run(run_id, base)


def predictor(run: Run):
    """A loaded model for the run, or None after showing why not (see report). Cached per run
    and weights file: loaded once, and again only when the run's weights file is replaced."""
    try:
        return _predictor(_base(), run.run_id, _stamp(run.path / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - report() keeps a bug's traceback; other models still show
        report(exc, f"**{md_text(run.name)}**: cannot load its model")
        return None


@st.cache_resource(show_spinner=False)
def freeze_heap() -> bool:
    """Move every object alive now (imported modules, loaded models) out of the garbage
    collector's sight, once per process (gc.freeze). The dashboard's process holds millions of
    long-lived objects (torch, pandas, Altair's schema), and a full collection walked them all:
    170-260 ms every second or two while the Sketch page was being drawn on (measured with
    gc.callbacks), which was most of its slowest strokes. Collections still run, over new objects."""
    gc.collect()
    gc.freeze()
    return True


_TORCH_THREADS = threading.Lock()


def probabilities(models: Sequence, image: np.ndarray) -> list[np.ndarray]:
    """Each model's class probabilities (10,) for one 28x28 image on [0, 1] (the Sketch page).

    The image is normalised once for all the models, and the forward passes run under
    inference_mode on one thread: a single image is too small to share, and a second thread
    waits for a core that a training job may be using (stalls of tens of ms)."""
    import torch
    from core.data.images import normalize
    batch = normalize(image)
    with _TORCH_THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return [model.model(batch).softmax(1)[0].numpy() for model in models]
        finally:
            torch.set_num_threads(threads)


@st.cache_data(ttl=600, max_entries=64, show_spinner=False)
def _handwriting_score(base: str, run_id: str, weights: tuple | None, folder: str, set_mtime: int) -> dict:
    hw = handwriting.load_set(folder)
    model = _predictor(base, run_id, weights)
    return handwriting.score(model.probabilities(hw.unit_images), hw.labels)


def handwriting_scores(runs: Sequence[Run], hw: handwriting.HandwritingSet) -> pd.DataFrame:
    """Each run's accuracy on the personal handwriting set (re-scored when either changes)."""
    folder = str(handwriting.handwriting_dir().resolve())
    set_mtime = _mtime(handwriting.set_path())
    rows = []
    for run in runs:
        try:
            result = _handwriting_score(_base(), run.run_id, _stamp(run.path / WEIGHTS),
                                        folder, set_mtime)
        except Exception as exc:  # noqa: BLE001 - report() keeps a bug's traceback; other runs still score
            report(exc, f"**{md_text(run.name)}**: cannot score it")
            continue
        rows.append({"model": run.name, "arch": run.arch, **result, "test_acc": run.test_acc})
    return pd.DataFrame(rows, columns=["model", "arch", "correct", "total", "accuracy", "test_acc"])


@st.cache_resource(max_entries=2, show_spinner="Reading MNIST…")
def _mnist(raw: str) -> dict[str, np.ndarray]:
    mnist = data_mod.load_mnist(None)
    return {"train_images": mnist.train_images.numpy(), "train_labels": mnist.train_labels.numpy(),
            "test_images": mnist.test_images.numpy(), "test_labels": mnist.test_labels.numpy()}


def mnist() -> dict[str, np.ndarray] | None:
    """MNIST as numpy arrays (cached), or None after showing why it is unusable."""
    try:
        return _mnist(str(data_mod.raw_dir(None).resolve()))
    except data_mod.DataError as exc:
        st.error(str(exc))
        return None


def test_images() -> np.ndarray | None:
    arrays = mnist()
    return None if arrays is None else arrays["test_images"]


# --- notices ----------------------------------------------------------------------------------

def report(exc: Exception, context: str = "", *, error: bool = False) -> None:
    """Show an error caught on a page. A LabError's message was written for the user: it becomes
    a warning (an error with error=True), after `context` (Markdown; the message is shown as
    text, md_text: it may quote a run's name or a value from a run folder). Anything else is a
    bug or a fault of the machine, not the user's to fix: it is shown with its traceback
    (st.exception)."""
    if isinstance(exc, LabError):
        text = f"{context}: {md_text(exc)}" if context else md_text(exc)
        if error:
            st.error(text, icon=":material/error:")
        else:
            st.warning(text, icon=":material/warning:")
    else:
        if context:
            st.caption(context)
        st.exception(exc)


def require_mnist(purpose: str = "This page") -> bool:
    """True if MNIST is on disk; otherwise say so and offer a "Fetch MNIST" button."""
    if data_mod.is_available(None):
        return True
    with st.container(border=True):
        st.warning(f"**MNIST is not on this machine yet.** {purpose} needs it "
                   f"(expected in `{data_mod.raw_dir(None)}`).", icon=":material/cloud_download:")
        st.caption("Fetching copies the four original files (about 55 MB) and checks their MD5 sums. "
                   "From a terminal: `python -m core fetch`.")
        if st.button("Fetch MNIST", type="primary", icon=":material/download:", key="fetch_mnist"):
            with st.status("Fetching MNIST…", expanded=True) as status:
                try:
                    data_mod.fetch(None, report=status.write)
                except data_mod.DataError as exc:
                    status.update(label="Could not fetch MNIST", state="error")
                    st.error(str(exc))
                    return False
                status.update(label="MNIST is ready", state="complete")
            _mnist.clear()
            st.rerun()
    return False


def resume_device(run: Run) -> str | None:
    """The device to resume `run` on: None (its own) when this machine has it, else 'cpu' (a
    run made for 'cuda' on a machine without a GPU)."""
    import torch
    if run.config.get("device") == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return None


def no_runs_notice(what_next: str, link_to_train: bool = True) -> None:
    """Say what to do when there is nothing to show yet."""
    st.info(what_next, icon=":material/lightbulb:")
    if link_to_train:
        st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")


def show_run_warnings(runs: Sequence[Run]) -> None:
    """One warning listing every run whose folder is damaged, half-written or old."""
    damaged = [(r, r.warnings) for r in runs if r.warnings]
    if not damaged:
        return
    lines = "\n".join(f"- `{r.run_id}`: {'; '.join(map(md_text, p))}" for r, p in damaged[:20])
    more = f"\n- … and {len(damaged) - 20} more" if len(damaged) > 20 else ""
    st.warning(f"**{len(damaged)} run folder{'s' if len(damaged) != 1 else ''} "
               f"{'have' if len(damaged) != 1 else 'has'} problems** (shown as far as readable):\n"
               f"{lines}{more}", icon=":material/warning:")


# --- small widgets ---------------------------------------------------------------------------

def status_badge(status: str) -> None:
    st.badge(status, icon=STATUS_ICONS.get(status), color=STATUS_COLOURS.get(status, "gray"))


def status_text(status: str) -> str:
    """A status as inline markdown badge (for use inside st.markdown)."""
    return f":{STATUS_COLOURS.get(status, 'gray')}-badge[{STATUS_ICONS.get(status, '')} {status}]"


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


# --- charts ----------------------------------------------------------------------------------

def show_history(curves: pd.DataFrame, height: int = 220) -> None:
    """One run's loss and accuracy (core.store.tables.live_curves), train and validation, side by side."""
    colours = alt.Scale(domain=["train", "validation"], range=["#4c78a8", "#f58518"])
    integer_epochs = bool((curves["epoch"] % 1 == 0).all())
    for column, metric in zip(st.columns(2), ("loss", "accuracy")):
        frame = curves[curves["metric"] == metric]
        chart = alt.Chart(frame).mark_line(point=True, strokeWidth=2).encode(
            x=alt.X("epoch:Q", title="epoch",
                    axis=alt.Axis(tickMinStep=1, format="d" if integer_epochs else ".1~f")),
            y=alt.Y("value:Q", title=metric if metric == "loss" else "accuracy (%)",
                    scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~f" if metric == "loss" else ".1~f")),
            color=alt.Color("split:N", title=None, scale=colours, legend=alt.Legend(orient="top")),
            tooltip=[alt.Tooltip("split:N"), alt.Tooltip("epoch:Q", format=".2f"),
                     alt.Tooltip("value:Q", title=metric, format=".4f")],
        ).properties(height=height)
        column.altair_chart(chart, width="stretch")


def probability_chart(probabilities: np.ndarray, height: int = 180) -> alt.Chart:
    """Bars of the ten class probabilities, the predicted class highlighted."""
    frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "probability": probabilities.astype(float)})
    top = str(int(np.argmax(probabilities)))
    return alt.Chart(frame).mark_bar(cornerRadiusEnd=3).encode(
        x=alt.X("digit:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("probability:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.condition(alt.datum.digit == top, alt.value("#f58518"), alt.value("#4c78a8")),
        tooltip=[alt.Tooltip("digit:N"), alt.Tooltip("probability:Q", format=".2%")],
    ).properties(height=height)


def finished_runs_or_stop(what_next: str, *, needs: str = "predictions") -> list[Run]:
    """The finished runs that have saved `needs` ("predictions" or "weights"), after warning
    about damaged run folders; when there is none, say `what_next` and stop the page."""
    runs = load_runs()
    have = (lambda r: r.has_predictions) if needs == "predictions" else (lambda r: r.has_weights)
    finished = [r for r in runs if r.status == "finished" and have(r)]
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
    run = pick_run("Run", finished, key=key, query_param="run")
    preds = predictions(run)
    if preds is None:
        st.stop()
    return finished, run, preds
