"""Reading runs: a run folder (core.store.folder) as a `Run`, the listing of the store, the
model, weights, test predictions and resume state of a run, and renaming or deleting one."""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file

from core.config import field_specs, name_problem
from core.fsio import atomic_write_json
from core.metrics import check_predictions
from core.rebuild import RebuildError, build_model, saved_members
from core.stats import wilson_percent
from core.store.folder import (ACTIVE, CONFIG, DAMAGED, FORMAT_VERSION, HISTORY, HISTORY_COLUMNS, LOCK_NAME,
                               METRICS, PREDICTIONS, PROGRESS, REFERENCE, RUN_ID, STATUS, TRAIN_STATE, WEIGHTS,
                               RunError, checkpoints_dir, effective_status, is_regular_file, read_json,
                               read_json_checked, read_run_file, run_dir)


def _read_history(path: Path) -> tuple[pd.DataFrame, str | None]:
    """(history, problem): a missing file or a header-only one is empty and no problem. Every
    column is numeric: a cell that is not a number is read as missing (NaN) and named."""
    empty = pd.DataFrame(columns=HISTORY_COLUMNS)
    data, problem = read_run_file(path)
    if data is None:
        return empty, problem
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return empty, f"{HISTORY} is unreadable"
    if not set(HISTORY_COLUMNS) <= set(frame.columns):
        return empty, f"{HISTORY} is unreadable (columns missing)"
    bad = []
    for column in HISTORY_COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if (numbers.isna() & frame[column].notna()).any():
            bad.append(column)
        frame[column] = numbers
    if bad:
        return frame, f"{HISTORY} has cells that are not numbers in {', '.join(bad)} (shown as blank)"
    return frame, None


@functools.cache  # the dataclass does not change while the program runs; load_run asks per run
def _config_types() -> dict[str, tuple[type, ...]]:
    """TrainConfig field -> the JSON types its value may have in config.json (None always may,
    except for arch: a recipe field's None means 'the architecture's value')."""
    return {spec.name: spec.json_types for spec in field_specs()}


