"""A run's model as a file that runs without the lab: ONNX (through torch's exporter, checked in ONNX
Runtime) or TorchScript, with its model card beside it (core.export.card).

The exported graph takes float32 images (N, 1, 28, 28) with pixel values in [0, 1] (MNIST's raw pixels
divided by 255, white ink on black), applies the lab's normalisation itself and returns probabilities
(N, 10), for any batch size. An ensemble (a labnet, or runs combined by `core ensemble`) is one graph
that averages its members' probabilities, as the lab does.

Nothing is half-written and nothing else is touched: the model and both cards go only to new files or
regular files outside the runs folder (final_paths, checked before anything is computed), are written
under short temporary names in the same folder and renamed into place only once all three exist (and
the check passed).
"""
from __future__ import annotations

import io
import os
import secrets
import stat
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.analysis.attacks import PixelModel
from core.analysis.runsplit import finished_run
from core.data.mnist import load_test_pixels
from core.errors import BadInput
from core.export import card as card_mod
from core.fsio import file_kind
from core.store.folder import WEIGHTS, RunError, checkpoints_dir, is_regular_file, run_dir
from core.store.runs import load_model, load_predictions

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 18
INPUT, OUTPUT = "pixels", "probabilities"


class ExportError(BadInput):
    """A run that cannot be exported, or a place it cannot be written; the message says which."""


class PixelsToProbabilities(nn.Module):
    """The run's model as the exported graph sees it: [0, 1] pixels in, probabilities out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.logits = PixelModel(model)   # the attacks' view of a model: [0, 1] pixels in, logits out

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(pixels).float(), dim=-1)


@dataclass
class Exported:
    path: Path
    card_md: Path
    card_json: Path
    format: str
    seconds: float          # the export itself
    bytes: int
    card: dict = field(default_factory=dict)


def default_path(run_id: str, fmt: str) -> Path:
    return Path(run_id + SUFFIX[fmt])


CARD_MD, CARD_JSON = ".card.md", ".card.json"


def card_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + CARD_MD), path.with_name(path.name + CARD_JSON)


TEMPORARY = ".mnist-lab-export-"   # + 12 hex digits + ".tmp": far under any file system's name limit
NAME_MAX = 255                       # bytes in one file name, where the file system does not say


def _check_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {path}: the folder {folder} is not writable")


def _check_name_lengths(path: Path) -> None:
    """ExportError unless the file's name and its cards' names (the longest: NAME.card.json) fit
    the file system's limit."""
    try:
        limit = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    card = card_paths(path)[1].name
    longest = len(os.fsencode(card))
    if longest > limit:
        room = limit - (longest - len(os.fsencode(path.name)))
        raise ExportError(f"cannot write {path}: the name of its card (the file's name + {CARD_JSON!r}) would be "
                          f"{longest} bytes, over this file system's limit of {limit}; give a file name of at most "
                          f"{room} bytes")


