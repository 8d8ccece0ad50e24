"""One training job per device at a time.

A job holds an exclusive `flock` on checkpoints/.locks/<device>.lock while it trains; the
next job blocks on the lock (its run shows as 'queued') and starts when the holder ends.
The kernel drops the lock when a process dies, so a crashed job frees its slot by itself.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path

from core.runs import checkpoints_dir


@contextlib.contextmanager
def device_slot(device_type: str, root: str | os.PathLike | None = None):
    locks = checkpoints_dir(root) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{device_type}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another job trains on this device
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spawn(args: list[str], log_path: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m core <args>` detached from the caller (its own session), so it
    survives a page reload, a closed tab and the Streamlit script's reruns."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "core", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=os.getcwd(), env={**os.environ, **(env or {})})
    finally:
        if log_path:
            out.close()
