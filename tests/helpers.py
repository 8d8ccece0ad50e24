"""Shared helpers for the core tests: the real MNIST files and tiny real runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MNIST_LAB_DATA") or REPO / "data").resolve()


def run_cli(*argv: str, cwd=None, input: str | None = None) -> tuple[int, str, str]:
    """`python -m core ARGV` in this process, from `cwd` if given, `input` on its stdin (a pipe's,
    not a terminal's): (exit code, stdout, stderr).
    The same main() the entry points call, without the interpreter's two-second start (tests that
    need a real process, for signals, another user or the entry points, start one). The signal
    handlers a command installs are put back afterwards."""
    import contextlib
    import io
    import signal
    from core.cli import main
    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stdin = sys.stdin
    if input is not None:
        sys.stdin = io.StringIO(input)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                (contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.stdin = stdin
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, out.getvalue(), err.getvalue()


def cli_result(*argv: str, cwd=None, input: str | None = None) -> subprocess.CompletedProcess:
    """run_cli's result as a CompletedProcess (returncode, stdout, stderr), for tests written
    against a real process that need none of its properties."""
    code, out, err = run_cli(*argv, cwd=cwd, input=input)
    return subprocess.CompletedProcess(list(argv), code, out, err)


class MissingReferenceRun(UserWarning):
    """A registered architecture has no reference run in checkpoints/ yet: named, not failed."""


def reference_runs(root: Path = REPO / "checkpoints") -> dict[str, str]:
    """arch -> run id of each registered architecture's reference run in `root` (its recipe's, not
    a sweep's), in the registry's order. An architecture without one (just registered, its run not
    shipped yet: python -m scripts.ship_reference) is left out and named in a warning, "no
    reference run for: X", so that the suite passes and says what is missing."""
    import warnings
    from core.models import list_models
    from core.store.runs import list_runs
    from scripts.recipe_table import unshipped
    runs = list_runs(root)
    if unshipped(runs):
        warnings.warn(f"no reference run for: {', '.join(unshipped(runs))}", MissingReferenceRun, stacklevel=2)
    found = {r.arch: r.run_id for r in reversed(runs) if r.reference and not r.config.get("sweep")}  # the first
    return {arch: found[arch] for arch in list_models() if arch in found}


def best_by_validation(run_ids, root: Path) -> list[str]:
    """`run_ids` best validation accuracy first (equal ones by id), read by hand: the last row's
    val_acc of each run's history.csv, without the store. The oracle of every default "best"."""
    import csv

    def last_val(run_id: str) -> float:
        with open(Path(root) / run_id / "history.csv", newline="") as f:
            return float(list(csv.DictReader(f))[-1]["val_acc"])
    return sorted(run_ids, key=lambda i: (-last_val(i), i))


def require_mnist() -> Path:
    from core.data.mnist import is_available
    if not is_available(DATA):
        pytest.fail(f"MNIST is not in {DATA}: run `python -m core fetch` first (make test does)")
    return DATA


def train_new(config, root: Path, **kwargs) -> tuple[str, str]:
    """Create a run for `config` in `root` and train it in this process: (run id, final status)."""
    from core.training.loop import prepare_run, train
    writer = prepare_run(config, root=root)
    kwargs.setdefault("data_root", require_mnist())
    return writer.run_id, train(writer.run_id, root=root, writer=writer, **kwargs)


