"""Export given bad input (the issue's bad-input sweep): a target that is not export's own to write (a
device behind a link, a FIFO, a folder, anything in the runs folder, a file the user may not write), a
name at the file-name limit, a model whose probabilities are not numbers, a metrics.json without its
fields, and an ensemble whose members lead back to it. Each is refused in one line before anything is
written (or, for the card, written with "unknown"); the runs folder is byte for byte as before and
nothing appears beside the target but what export was asked to write."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from core.analysis.ensemble import create_ensemble
from core.export import graph
from core.rebuild import MAX_NESTING
from core.store.runs import load_predictions, load_run
from tests.helpers import REPO, reference_runs, require_mnist, run_cli

SHIPPED = REPO / "checkpoints"
LENET = reference_runs(SHIPPED)["lenet"]
MLP = reference_runs(SHIPPED)["mlp"]
WHICH = ("model", "card.md", "card.json")   # the three files an export writes
REFUSES = "export writes new files or replaces regular files, nothing else"
CLI_TIMEOUT = 120  # s: a command run as its own process that hangs fails its test instead


@pytest.fixture
def runs(tmp_path) -> Path:
    """A checkpoints folder of the test's own with copies of the lenet and mlp reference runs."""
    root = tmp_path / "runs"
    for run_id in (LENET, MLP):
        shutil.copytree(SHIPPED / run_id, root / run_id)
    return root


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def hashes(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's SHA-256, a link's target, or its kind."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = stat.filemode(path.lstat().st_mode)
    return found


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def target_of(out: Path, which: str) -> tuple[Path, Path]:
    """(the -o path, the one of its three files named by `which`)."""
    model = out / "m.onnx"
    return model, dict(zip(WHICH, (model, *graph.card_paths(model))))[which]


def refused(root: Path, *args: str, cwd=None, started: bool = False) -> str:
    """The one error line of `export ARGS` on the runs in `root` (exit status 2, nothing on stdout).
    Unless `started`, it is all that is printed: the export was refused before it began."""
    code, stdout, err = run_cli("--checkpoints", str(root), "export", *args, cwd=cwd)
    lines = err.strip().splitlines()
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    assert started or len(lines) == 1, err
    return lines[-1]


def assert_ours_only_in_dev() -> None:
    """/dev/null is still the null device, and no card or temporary file of an export is in /dev."""
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.stat("/dev/null").st_rdev == os.makedev(1, 3)
    assert not [p for p in os.listdir("/dev") if ".card." in p or p.startswith(graph.TEMPORARY)]


# --- 1. a target that is not export's own ----------------------------------------------------------

@pytest.mark.parametrize("which", WHICH)
def test_a_link_to_dev_null_is_refused_and_dev_null_stays_a_device(runs, out, which):
    """The issue's `-o /dev/null` (which turned it into a regular file as root), through a link in a
    folder of the test's own: never the real device file."""
    model, link = target_of(out, which)
    link.symlink_to("/dev/null")
    before, listing = hashes(runs), entries(out)
    line = refused(runs, LENET, "--no-verify", "-o", str(model))
    assert line == f"error: cannot write {link} (a link to /dev/null): it is a character device; {REFUSES}"
    assert_ours_only_in_dev()
    assert entries(out) == listing and os.readlink(link) == "/dev/null"
    assert hashes(runs) == before


@pytest.mark.parametrize("which", WHICH)
def test_a_fifo_is_refused_without_waiting_on_it(runs, out, which):
    """The test holds the FIFO's reading end, so a writer would not wait: it would fail here, not hang."""
    model, fifo = target_of(out, which)
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        before, listing = hashes(runs), entries(out)
        line = refused(runs, LENET, "--no-verify", "-o", str(model))
        assert os.read(reader, 1) == b""   # nothing was written into it
    finally:
        os.close(reader)
    assert line == f"error: cannot write {fifo}: it is a named pipe (FIFO); {REFUSES}"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and entries(out) == listing
    assert hashes(runs) == before


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("linked", [False, True], ids=["folder", "link-to-folder"])
def test_a_folder_is_refused(runs, out, tmp_path, which, linked):
    model, place = target_of(out, which)
    folder = tmp_path / "elsewhere" if linked else place
    (folder / "inside").mkdir(parents=True)
    if linked:
        place.symlink_to(folder)
    before, listing = hashes(runs), hashes(tmp_path / "elsewhere") if linked else None
    line = refused(runs, LENET, "--no-verify", "-o", str(model))
    where = f"{place} (a link to {folder})" if linked else str(place)
    assert line == f"error: cannot write {where}: it is a folder; give a file name"
    assert entries(out) == [place.name] and entries(folder) == ["inside"]
    assert hashes(runs) == before and (not linked or hashes(tmp_path / "elsewhere") == listing)


def _in_runs(runs: Path, out: Path) -> dict[str, tuple[list[str], Path, Path | None]]:
    """case -> (export's arguments after RUN, the path the message names, the folder to run it from)."""
    weights, metrics = runs / LENET / "model.safetensors", runs / LENET / "metrics.json"
    (out / "weights.onnx").symlink_to(weights)
    (out / "m.onnx.card.json").symlink_to(metrics)
    return {
        "the-runs-own-weights": (["-o", str(weights)], weights, None),
        "a-new-file-in-a-run": (["-o", str(runs / LENET / "new.onnx")], runs / LENET / "new.onnx", None),
        "a-new-file-in-the-runs-folder": (["-o", str(runs / "new.onnx")], runs / "new.onnx", None),
        "dot-dot": (["-o", str(out / ".." / "runs" / LENET / "x.onnx")], out / ".." / "runs" / LENET / "x.onnx", None),
        "a-link-to-the-weights": (["-o", str(out / "weights.onnx")], out / "weights.onnx", None),
        "a-card-linked-to-metrics": (["-o", str(out / "m.onnx")], out / "m.onnx.card.json", None),
        "the-default-name-from-inside-the-runs-folder": ([], Path(f"{LENET}.onnx"), runs),
    }


@pytest.mark.parametrize("case", ["the-runs-own-weights", "a-new-file-in-a-run", "a-new-file-in-the-runs-folder",
                                  "dot-dot", "a-link-to-the-weights", "a-card-linked-to-metrics",
                                  "the-default-name-from-inside-the-runs-folder"])
def test_nothing_in_the_runs_folder_is_written(runs, out, case):
    """The issue's `-o ck/R/model.safetensors` overwrote the run's weights; a link, a card or the
    default name in the runs folder is refused the same way."""
    args, named, cwd = _in_runs(runs, out)[case]
    before, listing = hashes(runs), entries(out)
    line = refused(runs, LENET, "--no-verify", *args, cwd=cwd)
    where = f"{named} (a link to {named.resolve()})" if named.is_symlink() else str(named)
    assert line == (f"error: cannot write {where}: it is inside the runs folder {runs.resolve()}; "
                    "export it somewhere else")
    assert hashes(runs) == before and entries(out) == listing


@pytest.mark.slow
def test_a_file_the_user_may_not_write_is_refused(runs, out):
    """Run as a user without root's write-anything capability (root may replace any file)."""
    model = out / "m.onnx"
    model.write_text("kept")
    model.chmod(0o444)
    before = hashes(runs)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-m", "core", "--checkpoints", str(runs), "export", LENET,
                           "--no-verify", "-o", str(model)], cwd=REPO, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: cannot write {model}: it is read-only"]
    assert model.read_text() == "kept" and entries(out) == ["m.onnx"] and hashes(runs) == before


