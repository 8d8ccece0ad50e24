"""The Train page beyond test_app.py: its form is TrainConfig's fields, a run's dataset notes
show, its one-second refresh reads the active runs alone, and errors are shown by kind."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.models import get_spec
from tests.helpers import shown

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TIMEOUT = 60
WIDGETS = ("number_input", "selectbox", "checkbox", "text_input")


def open_train() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()  # "/" is the first page
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widgets(node) -> dict:
    """key -> widget, of every form widget under `node` (the app or a block)."""
    return {w.key: w for kind in WIDGETS for w in getattr(node, kind) if w.key}


def refresh_script() -> None:
    """What the Train page's fragment runs on its one-second timer."""
    import streamlit as st
    from dashboard.views import train
    st.session_state["train_polling"] = True
    train.live_panel()


def test_the_form_is_every_config_field_with_the_recipe_filled_in(lab_env):
    from dashboard.views.train import ESSENTIAL, FIELDS, NOT_IN_FORM, PLAIN
    at = open_train()
    at.selectbox(key="train_arch").set_value("mlp").run()
    shown = widgets(at)
    by_name = {f.name: f for f in FIELDS}
    for field in dataclasses.fields(TrainConfig):
        if field.name in NOT_IN_FORM:
            continue
        widget = shown[by_name[field.name].key]
        # a plain sentence first, then the table's own words and the CLI option
        assert widget.help.startswith(PLAIN[field.name]), field.name
        assert widget.help.endswith(f"{field.metadata.get('help')} · `{by_name[field.name].flag}`"), field.name
        if field.metadata.get("choices"):
            assert list(widget.options) == list(field.metadata["choices"])
    recipe = get_spec("mlp").recipe
    for f in FIELDS:
        if f.recipe:
            assert shown[f.key].value == getattr(recipe, f.name), f.name
    for f in FIELDS:  # a knob's number input is bounded by its range (core.recipe.KNOBS)
        if f.knob is not None and f.kind in (int, float):
            assert (shown[f.key].min, shown[f.key].max) == f.knob.bounds, f.name
    # the essentials above "Advanced", every other field (and the seeds) in it
    (advanced,) = [e for e in at.expander if e.label == "Advanced"]
    assert set(widgets(advanced)) == {f.key for f in FIELDS if f.name not in ESSENTIAL} | {"train_seeds"}
    assert set(widgets(at)) - set(widgets(advanced)) == {"train_arch"} | {f.key for f in FIELDS if f.name in ESSENTIAL}
    assert {"train_ema_decay", "train_bf16", "train_channels_last", "train_compile"} <= set(widgets(advanced))
    assert list(shown["train_bf16"].options) == ["auto", "on", "off"]


def test_start_gives_the_trainer_every_form_value(lab_env, monkeypatch):
    from core.training import jobs
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda config: launched.append(config) or "20260101-000000-mlp")
    at = open_train()
    at.selectbox(key="train_arch").set_value("lenet").run()
    at.number_input(key="train_epochs").set_value(3)
    at.number_input(key="train_ema_decay").set_value(0.99)
    at.selectbox(key="train_bf16").set_value("off")
    at.selectbox(key="train_channels_last").set_value("on")
    at.checkbox(key="train_compile").check()
    at.number_input(key="train_limit").set_value(0)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    (config,) = launched
    recipe = get_spec("lenet").recipe.as_dict()
    expected = TrainConfig(arch="lenet", **{**recipe, "epochs": 3, "ema_decay": 0.99}, bf16=False,
                           channels_last=True, compile=True)
    assert config == expected  # train_limit 0 is "all" (None), an empty name is no name


def test_a_run_that_left_test_duplicates_out_says_so(lab_env, trained_runs, tmp_path):
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    newest = root / trained_runs.ids["lenet"]  # trained last: the Train page's latest run
    info = json.loads((newest / "dataset.json").read_text())
    assert info["test_duplicates_left_out"] == 0
    at = open_train()
    assert not [c for c in at.caption if "identical to MNIST test images" in c.value]
    (newest / "dataset.json").write_text(json.dumps({**info, "test_duplicates_left_out": 1234}))
    at.run()
    assert [c.value for c in at.caption if "identical to MNIST test images" in c.value] == \
        [":material/filter_alt: 1,234 training images identical to MNIST test images were left out"]


def test_finished_runs_are_read_once_and_the_refresh_reads_only_active_ones(lab_env, trained_runs, tmp_path,
                                                                            monkeypatch):
    from core.store.writer import RunWriter
    from core.store import cache
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    job = RunWriter.create(TrainConfig(arch="mlp", epochs=5, name="live one").to_dict(), root=root)
    try:  # this process holds the new run's lock: it is live
        job.start()
        job.write_progress(epoch=1, epochs=5, step=10, steps=100, train_loss=1.0, train_acc=50.0,
                           epoch_seconds=1.0)
        reads, looked_at = [], []
        real_load, real_signature = cache.load_run, cache.run_signature
        monkeypatch.setattr(cache, "load_run", lambda run_id, root=None: reads.append(run_id)
                            or real_load(run_id, root))
        monkeypatch.setattr(cache, "run_signature", lambda folder: looked_at.append(Path(folder).name)
                            or real_signature(folder))
        at = open_train()
        assert sorted(reads) == sorted([*trained_runs.ids.values(), job.run_id])
        assert "Training now" in [s.value for s in at.subheader]
        reads.clear()
        at.run()
        assert reads == []  # nothing changed: nothing is read again
        refresh = AppTest.from_function(refresh_script, default_timeout=TIMEOUT)
        job.write_progress(epoch=1, epochs=5, step=60, steps=100, train_loss=0.5, train_acc=80.0,
                           epoch_seconds=6.0)
        looked_at.clear()
        refresh.run()
        assert not refresh.exception, [e.value for e in refresh.exception]
        assert reads == [job.run_id] and looked_at == [job.run_id]  # the finished runs are not even stat'ed
        bars = [p.proto.text for p in refresh.get("progress")]
        assert bars and all(text.startswith("Epoch 1/5 · step 60/100") for text in bars)
    finally:
        job.release()
    reads.clear()
    at.run()  # the lock is gone: the run shows as interrupted without being read again
    assert reads == [] and "Latest run" in [s.value for s in at.subheader]