def _final_path(path: Path, runs: Path) -> Path:
    """Where `path` leads (symbolic links followed), if export may write there: a new file or an
    existing regular file it may replace, outside the runs folder; else ExportError saying why."""
    try:
        final = path.resolve()
    except (OSError, RuntimeError):   # RuntimeError: a loop of symbolic links (Python 3.11)
        raise ExportError(f"cannot write {path}: its path is a loop of symbolic links") from None
    where = f"{path} (a link to {final})" if path.is_symlink() else str(path)
    if final == runs or runs in final.parents:
        raise ExportError(f"cannot write {where}: it is inside the runs folder {runs}; export it somewhere else")
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        if not final.parent.is_dir():
            raise ExportError(f"cannot write {where}: the folder {final.parent} does not exist") from None
        return final
    except OSError as exc:
        raise ExportError(f"cannot write {where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ExportError(f"cannot write {where}: it is a folder; give a file name")
    if not stat.S_ISREG(mode):
        raise ExportError(f"cannot write {where}: it is {file_kind(mode)}; export writes new files or replaces "
                          "regular files, nothing else")
    if not os.access(final, os.W_OK):
        raise ExportError(f"cannot write {where}: it is read-only")
    return final


def final_paths(path: Path, root=None) -> tuple[Path, Path, Path]:
    """The model's and its two cards' paths, symbolic links followed, once each is found to be a
    place export may write (_final_path); ExportError naming the first that is not."""
    _check_folder(path)
    _check_name_lengths(path)
    runs = checkpoints_dir(root).resolve()
    finals = tuple(_final_path(p, runs) for p in (path, *card_paths(path)))
    if len(set(finals)) < len(finals):
        raise ExportError(f"cannot write {path}: it and its cards lead to the same file")
    return finals


def _reserve(final: Path) -> Path:
    """A new empty file beside `final` (same folder, so the rename into place is atomic), under a
    short name of its own that no other file has."""
    for _ in range(100):
        candidate = final.with_name(f"{TEMPORARY}{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name in {final.parent}")


def _remove(paths) -> None:
    """Delete what is there of `paths`; a failure here never hides the error that led to it."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _write_onnx(module: nn.Module, path: Path) -> None:
    import onnx  # heavy: the exporter's libraries load only for an export
    example = torch.rand(2, 1, 28, 28)
    with warnings.catch_warnings():  # the exporter narrates its steps as warnings and prints
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), None, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
                                    opset_version=OPSET, dynamo=True, verbose=False)
    proto = program.model_proto
    proto.doc_string = "MNIST Lab: float32 pixels (N, 1, 28, 28) in [0, 1], white ink on black -> probabilities (N, 10)"
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def _write_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TorchScript is deprecated in favour of torch.export; it still runs
        traced = torch.jit.trace(module, torch.rand(2, 1, 28, 28), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    path.write_bytes(buffer.getvalue())


def _onnxruntime():
    import onnxruntime  # heavy: loads only to run an exported graph
    return onnxruntime


def run_exported(path: Path, pixels: np.ndarray, fmt: str = "onnx", batch: int = 1000) -> np.ndarray:
    """Probabilities (N, 10) from an exported file, run outside the lab's code: ONNX Runtime for
    ONNX, torch.jit.load for TorchScript."""
    out = []
    if fmt == "onnx":
        session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for start in range(0, len(pixels), batch):
            out.append(session.run([OUTPUT], {INPUT: pixels[start:start + batch]})[0])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # deprecated in favour of torch.export; it still runs
            module = torch.jit.load(str(path))
        with torch.no_grad():
            for start in range(0, len(pixels), batch):
                out.append(module(torch.from_numpy(pixels[start:start + batch])).numpy())
    return np.concatenate(out)


def check_in_runtime(run_id: str, root, module, path: Path, fmt: str, data_root, name: str | None = None) -> dict:
    """The exported file run outside the lab on MNIST's 10,000 test images, against the run's saved
    predicted digits and the lab's own PyTorch probabilities. ExportError (naming the run by `name`)
    where either gives probabilities that are not finite numbers: such a file is never verified."""
    pixels = load_test_pixels(data_root)
    exported = run_exported(path, pixels.numpy(), fmt)
    with torch.inference_mode():
        ours = torch.cat([module(pixels[i:i + 1000]) for i in range(0, len(pixels), 1000)]).numpy()
    broken = int((~(np.isfinite(exported).all(1) & np.isfinite(ours).all(1))).sum())
    if broken:
        raise ExportError(f"run {name or run_id!r} cannot be exported: its probabilities are not finite numbers "
                          f"(NaN or infinity) for {broken:,} of MNIST's {len(pixels):,} test images; "
                          "nothing was written")
    saved = load_predictions(run_id, root)["predicted"]
    runtime = f"onnxruntime {_onnxruntime().__version__}" if fmt == "onnx" else f"torch.jit {torch.__version__}"
    return {"images": len(pixels), "runtime": runtime,
            "digits_as_saved": int((exported.argmax(1) == saved).sum()),
            "max_probability_difference": float(np.abs(exported - ours).max())}


def _check_finite_weights(model: nn.Module, name: str) -> None:
    """ExportError if any weight of the model is NaN or infinite: its probabilities would be too."""
    bad = sum(int((~torch.isfinite(t)).sum()) for t in model.state_dict().values() if t.is_floating_point())
    if bad:
        raise ExportError(f"run {name!r} cannot be exported: {bad:,} of its weights are not finite numbers (NaN or "
                          "infinity), so its probabilities would not be numbers either")


def export(run_id: str, root=None, fmt: str = "onnx", path: str | os.PathLike | None = None,
           verify: bool = True, data_root=None, report=lambda line: None) -> Exported:
    """Export the finished run `run_id` to `path` (default: <run id>.onnx here) with its card.
    `verify` runs the file on MNIST's 10,000 test images (in `data_root`) and puts the result in
    the card (check_in_runtime)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: {' or '.join(FORMATS)}")
    run = finished_run(run_id, root, ExportError, "export it")
    if run.status != "finished":
        raise ExportError(f"run {run.name!r} is {run.status}: only a finished run has the weights it tested")
    if not is_regular_file(run_dir(run_id, root) / WEIGHTS):
        raise ExportError(f"run {run.name!r} has no saved weights ({WEIGHTS}) to export")
    target = Path(path) if path is not None else default_path(run_id, fmt)
    finals = final_paths(target, root)
    try:
        model = load_model(run_id, root)
    except RunError as exc:
        raise ExportError(str(exc)) from None
    _check_finite_weights(model, run.name)
    module = PixelsToProbabilities(model)
    md_path, json_path = card_paths(target)
    temporary = []
    try:
        for final in finals:
            temporary.append(_reserve(final))
        report(f"exporting run {run.name!r} to {target} ({fmt})…")
        started = time.perf_counter()
        (_write_onnx if fmt == "onnx" else _write_torchscript)(module, temporary[0])
        seconds = time.perf_counter() - started
        if verify:
            report("running the file on MNIST's 10,000 test images, against the run's own predictions…")
        verified = check_in_runtime(run_id, root, module, temporary[0], fmt, data_root, run.name) if verify else None
        card = card_mod.build(run, root, fmt, target.name, OPSET if fmt == "onnx" else None, verified)
        temporary[1].write_text(card_mod.markdown(card))
        temporary[2].write_text(card_mod.as_json(card))
        if final_paths(target, root) != finals:   # changed while the file was made
            raise ExportError(f"cannot write {target}: it or its cards changed while the file was made; try again")
        for done, final in zip(temporary, finals):
            os.replace(done, final)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        _remove(temporary)
    return Exported(target, md_path, json_path, fmt, round(seconds, 2), finals[0].stat().st_size, card)


def bundle(run_id: str, root=None, fmt: str = "onnx", data_root=None) -> tuple[str, bytes, Exported]:
    """(zip file name, zip bytes, what was exported): the file and its two cards in one zip, for a
    browser's download."""
    with tempfile.TemporaryDirectory(prefix="mnist-lab-export-") as folder:
        done = export(run_id, root, fmt, Path(folder) / default_path(run_id, fmt), verify=True, data_root=data_root)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in (done.path, done.card_md, done.card_json):
                archive.write(path, path.name)
    return f"{run_id}-{fmt}.zip", buffer.getvalue(), done
