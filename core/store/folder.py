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

import datetime as dt
import errno
import json
import os
import re
import stat
import time
from pathlib import Path


from core.errors import LabError
from core.fsio import NotARegularFile, file_kind, flock, open_regular

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
OOD = "ood.safetensors"  # the not-a-digit detector fitted for the weights (core.notadigit.detector)
ROBUSTNESS = "robustness.json"  # corruptions and attacks, measured for the weights (core.analysis.robustness)
CALIBRATION = "calibration.json"  # the temperature fitted on the validation split (core.analysis.calibration)
DRIVERS = ".ray"      # <store>/.ray/<sweep id>/: a Ray sweep driver's lock (its pid) and DRIVER_INFO
DRIVER_INFO = "driver.json"  # the sweep id, the cluster's address, the driver's host and pid


def embedding_file(method: str) -> str:
    """The run's kept 2-D map of its test features by `method` (core.analysis.embedding)."""
    return f"embedding-{method}.safetensors"

SMALL_FILES = (CONFIG, STATUS, HISTORY, METRICS, PROGRESS, WEIGHTS)
"""The files `load_run` reads (and the weights' presence): a run changed iff one of them did."""
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RunError(LabError, RuntimeError):
    """A run is missing, unreadable or its id is not allowed; the message says which."""


def checkpoints_dir(root: str | os.PathLike | None = None) -> Path:
    """The checkpoints folder: the argument, else $MNIST_LAB_CHECKPOINTS, else ./checkpoints."""
    return Path(root or os.environ.get(CHECKPOINTS_ENV) or DEFAULT_CHECKPOINTS)


def run_dir(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of `run_id`, refusing ids that could leave the checkpoints folder."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or ".." in run_id:
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


def store_problem(root: str | os.PathLike | None = None) -> str | None:
    """Why the checkpoints folder cannot hold runs because something else is at its path (a
    file), or None: a folder, or nothing yet (the first run creates it)."""
    base = checkpoints_dir(root)
    try:
        mode = os.stat(base).st_mode
    except OSError:
        return None  # missing (no runs yet), or not reachable: listing it finds no runs either way
    if stat.S_ISDIR(mode):
        return None
    return (f"the checkpoints path {base} is {file_kind(mode)}, not a folder: set --checkpoints or "
            f"${CHECKPOINTS_ENV} to a folder, or move the file away")


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


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")  # orders runs made in one second


# --- reading a run's files ---------------------------------------------------------------------------

def read_run_file(path: Path, limit: int | None = None) -> tuple[bytes | None, str | None]:
    """(content, problem) of one file the lab keeps; (None, None) when it is missing. Only a
    regular file is read, opened without blocking (core.fsio.open_regular): a FIFO never holds up
    a reader. `limit`: the most bytes a whole file of its kind can hold; a larger one (a file
    truncated to 30 GB, a link to /dev/zero) is refused before it is read."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if limit is not None and size > limit:
                return None, f"{path.name} is too large for what it should hold ({size:,} bytes; at most {limit:,})"
            data = handle.read() if limit is None else handle.read(limit + 1)
    except FileNotFoundError:
        return None, None
    except NotARegularFile:
        return None, f"{path.name} is not a regular file"
    except OSError as exc:
        return None, f"{path.name} is not readable ({exc.strerror or exc})"
    if limit is not None and len(data) > limit:  # it grew while it was read
        return None, f"{path.name} is too large for what it should hold (over {limit:,} bytes)"
    return data, None


JSON_LIMIT = 8 << 20  # bytes: a run's JSON files hold a few KB (metrics.json's confusion matrix is the most)


def read_json_checked(path: Path, limit: int = JSON_LIMIT) -> tuple[dict | None, str | None]:
    """(object, problem): the JSON object in `path`; (None, None) when the file is missing."""
    data, problem = read_run_file(path, limit)
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
    return read_json_checked(path)[0]


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
