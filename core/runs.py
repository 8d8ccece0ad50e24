"""The run folder: the one module that knows its paths and formats.

checkpoints/<run id>/
  config.json           TrainConfig, everything needed to rebuild and re-run
  status.json           {"status", "pid", "host", "created", "updated", "message"}
  progress.json         position inside the current epoch (for progress bars)
  history.csv           one row per finished epoch (HISTORY_COLUMNS), rewritten each epoch
  metrics.json          test accuracy/loss, per-class precision/recall, confusion matrix, ...
  model.safetensors     final weights (safetensors: loading never unpickles)
  predictions.safetensors  test set: labels, predicted, probabilities (10000 x 10)
  train_state.pt        optimizer/scheduler/RNG state at the last finished epoch (for --resume;
                        read with torch.load(weights_only=True))

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
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINTS_ENV = "MNIST_LAB_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 1
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
LAUNCH_GRACE_S = 120  # a run created for a job process that has not claimed it after this is dead
_OWN_PID = object()   # default: the process writing the status owns the run
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RunError(RuntimeError):
    """A run is missing, unreadable or its id is not allowed; the message says which."""


def checkpoints_dir(root: str | os.PathLike | None = None) -> Path:
    """The checkpoints folder: the argument, else $MNIST_LAB_CHECKPOINTS, else ./checkpoints."""
    return Path(root or os.environ.get(CHECKPOINTS_ENV) or DEFAULT_CHECKPOINTS)


def run_dir(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of `run_id`, refusing ids that could leave the checkpoints folder."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise RunError(f"{run_id!r} is not a valid run id (letters, digits, '.', '_', '-')")
    base = checkpoints_dir(root).resolve()
    path = (base / run_id).resolve()
    if path.parent != base:
        raise RunError(f"{run_id!r} is not a valid run id")
    return path


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


# --- atomic writes ------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


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
    """Writes one run's files; used by the trainer (and nothing else writes a run)."""

    def __init__(self, run_id: str, root: str | os.PathLike | None = None):
        self.run_id = run_id
        self.path = run_dir(run_id, root)

    @classmethod
    def create(cls, config_dict: dict, run_id: str | None = None,
               root: str | os.PathLike | None = None, owner_pid: Any = _OWN_PID) -> "RunWriter":
        """Create the folder with config.json and status 'queued'. `owner_pid=None` when another
        process (a job the dashboard is about to start) will train it: until that process
        claims the run, no pid is on record, so nobody signals the creator by mistake."""
        base = checkpoints_dir(root)
        try:
            base.mkdir(parents=True, exist_ok=True)
            run_id = run_id or new_run_id(config_dict["arch"], config_dict.get("name"), root)
            writer = cls(run_id, root)
            writer.path.mkdir(exist_ok=False)
            writer.write_config(config_dict)
            writer.set_status("queued", pid=owner_pid)
        except FileExistsError:
            raise RunError(f"run {run_id!r} already exists") from None
        except OSError as exc:
            raise RunError(describe_os_error(exc, base)) from None
        return writer

    def write_config(self, config_dict: dict) -> None:
        atomic_write_json(self.path / "config.json", {"format": FORMAT_VERSION, **config_dict})

    def set_status(self, status: str, message: str = "", pid: Any = _OWN_PID, **extra: Any) -> None:
        assert status in STATUSES, status
        previous = read_json(self.path / "status.json") or {}
        atomic_write_json(self.path / "status.json", {
            "status": status, "pid": os.getpid() if pid is _OWN_PID else pid, "host": socket.gethostname(),
            "created": previous.get("created", now_iso()), "updated": now_iso(),
            "message": message, **extra})

    def write_progress(self, **progress: Any) -> None:
        atomic_write_json(self.path / "progress.json", {"updated": now_iso(), **progress})

    def write_history(self, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        atomic_write_text(self.path / "history.csv", frame.to_csv(index=False))

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics)

    def save_weights(self, state_dict: dict[str, torch.Tensor], arch: str) -> None:
        atomic_save_tensors(self.path / "model.safetensors", state_dict,
                            metadata={"arch": arch, "format": str(FORMAT_VERSION)})

    def save_predictions(self, labels: torch.Tensor, probabilities: torch.Tensor) -> None:
        atomic_save_tensors(self.path / "predictions.safetensors", {
            "labels": labels.to(torch.int64), "predicted": probabilities.argmax(1),
            "probabilities": probabilities.float()})

    def save_train_state(self, state: dict) -> None:
        atomic_torch_save(self.path / "train_state.pt", state)


# --- reading runs ---------------------------------------------------------------------------

