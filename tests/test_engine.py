"""The engine's promises, each bug of the "core, made right" issue with the test that covers it:
a resume that finds every epoch done, the kept weights behind the selection figure, a Kaggle
CSV that holds MNIST test images, the knobs config.json must hold, which errors lose their
traceback, and liveness decided by the run's lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.training import jobs
from core.config import TrainConfig
from core.data.mnist import load_mnist, make_split
from core.store.folder import lock_held, run_dir
from core.store.runs import load_model, load_predictions, load_run
from core.training.parts import build_optimizer, lr_factor
from tests.helpers import REPO, cli_result, require_mnist, train_new, train_tiny, write_digits_csv


def cli(*args: str, root: Path, process: bool = False) -> subprocess.CompletedProcess:
    """The command line's main() in this process, or with `process` a real `python -m core`."""
    full = ["--checkpoints", str(root), "--data", str(require_mnist()), *args]
    if not process:
        return cli_result(*full)
    return subprocess.run([sys.executable, "-m", "core", *full], cwd=REPO, capture_output=True, text=True, timeout=300)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- bug 1: a resume that finds every epoch done finishes the run ------------------------------------

@pytest.mark.slow
def test_resume_after_a_death_in_the_final_evaluation_finishes_the_run(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000)
    before = load_run(run_id, tmp_path)
    predicted = load_predictions(run_id, tmp_path)["predicted"]
    status = run_dir(run_id, tmp_path) / "status.json"
    status.write_text(json.dumps({**before.status_info, "status": "running", "pid": dead_pid()}))
    (run_dir(run_id, tmp_path) / "metrics.json").unlink()
    assert load_run(run_id, tmp_path).status == "interrupted"

    proc = cli("train", "--resume", run_id, "--quiet", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    after = load_run(run_id, tmp_path)
    assert after.status == "finished" and "Traceback" not in proc.stderr
    assert after.history.equals(before.history)               # no epoch trained again
    assert after.test_acc == before.test_acc                  # the same kept weights, tested again
    assert np.array_equal(load_predictions(run_id, tmp_path)["predicted"], predicted)


# --- bug 2: the selection figure describes the kept weights --------------------------------------------

@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.slow
def test_kept_weights_reproduce_the_validation_and_test_figures(tmp_path, ema):
    run_id = train_tiny(tmp_path, "mlp", epochs=3, train_limit=2000, ema=ema)
    run = load_run(run_id, tmp_path)
    cfg = TrainConfig.from_dict(run.config)
    mnist = load_mnist(require_mnist())
    split = make_split(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                       val_size=cfg.val_size, seed=cfg.seed, train_limit=cfg.train_limit)
    model = load_model(run_id, tmp_path)                      # what model.safetensors holds
    # The oracle: count right answers of the saved weights directly.
    with torch.no_grad():
        val_right = (model(split.x_val).argmax(1) == split.y_val).sum().item()
        test_pred = model(split.x_test).argmax(1)
    assert run.val_acc == pytest.approx(val_right * 100 / len(split.y_val), abs=1e-4)
    assert run.metrics["val_accuracy"] == run.val_acc == run.history["val_acc"].iloc[-1]
    assert run.test_acc == pytest.approx((test_pred == split.y_test).sum().item() * 100 / len(split.y_test))
    assert np.array_equal(load_predictions(run_id, tmp_path)["predicted"], test_pred.numpy())
    assert run.metrics["kept_weights"] == "epoch 3" + (" (EMA)" if ema else "")


def test_the_best_run_is_chosen_by_the_kept_weights_figure(tmp_path):
    from core.store.tables import best_run_per_arch
    a = train_tiny(tmp_path, "mlp", epochs=1, train_limit=500, name="a")
    b = train_tiny(tmp_path, "mlp", epochs=2, train_limit=3000, name="b")
    runs = [load_run(a, tmp_path), load_run(b, tmp_path)]
    chosen = best_run_per_arch(runs)
    assert [r.run_id for r in chosen] == [max(runs, key=lambda r: r.history["val_acc"].iloc[-1]).run_id]


# --- bug 3: a training CSV never holds the test set ------------------------------------------------

@pytest.mark.slow
def test_csv_rows_identical_to_mnist_test_images_are_left_out(tmp_path):
    mnist = load_mnist(require_mnist())
    train_part = mnist.train_images[:300].numpy(), mnist.train_labels[:300].numpy()
    test_part = mnist.test_images[:200].numpy(), mnist.test_labels[:200].numpy()
    csv = tmp_path / "train.csv"
    order = np.random.default_rng(0).permutation(500)         # leaked rows mixed in, as in Kaggle's file
    write_digits_csv(csv, np.concatenate([train_part[0], test_part[0]])[order],
                     np.concatenate([train_part[1], test_part[1]])[order])
    proc = cli("train", "--arch", "mlp", "--csv", str(csv), "--epochs", "1", "--val-size", "50",
               "--device", "cpu", "--quiet", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left out 200 training images identical to MNIST test images" in proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    dataset = json.loads((run_dir(run_id, tmp_path) / "dataset.json").read_text())
    assert dataset["rows"] == 500 and dataset["test_duplicates_left_out"] == 200
    assert dataset["train"] + dataset["validation"] == 300


@pytest.mark.slow
def test_a_csv_made_only_of_test_images_is_refused(tmp_path):
    mnist = load_mnist(require_mnist())
    csv = tmp_path / "leak.csv"
    write_digits_csv(csv, mnist.test_images[:50].numpy(), mnist.test_labels[:50].numpy())
    proc = cli("train", "--arch", "mlp", "--csv", str(csv), "--epochs", "1", "--device", "cpu", root=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "every image" in proc.stderr and "MNIST's test images" in proc.stderr


# --- bug 4: every knob that changes training is in config.json -------------------------------------

def test_seed_002_uses_plain_momentum_and_the_others_keep_nesterov():
    model = torch.nn.Linear(2, 2)
    assert build_optimizer(model, TrainConfig(arch="cnn16k")).param_groups[0]["nesterov"] is False
    assert build_optimizer(model, TrainConfig(arch="labnet")).param_groups[0]["nesterov"] is True
    assert build_optimizer(model, TrainConfig(arch="cnn16k", nesterov=True)).param_groups[0]["nesterov"] is True


def test_a_format_1_config_resumes_with_the_knobs_it_used_silently():
    saved = {**TrainConfig(arch="cnn16k").to_dict(), "format": 1}
    for knob in ("nesterov", "aug_degrees"):
        del saved[knob]
    old = TrainConfig.from_dict(saved)
    assert old.nesterov is True and old.aug_degrees == 7.0   # what format 1's loop did


def test_config_json_holds_every_field_and_rebuilds_the_same_config(tmp_path):
    from dataclasses import fields
    cfg = TrainConfig(arch="labnet", ema_decay=0.99, warmup=0.3, aug_degrees=5.0, bf16=False)
    writer_id, _ = train_new(cfg.replace(arch="mlp", epochs=1, train_limit=200), tmp_path)
    saved = load_run(writer_id, tmp_path).config
    assert {f.name for f in fields(TrainConfig)} <= set(saved)
    assert TrainConfig.from_dict(saved) == cfg.replace(arch="mlp", epochs=1, train_limit=200)


@pytest.mark.slow
def test_rotation_by_zero_degrees_trains_exactly_like_no_augmentation(tmp_path):
    # An oracle for the augmentation knob: a 0-degree rotation is the identity.
    plain = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000, augment="none")
    zero = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000, augment="rotate", aug_degrees=0.0)
    turned = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000, augment="rotate", aug_degrees=30.0)
    h = {k: load_run(k, tmp_path).history for k in (plain, zero, turned)}
    assert np.allclose(h[plain]["train_loss"], h[zero]["train_loss"], atol=1e-5)
    assert not np.allclose(h[plain]["train_loss"], h[turned]["train_loss"], atol=1e-3)


