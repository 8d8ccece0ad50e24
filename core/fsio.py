"""Files written whole, files read without blocking and files locked: the one way MNIST Lab writes a
file, opens a file it is given and takes a lock, for the run store (core.store.runs), MNIST's
verification record (core.data.mnist), the handwriting set (core.data.handwriting) and the images
`predict` reads (core.data.images). Nothing here knows what the files hold."""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True, mode: int | None = None) -> None:
    """The one way files are written: to a temporary file beside `path`, fsync, then rename
    over it, so a reader sees the old file or the new one, never a torn one. `durable=False`
    skips the fsync (still never torn, but a power cut may lose it): for progress.json,
    rewritten 20 times an epoch, where the fsync was most of a progress report's cost. `mode`
    (e.g. 0o600 for the owner's password hash) replaces the umask's permissions before the rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600: honour the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """Strict JSON (RFC 8259): a figure that is not a finite number (a diverged loss) is written
    as null, never as NaN or Infinity, which other readers of the file refuse."""
    atomic_write_bytes(path, (strict_json(obj, indent=2) + "\n").encode(), durable)


def strict_json(obj: Any, **kwargs) -> str:
    """json.dumps that writes NaN and infinities as null: the one way the lab writes JSON."""
    return json.dumps(_finite(obj), allow_nan=False, default=_json_default, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):  # numpy's float64 is a float too
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class NotARegularFile(OSError):
    """A path that names a folder, a named pipe, a socket or a device where a file was expected;
    `kind` says which ("a folder", ...)."""

    def __init__(self, path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a file of st_mode `mode` is, in words: "a file", "a folder", "a named pipe (FIFO)", ..."""
    for test, kind in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


@contextlib.contextmanager
def open_regular(path):
    """`path` opened for reading, in binary, if it is a regular file. It is opened without blocking
    and checked with fstat before a byte is read: opening a FIFO for reading would wait for a
    writer forever. Raises FileNotFoundError, NotARegularFile, or the OSError of the open."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, file_kind(mode))
        handle = open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


class GivenFileError(ValueError):
    """A file the user named cannot be read as what it should be; the message is one sentence."""


def read_given(path, what: str, limit: int, too_large) -> bytes:
    """The bytes of a file the user named as `what` ("an image file", "a CSV file"): a regular
    file only, opened without blocking (open_regular), of at most `limit` bytes (else
    GivenFileError(too_large(its size))); GivenFileError saying what is wrong otherwise."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise GivenFileError(too_large(size))
            return handle.read()
    except FileNotFoundError:
        raise GivenFileError(f"There is no {what.split(' ', 1)[1]} at '{path}'.") from None
    except NotARegularFile as exc:
        raise GivenFileError(f"'{path}' is {exc.kind}, not {what}.") from None
    except OSError as exc:
        raise GivenFileError(f"'{path}' cannot be read ({exc.strerror or exc}).") from None


def flock(handle, *, wait: bool = True, shared: bool = False) -> bool:
    """Take an flock on an open file; with wait=False return False at once if it is held.
    The kernel drops it when the process dies, so a dead process never holds a lock."""
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle, flags)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created if missing) for the block, waiting for it."""
    with open(path, "a") as handle:  # closing the file drops the lock
        flock(handle)
        yield