@pytest.mark.slow
def test_a_regular_file_or_a_link_to_one_is_replaced_and_nothing_else_written(runs, out):
    """What export may write: an existing regular file is replaced; through a link, the file it
    leads to is (the link stays). TorchScript: the place rule does not depend on the format."""
    (out / "old.pt").write_text("an older export")
    (out / "real.pt").write_text("an older export")
    (out / "link.pt").symlink_to(out / "real.pt")
    before = hashes(runs)
    for name in ("old.pt", "link.pt"):
        code, _, err = run_cli("--checkpoints", str(runs), "export", LENET, "--format", "torchscript", "--no-verify",
                               "-o", str(out / name))
        assert code == 0, err
    assert entries(out) == sorted(["old.pt", "real.pt", "link.pt", *(f"{n}{s}" for n in ("old.pt", "link.pt")
                                                                      for s in (graph.CARD_MD, graph.CARD_JSON))])
    assert os.readlink(out / "link.pt") == str(out / "real.pt")
    saved = load_predictions(LENET, runs)["predicted"][:500]
    from core.data.mnist import load_test_pixels
    first = load_test_pixels(require_mnist())[:500].numpy()
    for name in ("old.pt", "real.pt"):
        assert np.array_equal(graph.run_exported(out / name, first, "torchscript").argmax(1), saved)
    assert hashes(runs) == before


# --- 2. a name at the file-name limit -----------------------------------------------------------------

def name_limit(folder: Path) -> int:
    return os.pathconf(folder, "PC_NAME_MAX")