def resume_matches_unbroken(config, root: Path):
    """Train `config` twice in `root`: once unbroken, once cancelled after epoch 1 and resumed.
    Assert the two histories (bar the seconds) and kept weights are the same; return both runs."""
    import threading

    import pandas as pd
    import torch

    from core.store.folder import HISTORY_COLUMNS
    from core.store.runs import load_model, load_run
    from core.training.loop import train
    unbroken, status = train_new(config, root)
    assert status == "finished"
    stop = threading.Event()
    broken, status = train_new(config, root, stop=stop,
                               callback=lambda e: stop.set() if e.kind == "epoch" and e.epoch == 1 else None)
    assert status == "cancelled"
    assert train(broken, resume=True, root=root, data_root=require_mnist()) == "finished"
    a, b = load_run(unbroken, root), load_run(broken, root)
    same = [c for c in HISTORY_COLUMNS if not c.endswith("seconds")]
    pd.testing.assert_frame_equal(a.history[same], b.history[same])
    kept_a, kept_b = load_model(unbroken, root).state_dict(), load_model(broken, root).state_dict()
    for name in kept_a:
        assert torch.equal(kept_a[name], kept_b[name]), name
    return a, b


def train_tiny(root: Path, arch: str = "lenet", **overrides) -> str:
    """Really train a small run on real MNIST into `root`; return its id."""
    from core.config import TrainConfig
    settings = dict(arch=arch, epochs=2, train_limit=5000, device="cpu", seed=0)
    settings.update(overrides)
    run_id, status = train_new(TrainConfig(**settings), root)
    assert status == "finished"
    return run_id


def make_run(run_id="20260101-000000-mlp", *, arch="mlp", status="finished", epochs=3, history=None,
             metrics=None, progress=None, created="2026-01-01T00:00:00", **config):
    """A `Run` as if read from a folder (which does not exist), for the table and sweep views."""
    import pandas as pd
    from core.store.folder import HISTORY_COLUMNS
    from core.store.runs import Run
    history = pd.DataFrame(history or [], columns=HISTORY_COLUMNS)
    return Run(run_id, Path("/nowhere") / run_id, {"arch": arch, "epochs": epochs, **config}, status,
               {"status": status, "created": created}, history, metrics or {}, progress or {})


def history_rows(seconds=(2.0, 4.0), val_acc=(90.0, 95.0)) -> list[dict]:
    """history.csv rows of finished epochs, one per (seconds, val_acc)."""
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": 80.0 + i, "val_loss": 0.5 / (i + 1),
             "val_acc": acc, "lr": 0.1, "seconds": s} for i, (s, acc) in enumerate(zip(seconds, val_acc))]


def write_digits_csv(dest, images, labels=None) -> None:
    """Kaggle's digit-recognizer format, written plainly (label, pixel0..pixel783), to a path
    or a binary buffer: the files the CSV reader is tested against."""
    images = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    columns = [f"pixel{i}" for i in range(images.shape[1])]
    if labels is not None:
        images = np.column_stack([np.asarray(labels).reshape(-1), images])
        columns = ["label", *columns]
    text = ",".join(columns) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in images)
    if isinstance(dest, (str, os.PathLike)):
        Path(dest).write_text(text)
    else:
        dest.write(text.encode())


def shown(markdown: str) -> str:
    """What a user reads of a Markdown string made with dashboard.text.md_text: its empty
    `:small[]` cuts and its backslash escapes taken out (for text with no other Markdown)."""
    import re
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown.replace(":small[]", ""))


# The not-a-digit head is three scikit-learn MLPs fitted for up to head.MAX_ITER Adam epochs: about
# half a minute a run, most of a fit. Tests of what is done with a fitted check (it is kept, read,
# judged the same way again, shown, refitted when damaged) fit it on a budget of QUICK_HEAD_EPOCHS;
# how well a full fit tells letters from digits is checked where it matters: the head against
# scikit-learn's own predictions at the full budget (test_ood_exposure), every shipped run's detector
# (test_reference), and a drawn letter in the real dashboard, which fits in its own process (e2e).
QUICK_HEAD_EPOCHS = 4


def quick_head_patch(patch: pytest.MonkeyPatch) -> None:
    """Fit the not-a-digit head on QUICK_HEAD_EPOCHS epochs while `patch` holds (the `quick_head` fixture)."""
    from core.notadigit import head
    patch.setattr(head, "MAX_ITER", QUICK_HEAD_EPOCHS)