def test_onecycle_constants_come_from_the_config():
    cfg = TrainConfig(arch="speedrun", epochs=2, warmup=0.2, start_factor=0.1, final_factor=0.01)
    factor, total = lr_factor(cfg, 50), 100
    assert factor(0) == pytest.approx(0.1)                     # starts at start_factor
    assert factor(20) == pytest.approx(1.0)                    # peaks after 20% of the steps
    assert factor(10) == pytest.approx(0.55)                   # linear warm-up: half-way
    assert factor(total) == pytest.approx(0.01)                # ends at final_factor
    assert all(factor(s) >= factor(s + 1) for s in range(20, total))


@pytest.mark.parametrize("bad", [{"ema_decay": 1.0}, {"warmup": 1.5}, {"aug_degrees": -1}, {"aug_zoom": 1.0},
                                 {"nesterov": "yes"}, {"bf16": 1}, {"start_factor": 0}])
def test_every_new_knob_is_validated(bad):
    from core.config import ConfigError
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(arch="mlp", **bad)


# --- bug 5: only the project's own errors lose their traceback -----------------------------------------

@pytest.mark.slow
def test_a_bad_input_is_one_line_with_exit_2(tmp_path):
    proc = cli("train", "--arch", "mlp", "--ema-decay", "2", root=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: ema_decay must be in (0, 1), got 2.0"


@pytest.mark.slow
def test_debug_prints_the_traceback_of_a_known_error(tmp_path):
    proc = cli("--debug", "train", "--arch", "mlp", "--ema-decay", "2", root=tmp_path, process=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, capsys):
    from core import cli as cli_mod

    def broken(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setitem(cli_mod.COMMANDS, "models", broken)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):  # not swallowed into one line
        cli_mod.main(["models"])


@pytest.mark.slow
def test_cuda_asked_for_without_a_gpu_leaves_no_run_folder(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = cli("train", "--arch", "mlp", "--device", "cuda", root=tmp_path)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]


# --- bug 6: liveness is the run's lock, and Cancel reaches only its holder ------------------------------

def test_cancel_never_signals_a_process_that_does_not_hold_the_run(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=500)
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        folder = run_dir(run_id, tmp_path)
        status = json.loads((folder / "status.json").read_text())
        (folder / "status.json").write_text(json.dumps({**status, "status": "running", "pid": sleeper.pid}))
        (folder / "lock").write_text(f"{sleeper.pid}\n")      # even its pid in the lock file
        assert load_run(run_id, tmp_path).status == "interrupted"
        assert jobs.cancel(run_id, tmp_path) is False
        time.sleep(0.2)
        assert sleeper.poll() is None                          # the sleep lives
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_launched_job_owns_its_run_from_creation_and_cancel_reaches_it(tmp_path):
    cfg = TrainConfig(arch="lenet", epochs=30, train_limit=20000, device="cpu", name="owned")
    run_id = jobs.launch(cfg, root=tmp_path, data_root=require_mnist())
    folder = run_dir(run_id, tmp_path)
    assert lock_held(folder) and load_run(run_id, tmp_path).status in ("queued", "running")
    deadline = time.monotonic() + 120
    while load_run(run_id, tmp_path).progress.get("step", 0) == 0:
        assert time.monotonic() < deadline, (folder / "train.log").read_text()
        time.sleep(0.1)
    owner = int((folder / "lock").read_text())
    assert owner != os.getpid() and load_run(run_id, tmp_path).status_info["pid"] == owner
    assert jobs.cancel(run_id, tmp_path) is True
    while lock_held(folder):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run = load_run(run_id, tmp_path)
    assert run.status == "cancelled" and run.has_weights


@pytest.mark.slow
def test_two_resumes_of_one_run_started_together_train_it_once(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=2, train_limit=2000)
    folder = run_dir(run_id, tmp_path)
    finished = load_run(run_id, tmp_path)
    (folder / "status.json").write_text(json.dumps({**finished.status_info, "status": "running"}))
    (folder / "metrics.json").unlink()                        # died in the final evaluation
    args = [sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "--data", str(require_mnist()),
            "train", "--resume", run_id, "--quiet"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    codes = [code for code, _ in results]
    assert codes[0] == 0 and codes[1] != 0, results
    assert "owned by another process" in results[1][1] or "already finished" in results[1][1]
    assert "Traceback" not in results[1][1]
    run = load_run(run_id, tmp_path)
    assert run.status == "finished" and run.test_acc == finished.test_acc


@pytest.mark.slow
def test_a_process_owning_a_run_refuses_a_second_owner(tmp_path):
    from core.store.folder import Busy, RunLock
    from core.training.loop import prepare_run
    writer = prepare_run(TrainConfig(arch="mlp"), root=tmp_path)
    try:
        with pytest.raises(Busy, match="owned by another process"):
            RunLock.claim(writer.path)
        assert load_run(writer.run_id, tmp_path).status == "queued"
    finally:
        writer.release()
    assert load_run(writer.run_id, tmp_path).status == "interrupted"   # its owner let go without training it


def test_run_files_honour_the_umask(tmp_path):
    # A shared checkpoints folder: with umask 022 every run file is readable by the group and others.
    old = os.umask(0o022)
    try:
        run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=300)
    finally:
        os.umask(old)
    for name in ("config.json", "status.json", "history.csv", "metrics.json", "model.safetensors",
                 "predictions.safetensors", "train_state.pt", "dataset.json"):
        assert (run_dir(run_id, tmp_path) / name).stat().st_mode & 0o777 == 0o644, name
    os.umask(0o077)
    try:
        private = train_tiny(tmp_path, "mlp", epochs=1, train_limit=300)
    finally:
        os.umask(old)
    assert (run_dir(private, tmp_path) / "config.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_a_disk_too_full_for_the_weights_fails_the_run_and_a_later_resume_finishes_it(tmp_path):
    # 200 KiB per file: the per-epoch state (~210 KiB for mlp) cannot be written, as on a full disk.
    import resource

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400 * 512, 400 * 512))
    full = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "--data", str(require_mnist()),
                           "train", "--arch", "mlp", "--train-limit", "500", "--epochs", "3", "--device", "cpu",
                           "--quiet", "--name", "full"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_disk)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    assert full.stderr.strip().splitlines()[-1].startswith("error: could not write in")
    (run_id,) = [p.name for p in tmp_path.iterdir() if p.name.endswith("-full")]
    assert load_run(run_id, tmp_path).status == "failed"

    resumed = cli("train", "--resume", run_id, "--quiet", root=tmp_path)     # room again
    assert resumed.returncode == 0, resumed.stderr
    run = load_run(run_id, tmp_path)
    assert run.status == "finished" and run.history["epoch"].tolist() == [1, 2, 3] and run.has_weights