@pytest.mark.parametrize("over", [1, 5, 10], ids=["one-byte-over", "the-issues-250", "the-limit-itself"])
def test_a_name_too_long_for_its_cards_is_refused_before_anything_is_written(runs, out, over):
    """The card NAME.card.json is the longest name an export writes: 10 bytes more than NAME."""
    allowed = name_limit(out) - len(graph.CARD_JSON)
    model = out / ("a" * (allowed + over - len(".onnx")) + ".onnx")
    before = hashes(runs)
    line = refused(runs, LENET, "--no-verify", "-o", str(model))
    assert line == (f"error: cannot write {model}: the name of its card (the file's name + '.card.json') would be "
                    f"{allowed + over + len(graph.CARD_JSON)} bytes, over this file system's limit of "
                    f"{name_limit(out)}; give a file name of at most {allowed} bytes")
    assert entries(out) == [] and hashes(runs) == before


@pytest.mark.slow
def test_a_name_at_the_limit_is_exported_with_both_cards_and_no_temporary_file(runs, out):
    """`.NAME.PID.tmp` pushed such a name over the limit; the temporary names are short now."""
    model = out / ("a" * (name_limit(out) - len(graph.CARD_JSON) - len(".onnx")) + ".onnx")
    code, _, err = run_cli("--checkpoints", str(runs), "export", LENET, "--no-verify", "-o", str(model))
    assert code == 0, err
    assert entries(out) == sorted([model.name, model.name + graph.CARD_MD, model.name + graph.CARD_JSON])
    assert len(os.fsencode(model.name + graph.CARD_JSON)) == name_limit(out)
    from core.data.mnist import load_test_pixels
    pixels = load_test_pixels(require_mnist())[:500].numpy()
    assert np.array_equal(graph.run_exported(model, pixels).argmax(1), load_predictions(LENET, runs)["predicted"][:500])


def _limit_file_size():
    # Files may not grow past 64 KiB: the model (about 100 KB) cannot be written, as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow
def test_a_write_that_fails_says_why_and_leaves_no_temporary_file(runs, out):
    """The cleanup after a failed write never hides the failure (it raised over it)."""
    before = hashes(runs)
    done = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(runs), "export", LENET, "--no-verify",
                           "-o", str(out / "m.onnx")], cwd=REPO, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, preexec_fn=_limit_file_size)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: cannot write {out / 'm.onnx'}: File too large"
    assert entries(out) == [] and hashes(runs) == before


# --- 3. probabilities that are not numbers --------------------------------------------------------

def _scale_weights(folder: Path, factor: float) -> int:
    """Multiply the run's floating-point weights by `factor`; return how many values there are."""
    weights = str(folder / "model.safetensors")
    state = load_file(weights)
    save_file({k: v * factor if v.is_floating_point() else v for k, v in state.items()}, weights)
    return sum(v.numel() for v in state.values() if v.is_floating_point())


@pytest.fixture
def nan_ensemble(runs) -> tuple[str, int]:
    """The issue's case: an ensemble of the mlp run and a lenet run whose weights are NaN (its saved
    predictions are the lenet run's own). (ensemble id, how many NaN weights it holds)."""
    shutil.copytree(runs / LENET, runs / "nan-lenet")
    nan = _scale_weights(runs / "nan-lenet", float("nan"))
    return create_ensemble(["nan-lenet", MLP], root=runs), nan


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "no-verify"])
def test_an_ensemble_with_nan_weights_is_refused_not_verified(runs, out, nan_ensemble, verify):
    ensemble, nan = nan_ensemble
    before = hashes(runs)
    line = refused(runs, ensemble, *([] if verify else ["--no-verify"]), "-o", str(out / "e.onnx"))
    assert line == (f"error: run {load_run(ensemble, runs).name!r} cannot be exported: {nan:,} of its weights are not "
                    "finite numbers (NaN or infinity), so its probabilities would not be numbers either")
    assert "near-ties" not in line and "nan" not in line
    assert entries(out) == [] and hashes(runs) == before