def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing or not a readable object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def effective_status(status: dict | None) -> str:
    """The status as a user should see it: an active run whose process is gone (killed,
    crashed, machine rebooted) is 'interrupted', not 'running' forever."""
    if not status or status.get("status") not in STATUSES:
        return "unknown"
    state = status["status"]
    if state not in ACTIVE or status.get("host") != socket.gethostname():
        return state
    if status.get("pid") is None:  # created for a job process that has not claimed it yet
        try:
            age = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(status["created"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            return "interrupted"
        return state if age < LAUNCH_GRACE_S else "interrupted"
    return state if pid_alive(status["pid"]) else "interrupted"


def _read_history(path: Path) -> tuple[pd.DataFrame, bool]:
    """(history, readable): a missing file or a header-only one is readable and empty."""
    empty = pd.DataFrame(columns=HISTORY_COLUMNS)
    if not path.exists():
        return empty, True
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return empty, False
    if not set(HISTORY_COLUMNS) <= set(frame.columns):
        return empty, False
    return frame, True


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
    def best_val_acc(self) -> float | None:
        return float(self.history["val_acc"].max()) if len(self.history) else None

    @property
    def test_acc(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def has_weights(self) -> bool:
        return (self.path / "model.safetensors").is_file()

    @property
    def has_predictions(self) -> bool:
        return (self.path / "predictions.safetensors").is_file()


def load_run(run_id: str, root: str | os.PathLike | None = None) -> Run:
    """Read a run's small files. Never raises for damaged content: problems become warnings."""
    path = run_dir(run_id, root)
    if not path.is_dir():
        raise RunError(f"no run {run_id!r} in {checkpoints_dir(root)}")
    warnings = []
    config = read_json(path / "config.json")
    if config is None:
        warnings.append("config.json is missing or unreadable")
        config = {}
    elif config.get("format", 0) > FORMAT_VERSION:
        warnings.append(f"written by a newer MNIST Lab (format {config.get('format')})")
    elif "format" not in config:
        warnings.append("written by an older format; some views may be missing")
    status_info = read_json(path / "status.json") or {}
    if not status_info:
        warnings.append("status.json is missing or unreadable")
    status = effective_status(status_info)
    history, readable = _read_history(path / "history.csv")
    if not readable:
        warnings.append("history.csv is unreadable")
    metrics = read_json(path / "metrics.json") or {}
    if status == "finished" and not metrics:
        warnings.append("metrics.json is missing or unreadable")
    progress = read_json(path / "progress.json") or {}
    return Run(run_id, path, config, status, status_info, history, metrics, progress, warnings)


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
    path = run_dir(run_id, root) / "model.safetensors"
    if not path.is_file():
        raise RunError(f"run {run_id!r} has no saved weights yet")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"the weights of run {run_id!r} are not a valid safetensors file ({exc})") from None


def load_model(run_id: str, root: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Rebuild the run's architecture from config.json and load its weights, in eval mode."""
    from core.models import create_model
    run = load_run(run_id, root)
    if "arch" not in run.config:
        raise RunError(f"run {run_id!r} has no readable config.json")
    arch = run.config["arch"]
    model = create_model(arch)
    state = load_state_dict(run_id, root)
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
    """Saved test predictions: labels (N,), predicted (N,), probabilities (N, 10)."""
    path = run_dir(run_id, root) / "predictions.safetensors"
    if not path.is_file():
        raise RunError(f"run {run_id!r} has no saved test predictions")
    try:
        return {k: v.numpy() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"the predictions of run {run_id!r} are unreadable ({exc})") from None


def load_train_state(run_id: str, root: str | os.PathLike | None = None) -> dict:
    """Resume state, read with weights_only=True: a crafted pickle cannot run code."""
    path = run_dir(run_id, root) / "train_state.pt"
    if not path.is_file():
        raise RunError(f"run {run_id!r} has no finished epoch to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only raises UnpicklingError for anything but tensors/containers
        raise RunError(f"refused to load {path.name} of run {run_id!r}: it is not a plain "
                       f"checkpoint ({type(exc).__name__})") from None


def rename_run(run_id: str, new_name: str, root: str | os.PathLike | None = None) -> None:
    """Change a run's display name (its id and folder stay, so references hold)."""
    new_name = new_name.strip()
    if not 0 < len(new_name) <= 80 or not new_name.isprintable():
        raise RunError("a run name must be 1..80 printable characters")
    path = run_dir(run_id, root)
    config = read_json(path / "config.json")
    if config is None:
        raise RunError(f"run {run_id!r} has no readable config.json")
    config["name"] = new_name
    atomic_write_json(path / "config.json", config)


def delete_run(run_id: str, root: str | os.PathLike | None = None) -> None:
    run = load_run(run_id, root)
    if run.status in ACTIVE:
        raise RunError(f"run {run_id!r} is {run.status}: cancel it first")
    shutil.rmtree(run.path)