def _check_config(config: dict) -> tuple[dict, list[str]]:
    """(config without the values of the wrong type, a warning for each): code downstream can
    rely on `epochs` being an int and `arch` a str."""
    problems = []
    version = config.get("format")
    if "format" not in config:
        problems.append("written by an older format; some views may be missing")
    elif not isinstance(version, int) or isinstance(version, bool):
        problems.append(f"{CONFIG}'s format is {version!r}, not a version number")
    elif version > FORMAT_VERSION:
        problems.append(f"written by a newer MNIST Lab (format {version})")
    clean = dict(config)
    for name, types in _config_types().items():
        if name not in config or (config[name] is None and name != "arch"):
            continue
        value = config[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{CONFIG}'s {name} is {value!r:.40}, not {_TYPE_WORDS[types[-1]]}")
            del clean[name]
    return clean, problems


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
_STATUS_TEXT = ("status", "host", "created", "updated", "message")


def _check_status(info: dict) -> tuple[dict, list[str]]:
    """(status.json without the values of the wrong type, a warning for each)."""
    clean, problems = dict(info), []
    for name in _STATUS_TEXT:
        if name in info and not isinstance(info[name], str):
            problems.append(f"{STATUS}'s {name} is {info[name]!r:.40}, not text")
            del clean[name]
    if "pid" in info and (not isinstance(info["pid"], int) or isinstance(info["pid"], bool)):
        problems.append(f"{STATUS}'s pid is {info['pid']!r:.40}, not a number")
        del clean["pid"]
    return clean, problems


FINISHED_NEEDS = ("test figure", "predictions", "weights")  # what Run.finished_with can ask for


@dataclass
class Run:
    """What a run folder holds, read without loading weights or predictions."""
    run_id: str
    path: Path
    config: dict
    status: str
    status_info: dict
    history: pd.DataFrame
    metrics: dict
    progress: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return str(self.config.get("arch", "?"))

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_id)

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def val_acc(self) -> float | None:
        """Validation accuracy of the weights the run keeps: those of its last finished epoch
        (the EMA's, with --ema), the same weights the test figures and model.safetensors hold.
        Runs are compared and chosen by this figure, never by the test set."""
        if not len(self.history):
            return None
        value = pd.to_numeric(self.history["val_acc"], errors="coerce").iloc[-1]
        return None if pd.isna(value) else float(value)

    @property
    def test_acc(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def test_counts(self) -> tuple[int, int] | None:
        """(test images right, test images) from the saved confusion matrix; None without one."""
        matrix = self.metrics.get("confusion_matrix")
        try:
            cm = np.asarray(matrix, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            return None
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or not cm.size or (cm < 0).any() or cm.sum() <= 0:
            return None
        return int(np.trace(cm)), int(cm.sum())

    @property
    def test_ci(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of the test accuracy, in %; None without test counts."""
        counts = self.test_counts
        return wilson_percent(*counts) if counts else None

    @property
    def has_weights(self) -> bool:
        return is_regular_file(self.path / WEIGHTS)

    @property
    def has_predictions(self) -> bool:
        return is_regular_file(self.path / PREDICTIONS)

    @property
    def reference(self) -> bool:
        """Shipped with MNIST Lab (core.store.reference): shown like any run, never deleted or renamed."""
        return is_regular_file(self.path / REFERENCE)

    def finished_with(self, needs: str) -> bool:
        """Finished, with what a reader of finished runs needs: its test figure ("test figure":
        the test accuracy it recorded, what averages and comparisons count), its saved test
        predictions ("predictions") or its weights ("weights")."""
        if needs not in FINISHED_NEEDS:
            raise ValueError(f"needs is one of {', '.join(FINISHED_NEEDS)}, not {needs!r}")
        if self.status != "finished":
            return False
        if needs == "test figure":
            return self.test_acc is not None
        return self.has_predictions if needs == "predictions" else self.has_weights


RESUMABLE = ("interrupted", "cancelled", "failed")


def is_resumable(run: Run) -> bool:
    """The one definition: stopped before its end with at least one saved epoch (history lists
    only epochs whose train state was saved first, so a listed epoch can always be resumed), and
    trained (an ensemble is combined, never trained)."""
    return (run.status in RESUMABLE and run.epochs_done > 0 and bool(run.config)
            and run.config.get("kind") != "ensemble")


def load_run(run_id: str, root: str | os.PathLike | None = None) -> Run:
    """Read a run's small files. Never raises for damaged content: problems become warnings,
    each naming the file and what is wrong; a folder that cannot be read at all is 'damaged'."""
    path = run_dir(run_id, root)
    if not path.is_dir():
        raise RunError(f"no run {run_id!r} in {checkpoints_dir(root)}")
    try:
        os.listdir(path)
    except OSError as exc:  # no permission: nothing in it can be read
        return Run(run_id, path, {}, DAMAGED, {}, pd.DataFrame(columns=HISTORY_COLUMNS), {}, {},
                   [f"the run folder is not readable ({exc.strerror or exc})"])
    warnings = []
    config, problem = read_json_checked(path / CONFIG)
    if config is None:
        warnings.append(problem or f"{CONFIG} is missing")
        config = {}
    else:
        config, problems = _check_config(config)
        warnings += problems
    status_info, problem = read_json_checked(path / STATUS)
    if not status_info:
        warnings.append(problem or f"{STATUS} is missing or empty")
        status_info = {}
    status_info, problems = _check_status(status_info)
    warnings += problems
    status = effective_status(status_info, path)
    if os.path.lexists(path / LOCK_NAME) and not is_regular_file(path / LOCK_NAME):
        warnings.append(f"{LOCK_NAME} is not a regular file, so no process can own the run")
    history, problem = _read_history(path / HISTORY)
    if problem:
        warnings.append(problem)
    metrics, problem = read_json_checked(path / METRICS)
    if problem or (status == "finished" and not metrics):
        warnings.append(problem or f"{METRICS} is missing")
    progress, problem = read_json_checked(path / PROGRESS)
    if problem:
        warnings.append(problem)
    if config.get("kind") == "ensemble" and status != "finished":  # written whole since issue 19
        warnings.append("an ensemble whose writing was killed before it finished: delete it")
    return Run(run_id, path, config, status, status_info, history, metrics or {}, progress or {}, warnings)


def list_run_ids(root: str | os.PathLike | None = None) -> list[str]:
    base = checkpoints_dir(root)
    if not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if p.is_dir() and RUN_ID.match(p.name)
                   and not p.name.startswith(".")), reverse=True)


def given_twice(run_ids: list[str], root: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """The first two of `run_ids` that name one run folder (an id given twice, or a link in the
    store to a run's folder beside its own id), or None. Ids that name no run are left to the caller."""
    seen: dict[Path, str] = {}
    for run_id in run_ids:
        try:
            path = run_dir(run_id, root)  # resolved: a link names the folder it leads to
        except RunError:
            continue
        if path in seen:
            return seen[path], run_id
        seen[path] = run_id
    return None


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Every run, newest first."""
    runs = []
    for run_id in list_run_ids(root):
        try:
            runs.append(load_run(run_id, root))
        except RunError:
            continue  # removed while we listed
    return runs


def load_state_dict(run_id: str, root: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The run's weights, through safetensors (no unpickling)."""
    path = run_dir(run_id, root) / WEIGHTS
    if not is_regular_file(path):
        raise RunError(f"run {run_id!r} has no saved weights yet")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"the weights of run {run_id!r} are not a valid safetensors file ({exc})") from None


def load_model(run_id: str, root: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Rebuild the run's architecture from config.json (core.rebuild) and load its weights, in
    eval mode."""
    run = load_run(run_id, root)
    if run.status == DAMAGED:
        raise RunError(f"run {run_id!r} cannot be used: {'; '.join(run.warnings)}")
    if "arch" not in run.config:  # missing, or not a name (load_run dropped it and warned)
        why = next((w for w in run.warnings if CONFIG in w), f"{CONFIG} has no arch")
        raise RunError(f"run {run_id!r} names no architecture to rebuild: {why}")
    arch = run.config["arch"]
    state = load_state_dict(run_id, root)
    try:
        model = build_model(run.config)
    except RebuildError as exc:
        raise RunError(f"run {run_id!r} cannot be rebuilt: {exc}") from None
    if run.config.get("kind") == "ensemble":  # runs combined without training (core.analysis.ensemble)
        listed, saved = len(run.config["member_archs"]), saved_members(state)
        if listed != saved:
            raise RunError(f"run {run_id!r} cannot be rebuilt: {CONFIG}'s member_archs lists {listed} members "
                           f"but its weights hold {saved}: the run folder was edited or damaged")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        saved, today = (sum(t.numel() for t in d.values()) for d in (state, model.state_dict()))
        why = (f"they hold {saved:,} values and today's {arch} has {today:,}: the run was trained "
               f"with an earlier version of {arch}; train it again" if saved != today
               else str(exc).splitlines()[0])
        raise RunError(f"the weights of run {run_id!r} do not fit {arch}: {why}") from None
    return model.to(device).eval()


WEIGHTS_LIMIT = 2 << 30  # bytes: the largest ensemble of the lab's models holds a few hundred MB


def weights_sha256(run_id: str, root: str | os.PathLike | None = None) -> str:
    """The SHA-256 of the run's weights file: what a result kept beside them (a map, a
    calibration) records, so that new weights make it stale."""
    path = run_dir(run_id, root) / WEIGHTS
    if not is_regular_file(path):
        raise RunError(f"run {run_id!r} has no saved weights")
    try:
        if path.stat().st_size > WEIGHTS_LIMIT:
            raise RunError(f"the weights of run {run_id!r} are damaged: {WEIGHTS} holds {path.stat().st_size:,} bytes, "
                           f"more than any model of the lab ({WEIGHTS_LIMIT:,})")
        with open(path, "rb") as handle:  # in chunks, not read whole
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise RunError(f"the weights of run {run_id!r} cannot be read: {exc.strerror or exc}") from None


PREDICTIONS_LIMIT = 256 << 20  # bytes: MNIST's test set's predictions hold about 600 KB


def load_predictions(run_id: str, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Saved test predictions: labels (N,), predicted (N,), probabilities (N, 10), checked by
    core.metrics.check_predictions (shapes, classes, finite probabilities summing to 1), so
    every reader gets predictions it can use or a RunError that names the run and the problem."""
    path = run_dir(run_id, root) / PREDICTIONS
    if not path.parent.is_dir():
        raise RunError(f"no run {run_id!r} in {checkpoints_dir(root)}")
    data, problem = read_run_file(path, PREDICTIONS_LIMIT)
    if problem:
        raise RunError(f"the test predictions of run {run_id!r} cannot be read: {problem}")
    if data is None:
        raise RunError(f"run {run_id!r} has no saved test predictions")
    try:
        arrays = {k: v.numpy() for k, v in load_tensors(data).items()}
    except (SafetensorError, ValueError, TypeError) as exc:
        raise RunError(f"the predictions of run {run_id!r} are unreadable ({exc})") from None
    # a reference run stores labels as uint8 and probabilities as float16 (core.store.reference)
    for key, dtype in (("labels", np.int64), ("predicted", np.int64), ("probabilities", np.float32)):
        if key in arrays and np.issubdtype(arrays[key].dtype, np.integer if dtype is np.int64 else np.floating):
            arrays[key] = arrays[key].astype(dtype, copy=False)
    problem = check_predictions(arrays)
    if problem:
        raise RunError(f"the test predictions of run {run_id!r} cannot be used: {problem}")
    return arrays


def train_state_exists(run_path: Path) -> bool:
    """Whether the run finished an epoch that a resume can start from."""
    return (run_path / TRAIN_STATE).exists()


def load_train_state(run_id: str, root: str | os.PathLike | None = None) -> dict:
    """Resume state, read with weights_only=True: a crafted pickle cannot run code."""
    path = run_dir(run_id, root) / TRAIN_STATE
    if not path.is_file():
        raise RunError(f"run {run_id!r} has no finished epoch to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and containers
        why = "it is not a plain checkpoint"
    except Exception as exc:  # truncated, overwritten, not a zip: damaged
        why = f"it is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    raise RunError(f"refused to load {path.name} of run {run_id!r}: {why}. Its history is kept; to train "
                   f"it again from epoch 1, delete {path} and resume")


def rename_run(run_id: str, new_name: str, root: str | os.PathLike | None = None) -> None:
    """Change a run's display name (its id and folder stay, so references hold)."""
    new_name = new_name.strip()
    if name_problem(new_name):
        raise RunError(name_problem(new_name))
    path = run_dir(run_id, root)
    _refuse_reference(path, "renamed")
    config = read_json(path / CONFIG)
    if config is None:
        raise RunError(f"run {run_id!r} has no readable {CONFIG}")
    config["name"] = new_name
    atomic_write_json(path / CONFIG, config)


def _refuse_reference(path: Path, verb: str) -> None:
    if is_regular_file(path / REFERENCE):
        raise RunError(f"{path.name} is a reference run shipped with MNIST Lab: it cannot be {verb}. "
                       "Train your own run of its recipe to change one")


def delete_run(run_id: str, root: str | os.PathLike | None = None) -> None:
    run = load_run(run_id, root)
    _refuse_reference(run.path, "deleted")
    if run.status in ACTIVE:
        raise RunError(f"run {run_id!r} is {run.status}: cancel it first")
    shutil.rmtree(run.path)
