"""The run folder: the one module that knows its paths and formats.

checkpoints/<run id>/
  config.json           TrainConfig, everything needed to rebuild and re-run
  status.json           {"status", "pid", "host", "created", "updated", "message"}; an active
                        status counts only while a process holds `lock` (else 'interrupted')
  progress.json         position inside the current epoch (for progress bars)
  history.csv           one row per finished epoch (HISTORY_COLUMNS), rewritten each epoch
  metrics.json          test accuracy/loss, per-class precision/recall, confusion matrix, ...
  model.safetensors     the kept weights: the last epoch's (the EMA's with `ema`), the ones
                        the last validation figure and the test figures describe
                        (safetensors: loading never unpickles)
  predictions.safetensors  test set: labels, predicted, probabilities (10000 x 10)
  train_state.pt        optimizer/scheduler/RNG state at the last finished epoch (for --resume;
                        read with torch.load(weights_only=True))
  dataset.json          what the run trained on: source, rows, test duplicates left out, split sizes
  embedding-<method>.safetensors  the embedding map (core.analysis.embedding), keyed by the weights' SHA-256
  lock                  flock'ed by the process that owns the run; holds its pid
  handover              asks the lock's holder to let go: written by a Ray trial that
                        starts while its sweep's driver holds the run (core.training.raysweep)

Every write goes to a temporary name in the same folder and is renamed into place, so a
reader never sees a torn file. Run ids are checked so none can name a path outside the
checkpoints folder.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import io
import json
import os
import pickle
import re
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from core.config import field_specs, name_problem
from core.errors import LabError
from core.fsio import atomic_write_bytes, atomic_write_json, flock
from core.metrics import check_predictions
from core.rebuild import RebuildError, build_model, saved_members

CHECKPOINTS_ENV = "MNIST_LAB_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 3  # 3: Adam's betas in config.json; 2: every training knob (1 left nesterov and aug_degrees implicit)
# seconds = train_seconds + val_seconds (runs before 2026-11-23 have only `seconds`)
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                   "train_seconds", "val_seconds"]
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
DAMAGED = "damaged"   # what load_run reports for a run folder it cannot read at all (no permission)
LOCK_NAME = "lock"    # held (flock) by the process that owns the run; holds its pid
HANDOVER_NAME = "handover"  # a Ray trial asks its sweep's driver for the run's lock (core.training.raysweep)
CONFIG = "config.json"
STATUS = "status.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
PROGRESS = "progress.json"
WEIGHTS = "model.safetensors"
PREDICTIONS = "predictions.safetensors"
TRAIN_STATE = "train_state.pt"
DATASET = "dataset.json"
LOG_NAME = "train.log"  # output of a job process (core.training.jobs)
REFERENCE = "reference.json"  # marks a reference run shipped with MNIST Lab (core.store.reference)
SMALL_FILES = (CONFIG, STATUS, HISTORY, METRICS, PROGRESS, WEIGHTS)
"""The files `load_run` reads (and the weights' presence): a run changed iff one of them did."""
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RunError(LabError, RuntimeError):
    """A run is missing, unreadable or its id is not allowed; the message says which."""


def checkpoints_dir(root: str | os.PathLike | None = None) -> Path:
    """The checkpoints folder: the argument, else $MNIST_LAB_CHECKPOINTS, else ./checkpoints."""
    return Path(root or os.environ.get(CHECKPOINTS_ENV) or DEFAULT_CHECKPOINTS)


def run_dir(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of `run_id`, refusing ids that could leave the checkpoints folder."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise RunError(f"{run_id!r} is not a valid run id (letters, digits, '.', '_', '-')")
    try:
        base = checkpoints_dir(root).resolve()
        path = (base / run_id).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11's resolve)
        raise RunError(f"run {run_id!r} cannot be opened: {_path_problem(exc)}") from None
    if path.parent != base:
        raise RunError(f"{run_id!r} is not a valid run id")
    return path


def _path_problem(exc: Exception) -> str:
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "its path is a loop of symbolic links"
    return str(getattr(exc, "strerror", None) or exc)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40]


def new_run_id(arch: str, name: str | None = None, root: str | os.PathLike | None = None) -> str:
    """<UTC timestamp>-<arch>[-<name>], unique within the checkpoints folder."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = "-".join(p for p in (stamp, slug(arch), slug(name or "")) if p)
    candidate, n = base, 1
    while run_dir(candidate, root).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save_tensors({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --- locks ----------------------------------------------------------------------------------

class Busy(RunError):
    """Another process holds the lock (it owns the run)."""


class RunLock:
    """The exclusive lock a process holds on a run for as long as it owns it (creates, waits
    for a device, trains). Liveness is 'is the lock held'; the file holds the owner's pid,
    so Cancel signals the process that holds the lock and no other."""

    def __init__(self, path: Path, handle):
        self.path, self.handle = path, handle

    @classmethod
    def claim(cls, run_path: Path, fd: int | None = None) -> "RunLock":
        """Take the run's lock, or adopt `fd`, a descriptor of it inherited from the launcher."""
        path = run_path / LOCK_NAME
        if fd is not None:
            handle = os.fdopen(fd, "r+")
            if not flock(handle, wait=False):  # an inherited descriptor already holds it
                handle.close()
                raise Busy(f"the lock handed to this process for {run_path.name} is not held")
            lock = cls(path, handle)
            lock.set_owner(os.getpid())
            return lock
        handle = open(path, "a+")
        for _ in range(50):  # a reader's liveness probe holds it for microseconds
            if flock(handle, wait=False):
                lock = cls(path, handle)
                lock.set_owner(os.getpid())
                return lock
            time.sleep(0.02)
        owner = read_owner(path)
        handle.close()
        raise Busy(f"run {run_path.name!r} is owned by another process"
                   + (f" (pid {owner})" if owner else "") + ": wait for it, or cancel it first")

    def set_owner(self, pid: int | None) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{pid}\n" if pid else "")
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing the last descriptor drops the lock


def read_owner(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_held(run_path: Path) -> bool:
    """True while some live process owns the run (holds its lock). A lock that is not a
    regular file (a FIFO would block whoever opens it) is no one's."""
    try:
        fd = os.open(run_path / LOCK_NAME, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or flock(handle, wait=False, shared=True):
            return False  # closing the file drops the shared lock just taken
        return True


def describe_os_error(exc: OSError, where: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {where} is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where} is not writable ({exc.strerror})"
    return f"could not write in {where}: {exc.strerror or exc}"


# --- writing a run ------------------------------------------------------------------------

def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")  # orders runs made in one second


class RunWriter:
    """Writes one run's files. Only the process that owns the run (holds `lock`) writes it."""

    def __init__(self, run_id: str, root: str | os.PathLike | None = None, lock: RunLock | None = None):
        self.run_id = run_id
        self.path = run_dir(run_id, root)
        self.lock = lock

    @classmethod
    def create(cls, config_dict: dict, run_id: str | None = None,
               root: str | os.PathLike | None = None) -> "RunWriter":
        """Create the folder, take its lock, then write config.json and status 'queued'.
        The lock is held from before the status exists, so a queued run always has a live
        owner: this process, or the job process it hands the lock to (core.training.jobs)."""
        base = checkpoints_dir(root)
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # FileExistsError too: a file where the folder should be
            raise RunError(f"cannot use {base} as the checkpoints folder: {exc.strerror or exc}") from None
        try:
            run_id = run_id or new_run_id(config_dict["arch"], config_dict.get("name"), root)
            path = run_dir(run_id, root)
            path.mkdir(exist_ok=False)
            writer = cls(run_id, root, RunLock.claim(path))
            writer.write_config(config_dict)
            writer.set_status("queued")
        except FileExistsError:
            raise RunError(f"run {run_id!r} already exists") from None
        except OSError as exc:
            raise RunError(describe_os_error(exc, base)) from None
        return writer

    def write_config(self, config_dict: dict) -> None:
        atomic_write_json(self.path / CONFIG, {"format": FORMAT_VERSION, **config_dict})

    def set_status(self, status: str, message: str = "", **extra: Any) -> None:
        assert status in STATUSES, status
        previous = read_json(self.path / STATUS) or {}
        atomic_write_json(self.path / STATUS, {
            "status": status, "pid": os.getpid(), "host": socket.gethostname(),
            "created": previous.get("created", now_iso()), "updated": now_iso(),
            "message": message, **extra})

    def write_progress(self, **progress: Any) -> None:
        atomic_write_json(self.path / PROGRESS, {"updated": now_iso(), **progress}, durable=False)

    def write_history(self, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        atomic_write_bytes(self.path / HISTORY, frame.to_csv(index=False).encode())

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / METRICS, metrics)

    def write_dataset(self, info: dict) -> None:
        atomic_write_json(self.path / DATASET, info)

    def save_weights(self, state_dict: dict[str, torch.Tensor], arch: str) -> None:
        atomic_write_bytes(self.path / WEIGHTS, tensors_bytes(
            state_dict, metadata={"arch": arch, "format": str(FORMAT_VERSION)}))

    def save_predictions(self, labels: torch.Tensor, probabilities: torch.Tensor) -> None:
        atomic_write_bytes(self.path / PREDICTIONS, tensors_bytes({
            "labels": labels.to(torch.int64), "predicted": probabilities.argmax(1),
            "probabilities": probabilities.float()}))

    def save_train_state(self, state: dict) -> None:
        atomic_write_bytes(self.path / TRAIN_STATE, torch_bytes(state))

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


STAGING_PREFIX = ".staging-"  # hidden: list_run_ids never shows a run still being written
STALE_STAGING_S = 60.0        # an unlocked staging folder this old was left by a killed process


@contextlib.contextmanager
def staged_run(config_dict: dict, root: str | os.PathLike | None = None):
    """Yield a RunWriter whose files go to a hidden folder of the store, renamed into place as
    the run's folder when the block ends: a process killed at any moment leaves nothing
    visible or the whole run. For runs written in one go (ensembles); a trained run is written
    in place, its lock telling readers that its owner lives. A staging folder left by a killed
    process is removed by the next staged run."""
    base = checkpoints_dir(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(base)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base))
    except OSError as exc:
        raise RunError(describe_os_error(exc, base)) from None
    writer = None
    try:
        writer = RunWriter(new_run_id(config_dict["arch"], config_dict.get("name"), root), root,
                           RunLock.claim(staging))
        writer.path = staging
        writer.write_config(config_dict)
        yield writer
        for _ in range(100):  # another run took the id meanwhile: take the next one
            final = run_dir(writer.run_id, root)
            if not os.path.lexists(final):
                os.rename(staging, final)
                break
            writer.run_id = new_run_id(config_dict["arch"], config_dict.get("name"), root)
        else:
            raise RunError(f"could not find a free run id in {base}")
        writer.path = final
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise RunError(describe_os_error(exc, base)) from None
        raise
    finally:
        if writer is not None:
            writer.release()


def _remove_stale_staging(base: Path) -> None:
    for path in base.glob(STAGING_PREFIX + "*"):
        try:
            old = time.time() - path.lstat().st_mtime > STALE_STAGING_S
        except OSError:
            continue
        if old and path.is_dir() and not path.is_symlink() and not lock_held(path):
            shutil.rmtree(path, ignore_errors=True)


# --- reading runs ---------------------------------------------------------------------------

def _read_bytes(path: Path) -> tuple[bytes | None, str | None]:
    """(content, problem) of one run file; (None, None) when it is missing. Only a regular file
    is read: opening a FIFO for reading would wait for a writer forever, so the file is opened
    without blocking and checked with fstat before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} is not readable ({exc.strerror or exc})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, f"{path.name} is not a regular file"
        with open(fd, "rb", closefd=False) as handle:
            return handle.read(), None
    except OSError as exc:
        return None, f"{path.name} is not readable ({exc.strerror or exc})"
    finally:
        os.close(fd)


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """(object, problem): the JSON object in `path`; (None, None) when the file is missing."""
    data, problem = _read_bytes(path)
    if data is None:
        return None, problem
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None, f"{path.name} is not valid JSON"
    if not isinstance(obj, dict):
        return None, f"{path.name} does not hold a JSON object"
    return obj, None


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing or not a readable object."""
    return _read_json(path)[0]


def is_regular_file(path: Path) -> bool:
    """Whether `path` is a regular file; False where it cannot be looked at (no permission)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def effective_status(status: dict | None, run_path: Path) -> str:
    """The status as a user should see it: an active run that no live process owns (killed,
    crashed, machine rebooted) is 'interrupted', not 'running' forever."""
    if not status or status.get("status") not in STATUSES:
        return "unknown"
    state = status["status"]
    if state in ACTIVE and not lock_held(run_path):
        return "interrupted"
    return state


def _read_history(path: Path) -> tuple[pd.DataFrame, str | None]:
    """(history, problem): a missing file or a header-only one is empty and no problem. Every
    column is numeric: a cell that is not a number is read as missing (NaN) and named."""
    empty = pd.DataFrame(columns=HISTORY_COLUMNS)
    data, problem = _read_bytes(path)
    if data is None:
        return empty, problem
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return empty, "history.csv is unreadable"
    if not set(HISTORY_COLUMNS) <= set(frame.columns):
        return empty, "history.csv is unreadable (columns missing)"
    bad = []
    for column in HISTORY_COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if (numbers.isna() & frame[column].notna()).any():
            bad.append(column)
        frame[column] = numbers
    if bad:
        return frame, f"history.csv has cells that are not numbers in {', '.join(bad)} (shown as blank)"
    return frame, None


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
        problems.append(f"config.json's format is {version!r}, not a version number")
    elif version > FORMAT_VERSION:
        problems.append(f"written by a newer MNIST Lab (format {version})")
    clean = dict(config)
    for name, types in _config_types().items():
        if name not in config or (config[name] is None and name != "arch"):
            continue
        value = config[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"config.json's {name} is {value!r:.40}, not {_TYPE_WORDS[types[-1]]}")
            del clean[name]
    return clean, problems


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
_STATUS_TEXT = ("status", "host", "created", "updated", "message")


def _check_status(info: dict) -> tuple[dict, list[str]]:
    """(status.json without the values of the wrong type, a warning for each)."""
    clean, problems = dict(info), []
    for name in _STATUS_TEXT:
        if name in info and not isinstance(info[name], str):
            problems.append(f"status.json's {name} is {info[name]!r:.40}, not text")
            del clean[name]
    if "pid" in info and (not isinstance(info["pid"], int) or isinstance(info["pid"], bool)):
        problems.append(f"status.json's pid is {info['pid']!r:.40}, not a number")
        del clean["pid"]
    return clean, problems


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
    def has_weights(self) -> bool:
        return is_regular_file(self.path / WEIGHTS)

    @property
    def has_predictions(self) -> bool:
        return is_regular_file(self.path / PREDICTIONS)

    @property
    def reference(self) -> bool:
        """Shipped with MNIST Lab (core.store.reference): shown like any run, never deleted or renamed."""
        return is_regular_file(self.path / REFERENCE)


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
    config, problem = _read_json(path / CONFIG)
    if config is None:
        warnings.append(problem or "config.json is missing")
        config = {}
    else:
        config, problems = _check_config(config)
        warnings += problems
    status_info, problem = _read_json(path / STATUS)
    if not status_info:
        warnings.append(problem or "status.json is missing or empty")
        status_info = {}
    status_info, problems = _check_status(status_info)
    warnings += problems
    status = effective_status(status_info, path)
    if os.path.lexists(path / LOCK_NAME) and not is_regular_file(path / LOCK_NAME):
        warnings.append(f"{LOCK_NAME} is not a regular file, so no process can own the run")
    history, problem = _read_history(path / HISTORY)
    if problem:
        warnings.append(problem)
    metrics, problem = _read_json(path / METRICS)
    if problem or (status == "finished" and not metrics):
        warnings.append(problem or "metrics.json is missing")
    progress, problem = _read_json(path / PROGRESS)
    if problem:
        warnings.append(problem)
    if config.get("kind") == "ensemble" and status != "finished":  # written whole since issue 19
        warnings.append("an ensemble whose writing was killed before it finished: delete it")
    return Run(run_id, path, config, status, status_info, history, metrics or {}, progress or {}, warnings)


def list_run_ids(root: str | os.PathLike | None = None) -> list[str]:
    base = checkpoints_dir(root)
    if not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if p.is_dir() and _RUN_ID.match(p.name)
                   and not p.name.startswith(".")), reverse=True)


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
        why = next((w for w in run.warnings if "config.json" in w), "config.json has no arch")
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
            raise RunError(f"run {run_id!r} cannot be rebuilt: config.json's member_archs lists {listed} members "
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


def load_predictions(run_id: str, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Saved test predictions: labels (N,), predicted (N,), probabilities (N, 10), checked by
    core.analysis.predictions.check_predictions (shapes, classes, finite probabilities summing to 1), so
    every reader gets predictions it can use or a RunError that names the run and the problem."""
    path = run_dir(run_id, root) / PREDICTIONS
    if not path.parent.is_dir():
        raise RunError(f"no run {run_id!r} in {checkpoints_dir(root)}")
    data, problem = _read_bytes(path)
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
        raise RunError(f"run {run_id!r} has no readable config.json")
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