def report_script() -> None:
    from core.errors import LabError
    from dashboard.notices import report
    report(LabError("the value is out of range"), "**a run**")
    try:
        {}["a bug"]
    except KeyError as exc:
        report(exc, "**another run**")


def test_a_lab_error_is_a_message_anything_else_keeps_its_traceback():
    at = AppTest.from_function(report_script, default_timeout=TIMEOUT).run()
    assert [w.value for w in at.warning] == ["**a run**: the value is out of range"]
    (shown,) = at.exception
    assert "a bug" in shown.message and shown.stack_trace


# --- issue 10: data checked before a run exists; Resume on a machine without the run's GPU ----

RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def altered_mnist(tmp_path: Path) -> Path:
    """An MNIST root like the real one but for one test label changed (its size and magic
    number stay right: only the MD5 check finds it). The three untouched files are links."""
    from tests.helpers import require_mnist
    good = require_mnist() / "MNIST" / "raw"
    raw = tmp_path / "altered" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW[:3]:
        (raw / name).symlink_to(good / name)
    labels = bytearray((good / RAW[3]).read_bytes())
    labels[8 + 5] = (labels[8 + 5] + 1) % 10
    (raw / RAW[3]).write_bytes(bytes(labels))
    return raw.parent.parent


def test_train_start_on_altered_mnist_says_so_and_creates_no_run(lab_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_DATA", str(altered_mnist(tmp_path)))
    at = open_train()
    at.selectbox(key="train_arch").set_value("mlp").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = at.error
    assert error.value.startswith("Could not start the run: ")
    assert "t10k-labels-idx1-ubyte is corrupt" in error.value and "python -m core fetch" in shown(error.value)
    assert not any(lab_env.empty.iterdir())  # no run folder, not even the locks folder


def launch_sweep(device: str = "auto") -> AppTest:
    at = open_train()
    at.switch_page("views/sweep.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="sweep_device").set_value(device)
    at.text_input(key="sweep_lrs").set_value("0.01, 0.1")
    at.text_input(key="sweep_batches").set_value("64")
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sweep_launch_on_altered_mnist_says_so_and_creates_no_run(lab_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_DATA", str(altered_mnist(tmp_path)))
    at = launch_sweep()
    (error,) = at.error
    assert "t10k-labels-idx1-ubyte is corrupt" in error.value
    assert not any(lab_env.empty.iterdir())
    assert not [s for s in at.success if "Queued" in s.value]


def test_sweep_launch_on_a_missing_gpu_says_so_and_creates_no_run(lab_env, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    at = launch_sweep("cuda")
    assert [e.value for e in at.error] == ["device 'cuda' was asked for, but no CUDA GPU is available here"]
    assert not any(lab_env.empty.iterdir())


def test_resume_of_a_cuda_run_on_a_machine_without_one_offers_the_cpu(lab_env, trained_runs, tmp_path,
                                                                      monkeypatch):
    import torch
    from core.training import jobs
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    run_id = trained_runs.ids["lenet"]  # the newest: the "Latest run" card
    for name, changes in (("config.json", {"device": "cuda"}), ("status.json", {"status": "cancelled"})):
        path = root / run_id / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    resumed = []
    monkeypatch.setattr(jobs, "resume", lambda run_id, device=None: resumed.append((run_id, device)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    at = open_train()
    buttons = [b for b in at.button if b.key and b.key.startswith("resume_")]
    assert buttons and {b.label for b in buttons} == {"Resume on CPU"}
    assert "which this machine does not have" in buttons[0].help
    buttons[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert resumed == [(run_id, "cpu")]
    assert [t.value for t in at.toast] == ["Resuming on CPU from its last saved epoch: this machine has no CUDA GPU"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine resumes it as it was
    resumed.clear()
    at = open_train()
    button = next(b for b in at.button if b.key and b.key.startswith("resume_"))
    assert button.label == "Resume"
    button.click().run()
    assert resumed == [(run_id, None)]


@pytest.mark.slow
def test_jobs_resume_can_move_a_cuda_run_to_the_cpu(tmp_path):
    import time
    import torch
    from core.training import jobs
    from core.store.folder import lock_held
    from core.store.runs import load_run
    from tests.helpers import DATA, train_tiny
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: there a 'cuda' run cannot resume as it is")
    root = tmp_path / "runs"
    run_id = train_tiny(root, arch="mlp", epochs=2, train_limit=2000)
    path = root / run_id
    for name, changes in (("config.json", {"device": "cuda"}), ("status.json", {"status": "running"})):
        (path / name).write_text(json.dumps({**json.loads((path / name).read_text()), **changes}))
    (path / "metrics.json").unlink()
    assert load_run(run_id, root).status == "interrupted"  # "running", but no process holds its lock
    jobs.resume(run_id, root, data_root=DATA, device="cpu")
    deadline = time.monotonic() + 120
    while lock_held(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    run = load_run(run_id, root)
    log = (path / "train.log").read_text() if (path / "train.log").exists() else ""
    assert run.status == "finished", (run.status, run.status_info.get("message"), log[-2000:])
    assert run.config["device"] == "cpu" and run.test_acc is not None
