"""The models behind the pages: each run's model loaded once per weights file, the Sketch page's
forward passes, scores on the personal handwriting set, and the device to resume a run on.
Models live in st.cache_resource, keyed by the run and the stamp of its weights file."""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.analysis.calibration import tempered
from core.analysis.predict import Predictor
from core.data import handwriting
from core.data.images import normalize
from core.notadigit.detector import Detector, outputs, read_kept
from core.store.folder import OOD, WEIGHTS
from core.store.runs import Run
from dashboard.notices import report
from dashboard.state import checkpoints_base, file_mtime, file_stamp
from dashboard.text import md_text


@st.cache_resource(max_entries=32, show_spinner="Loading model…")
def cached_predictor(base: str, run_id: str, weights: tuple | None):
    return Predictor.from_run(run_id, base)


@st.cache_resource(max_entries=32, show_spinner=False)
def _kept_detector(base: str, run_id: str, weights: tuple | None, kept: tuple | None):
    return read_kept(run_id, base)


def detector(run: Run) -> tuple[Detector | None, str | None]:
    """The run's kept not-a-digit detector (core.notadigit.detector) and None, or None and why it has
    none usable ("damaged: ..."; None: not fitted yet). Cached per weights and detector file."""
    return _kept_detector(checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS), file_stamp(run.path / OOD))


def predictor(run: Run):
    """A loaded model for the run, or None after showing why not (see report). Cached per run
    and weights file: loaded once, and again only when the run's weights file is replaced."""
    try:
        return cached_predictor(checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS))
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


def probabilities(models: Sequence, image: np.ndarray, temperatures: Sequence[float] | None = None,
                  detectors: Sequence | None = None) -> list:
    """Each model's class probabilities (10,) for one 28x28 image on [0, 1] (the Sketch page), its
    logits divided by its temperature where given (1: the model's own confidences). With
    `detectors` (a not-a-digit detector or None per model), (probabilities, outlier score or None)
    per model.

    The image is normalised once for all the models, and the forward passes run under
    inference_mode on one thread (`one_thread`)."""
    batch = normalize(image)
    with one_thread(), torch.inference_mode():
        scales = temperatures or [1.0] * len(models)
        if detectors is None:
            return [tempered(model.model(batch), t)[0].numpy() for model, t in zip(models, scales)]
        judged = []
        for model, t, found in zip(models, scales, detectors):
            if found is None:
                judged.append((tempered(model.model(batch), t)[0].numpy(), None))
                continue
            out = outputs(model.model, batch, many=False)
            judged.append((tempered(out.logits, t)[0].numpy(), float(found.scores(out)[0])))
        return judged


@contextlib.contextmanager
def one_thread():
    """Forward passes of one image, on one thread: a single image is too small to share, and a
    second thread waits for a core that a training job may be using (stalls of tens of ms)."""
    with _TORCH_THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@st.cache_data(ttl=600, max_entries=64, show_spinner=False)
def _handwriting_score(base: str, run_id: str, weights: tuple | None, folder: str, set_mtime: int) -> dict:
    hw = handwriting.load_set(folder)
    model = cached_predictor(base, run_id, weights)
    return handwriting.score(model.probabilities(hw.unit_images), hw.labels)


def handwriting_scores(runs: Sequence[Run], hw: handwriting.HandwritingSet) -> pd.DataFrame:
    """Each run's accuracy on the personal handwriting set (re-scored when either changes)."""
    folder = str(handwriting.handwriting_dir().resolve())
    set_mtime = file_mtime(handwriting.set_path())
    rows = []
    for run in runs:
        try:
            result = _handwriting_score(checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS),
                                        folder, set_mtime)
        except Exception as exc:  # noqa: BLE001 - report() keeps a bug's traceback; other runs still score
            report(exc, f"**{md_text(run.name)}**: cannot score it")
            continue
        rows.append({"model": run.name, "arch": run.arch, **result, "test_acc": run.test_acc})
    return pd.DataFrame(rows, columns=["model", "arch", "correct", "total", "accuracy", "test_acc"])


def resume_device(run: Run) -> str | None:
    """The device to resume `run` on: None (its own) when this machine has it, else 'cpu' (a
    run made for 'cuda' on a machine without a GPU)."""
    if run.config.get("device") == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return None
