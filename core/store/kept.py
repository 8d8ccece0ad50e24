"""Results kept in a run folder beside its weights: the calibration (core.analysis.calibration), the
not-a-digit detector (core.notadigit.detector), the robustness report (core.analysis.robustness)
and the embedding maps (core.analysis.embedding). Each records the SHA-256 of the weights it was
made from (core.store.runs.weights_sha256) and is read back only while those are the run's
weights: new weights, a new result. `read_current` is the one reading of such a file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

from core.store.folder import RunError, read_json
from core.store.runs import weights_sha256

T = TypeVar("T")
Fields = dict  # what a kept file says of itself: its JSON object, or a safetensors header's metadata


class Damaged(Exception):
    """Raised by a reader: the kept file cannot be used, and the message says why."""


def read_current(path: Path, run_id: str, root: str | os.PathLike | None,
                 read: Callable[[Path], tuple[Fields, object] | None],
                 check: Callable[[Fields, object], tuple[T | None, str | None]], *,
                 fmt: object = None, sha: str | None = None) -> tuple[T | None, str | None]:
    """The result kept at `path` for the run's current weights.

    (what `check` makes of it, None) when the file is there, whole, of format `fmt` (its "format"
    field; any, when None) and of the weights whose SHA-256 is `sha` (default: the run's, hashed
    now); (None, None) when there is none, it is of another format or other weights, or the run
    has no weights that can be read: nothing is wrong, it is made again; (None, why) when it is
    damaged. `read(path)` gives the file's fields and its content, None where there is no file,
    or raises Damaged; `check(fields, content)` gives (the result, None) or (None, why not)."""
    try:
        found = read(path)
    except Damaged as exc:
        return None, str(exc)
    if found is None:
        return None, None
    fields, content = found
    if fmt is not None and fields.get("format") != fmt:
        return None, None
    try:
        current = sha if sha is not None else weights_sha256(run_id, root)
    except RunError:
        return None, None
    if fields.get("weights_sha256") != current:
        return None, None
    return check(fields, content)


def json_file(path: Path) -> tuple[Fields, Fields] | None:
    """A kept JSON object as both its fields and its content; None where it is missing or no
    readable JSON object (made again, as if there were none)."""
    data = read_json(path)
    return None if data is None else (data, data)