@pytest.mark.slow
def test_a_damaged_train_state_is_refused_and_the_run_is_left_as_it_was(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=3, train_limit=500)
    folder = run_dir(run_id, tmp_path)
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "status": "running"}))  # died mid-run
    (folder / "metrics.json").unlink()
    os.truncate(folder / "train_state.pt", 5000)
    history = (folder / "history.csv").read_bytes()
    proc = cli("train", "--resume", run_id, "--quiet", root=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: refused to load train_state.pt of run '{run_id}': it is damaged")
    assert "delete" in proc.stderr                                    # a fresh start only when asked
    assert (folder / "history.csv").read_bytes() == history           # nothing retrained, nothing lost
    run = load_run(run_id, tmp_path)
    assert run.status == "interrupted" and run.status_info["status"] == "running"   # untouched

    (folder / "train_state.pt").unlink()                               # the user asks for a fresh start
    again = cli("train", "--resume", run_id, "--quiet", root=tmp_path)
    assert again.returncode == 0, again.stderr
    assert load_run(run_id, tmp_path).history["epoch"].tolist() == [1, 2, 3]


@pytest.mark.slow
def test_resuming_a_run_whose_config_names_no_architecture_is_one_line(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=2, train_limit=300)
    folder = run_dir(run_id, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "arch": ["mlp"]}))
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "status": "running"}))
    proc = cli("train", "--resume", run_id, "--quiet", root=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "architecture" in proc.stderr