@pytest.mark.slow
def test_evaluate_does_not_offer_an_ensemble_with_nan_weights(lab_env, runs, nan_ensemble):
    """The Evaluate page offered its zip as checked; now it says why it cannot."""
    from tests.test_app import open_page
    ensemble, nan = nan_ensemble
    lab_env(runs)
    before = hashes(runs)
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(ensemble).run()
    at.button(key="eval_export_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    from dashboard.state import EXPORTS
    assert not [k for k in EXPORTS if k[1] == ensemble]
    assert any(f"{nan:,} of its weights are not finite numbers" in w.value for w in at.warning)
    assert hashes(runs) == before


@pytest.mark.slow
def test_probabilities_that_overflow_are_refused_by_the_verification(runs, out):
    """Finite weights (1e30 times the run's) whose probabilities are NaN: the check in ONNX Runtime
    refuses the file instead of reporting "within nan"."""
    _scale_weights(runs / LENET, 1e30)
    before = hashes(runs)
    line = refused(runs, LENET, "-o", str(out / "m.onnx"), started=True)
    assert line == (f"error: run {load_run(LENET, runs).name!r} cannot be exported: its probabilities are not finite "
                    "numbers (NaN or infinity) for 10,000 of MNIST's 10,000 test images; nothing was written")
    assert entries(out) == [] and hashes(runs) == before


# --- 4. a metrics.json without its fields --------------------------------------------------------------

MISSING = object()
METRICS_CASES = {   # case -> (the change to metrics.json, a line the card must hold, its parameters in JSON)
    "no-parameters": ({"parameters": MISSING}, "(lenet, number of parameters not recorded)", None),
    "parameters-as-text": ({"parameters": "61,706"}, "(lenet, number of parameters not recorded)", None),
    "parameters-true": ({"parameters": True}, "(lenet, number of parameters not recorded)", None),
    "no-test-accuracy": ({"test_accuracy": MISSING}, "- Test accuracy: unknown (95% interval", "kept"),
    "test-accuracy-as-text": ({"test_accuracy": "high"}, "- Test accuracy: unknown (95% interval", "kept"),
    "no-training-facts": ({"finished": MISSING, "device": None, "seconds": MISSING, "torch": ""},
                          "finished unknown on unknown (unknown s, torch unknown)", "kept"),
}


@pytest.mark.parametrize("case", list(METRICS_CASES))
def test_a_card_says_unknown_for_a_metrics_field_missing_or_of_another_type(runs, out, case):
    """`metrics.json` without `parameters` ended in `ValueError: Cannot specify ',' with 's'`.
    TorchScript: the card is the same for every format, and it takes milliseconds."""
    changes, line, parameters = METRICS_CASES[case]
    path = runs / LENET / "metrics.json"
    metrics = json.loads(path.read_text())
    kept_parameters = metrics["parameters"]
    for key, value in changes.items():
        metrics.pop(key) if value is MISSING else metrics.__setitem__(key, value)
    path.write_text(json.dumps(metrics))
    before = hashes(runs)
    code, stdout, err = run_cli("--checkpoints", str(runs), "export", LENET, "--format", "torchscript", "--no-verify",
                                "-o", str(out / "m.pt"))
    assert code == 0 and "Traceback" not in err, err
    assert line in (out / "m.pt.card.md").read_text()
    card = json.loads((out / "m.pt.card.json").read_text())
    assert card["model"]["parameters"] == (kept_parameters if parameters == "kept" else parameters)
    assert hashes(runs) == before


# --- 5. an ensemble whose members lead back to it ---------------------------------------------------------

def _ensembles(runs: Path, count: int) -> list[str]:
    """`count` ensembles named E0, E1, ... (copies of one of the lenet and mlp runs)."""
    first = create_ensemble([LENET, MLP], root=runs)
    names = [f"E{i}" for i in range(count)]
    for name in names:
        shutil.copytree(runs / first, runs / name)
    shutil.rmtree(runs / first)
    return names


def _list_members(runs: Path, ensemble: str, members: list[str]) -> None:
    path = runs / ensemble / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "members": members}))


def _itself(runs):
    _ensembles(runs, 1)
    _list_members(runs, "E0", ["E0", MLP])
    return "ensemble 'E0' lists itself among its members (config.json was edited)"


def _loop(runs):
    _ensembles(runs, 2)
    _list_members(runs, "E0", ["E1", MLP])
    _list_members(runs, "E1", [LENET, "E0"])
    return "the members of ensemble 'E0' lead round in a loop (E0 -> E1 -> E0; a config.json was edited)"


def _too_deep(runs):
    names = _ensembles(runs, MAX_NESTING + 1)
    for name, inner in zip(names, names[1:]):
        _list_members(runs, name, [inner, MLP])
    return f"ensemble 'E0' nests ensembles more than {MAX_NESTING} deep ({' -> '.join(names)})"


@pytest.mark.parametrize("make", [_itself, _loop, _too_deep], ids=["itself", "a-loop", "nine-deep"])
@pytest.mark.parametrize("command", ["calibration", "ood"])
def test_an_ensemble_whose_members_lead_back_to_it_is_refused_by_name(runs, make, command):
    """A hand-edited member list ended in `RecursionError` where the members are followed (the
    validation split of calibration and the not-a-digit check)."""
    why = make(runs)
    before = hashes(runs)
    code, stdout, err = run_cli("--checkpoints", str(runs), command, "E0")
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"error: {why}: its validation split cannot be rebuilt"]
    assert hashes(runs) == before
