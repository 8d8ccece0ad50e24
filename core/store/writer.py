"""Writing a run folder (core.store.folder): RunWriter, used only by the process that owns the
run (holds its lock), and staged_run, which writes a whole run in a hidden folder and renames
it into place. Every write is atomic (core.fsio)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save as save_tensors

from core.fsio import atomic_write_bytes, atomic_write_json
from core.store.folder import (CONFIG, DATASET, FORMAT_VERSION, HISTORY, HISTORY_COLUMNS, METRICS, PREDICTIONS,
                               PROGRESS, STATUS, STATUSES, TRAIN_STATE, WEIGHTS, RunError, RunLock,
                               checkpoints_dir, describe_os_error, lock_held, new_run_id, now_iso, read_json,
                               run_dir)


def tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save_tensors({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()



# --- writing a run ------------------------------------------------------------------------

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
            writer.queue()
        except FileExistsError:
            raise RunError(f"run {run_id!r} already exists") from None
        except OSError as exc:
            raise RunError(describe_os_error(exc, base)) from None
        return writer

    def write_config(self, config_dict: dict) -> None:
        atomic_write_json(self.path / CONFIG, {"format": FORMAT_VERSION, **config_dict})

    # The run's life, named: queued (possibly waiting for a device slot), running, then one of
    # finished, cancelled or failed. "interrupted" is never written: a reader infers it from a
    # running or queued status whose lock no process holds (folder.effective_status).
    def queue(self, message: str = "") -> None:
        self._set_status("queued", message)

    def start(self) -> None:
        self._set_status("running")

    def finish(self, message: str = "") -> None:
        self._set_status("finished", message)

    def cancel(self, why: str) -> None:
        self._set_status("cancelled", why)

    def fail(self, message: str) -> None:
        self._set_status("failed", message[:500])

    def _set_status(self, status: str, message: str = "", **extra: Any) -> None:
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
