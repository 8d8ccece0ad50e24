"""Results kept in a run folder beside its weights: the calibration (core.analysis.calibration), the
not-a-digit detector (core.notadigit.detector), the robustness report (core.analysis.robustness)
and the embedding maps (core.analysis.embedding). Each records the SHA-256 of the weights it was
made from (core.store.runs.weights_sha256) and is read back only while those are the run's
weights: new weights, a new result.

The one way such a file is read: `read_current`, through `kept_bytes` (a regular file only, never
waiting on a FIFO, and no larger than its kind can be), then checked against its kind's schema
(`conforms`: every field's type and range, as strictly as the writer writes) and by the kind's own
check of what a schema cannot say (tensor shapes against the architecture, relations between
fields). A file that fails is damaged: the reader says why in one line and the result is made again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, TypeVar

from core.fsio import atomic_write_bytes
from core.store.folder import RunError, describe_os_error, read_run_file
from core.store.runs import weights_sha256

T = TypeVar("T")
Fields = dict  # what a kept file says of itself: its JSON object, or a safetensors header's metadata

JSON_LIMIT = 1 << 20  # bytes: a kept JSON report holds a few KB


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


def usable(kept: tuple[T | None, str | None], report: Callable[[str], None], what: str, again: str) -> T | None:
    """The kept result of a read_current, or None after telling `report` why a damaged one is made
    again: "the kept {what} cannot be used: {why}; {again}" (what the commands print on stderr)."""
    found, damage = kept
    if found is None and damage:
        report(f"the kept {what} cannot be used: {damage}; {again}")
    return found


def keep(path: Path, data: bytes) -> str | None:
    """Write a result beside the run's weights, whole or not at all (core.fsio.atomic_write_bytes);
    None once it is kept, or why it could not be (a read-only store, a full disk): the result is
    still shown, and made again next time."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        return describe_os_error(exc, path.parent)
    return None


def kept_bytes(path: Path, limit: int) -> bytes | None:
    """The bytes of a kept file, None where there is none; Damaged where it is not a regular file,
    cannot be read or is larger than `limit` (no whole file of its kind is)."""
    data, problem = read_run_file(path, limit)
    if problem:
        raise Damaged(problem)
    return data


def json_file(path: Path) -> tuple[Fields, Fields] | None:
    """A kept JSON object as both its fields and its content; None where there is none; Damaged
    where it is not a JSON object (or no file that can be read)."""
    data = kept_bytes(path, JSON_LIMIT)
    if data is None:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise Damaged(f"{path.name} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise Damaged(f"{path.name} does not hold a JSON object")
    return obj, obj


def safetensors_file(path: Path, limit: int, arrays: str = "pt") -> tuple[Fields, dict] | None:
    """A kept safetensors file's header metadata and its tensors (`arrays`: "pt", torch tensors;
    "np", numpy arrays); None where there is none; Damaged where it is no whole safetensors file."""
    from safetensors import SafetensorError
    data = kept_bytes(path, limit)
    if data is None:
        return None
    try:
        if arrays == "np":
            from safetensors.numpy import load
        else:
            from safetensors.torch import load
        tensors = load(data)
        size = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, TypeError, AttributeError) as exc:
        raise Damaged(f"{path.name} is no whole safetensors file ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Damaged(f"{path.name}'s metadata is not text")
    return meta, tensors


def conforms(obj: object, schema: dict) -> str | None:
    """Why `obj` does not follow the JSON Schema `schema` (jsonschema, draft 2020-12), in one line
    that names the field; None when it does. Numbers must be finite: a NaN or an infinity (which
    Python's json reads, though the lab never writes one) is refused wherever a number is due."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    error = best_match(Draft202012Validator(schema).iter_errors(obj))
    if error is None:
        return _non_finite(obj)
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where or 'the report'}: {_short(error.message)}"


def _non_finite(obj: object, where: str = "") -> str | None:
    if isinstance(obj, float) and obj != obj or obj in (float("inf"), float("-inf")):
        return f"{where or 'the report'}: {obj} is not a finite number"
    if isinstance(obj, dict):
        return next((p for k, v in obj.items() if (p := _non_finite(v, f"{where}/{k}".lstrip("/")))), None)
    if isinstance(obj, list):
        return next((p for i, v in enumerate(obj) if (p := _non_finite(v, f"{where}/{i}".lstrip("/")))), None)
    return None


def _short(message: str, most: int = 120) -> str:
    return message if len(message) <= most else message[:most - 1] + "…"


# Schema pieces the kept reports share.
NUMBER = {"type": "number"}
COUNT = {"type": "integer", "minimum": 0}
POSITIVE_COUNT = {"type": "integer", "minimum": 1}
SECONDS = {"type": "number", "minimum": 0}
PERCENT = {"type": "number", "minimum": 0, "maximum": 100}
FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
TEXT = {"type": "string", "maxLength": 200}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def record(properties: dict, required: list[str] | None = None, extra: bool = True) -> dict:
    """The schema of a JSON object with these properties, all required unless `required` says."""
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, "additionalProperties": extra}
