"""The training loop: data as device tensors, batches as index slices, one callback.

`prepare_run(config)` creates the run folder (status 'queued'); `train(run_id)` waits for
the device's slot, trains, evaluates on the test set once at the end, and saves everything.
`train(run_id, resume=True)` continues an interrupted or cancelled run from its last
finished epoch. The loop never prints: it reports `Event`s to one callback and checks a
stop flag at every step.

Read it top-down like pytorch/examples' mnist: `train_epoch` is one pass over the training
set, `evaluate` scores a split, `finish_run` tests the kept weights and saves the run, and
`fit` ties them together. The weights a run keeps are those of its last epoch (the EMA's
with `ema`): the validation figure of that epoch, the test figures and model.safetensors
all describe the same weights.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from core.config import TrainConfig
from core.data import mnist as data_mod
from core.data.source import load_source, load_split
from core.errors import Cancelled
from core.metrics import confusion_matrix, evaluate, per_class
from core.models import count_parameters, create_model, in_layout, trains_channels_last
from core.notadigit import outlier_exposure
from core.store.folder import CONFIG, RunError, RunLock, describe_os_error, now_iso
from core.store.runs import load_run, load_train_state, train_state_exists
from core.store.writer import RunWriter
from core.training import adversarial
from core.training.jobs import device_slot, interruptible
from core.training.parts import EMA, augment, build_optimizer, lr_factor, resolve_device, training_loss

REPORTS_PER_EPOCH = 20  # progress events per epoch (each one syncs with the device once)


@dataclass(frozen=True)
class Event:
    kind: str                 # "start" | "step" | "epoch" | "end"
    run_id: str
    epoch: int                # 1-based epoch in progress (or just finished, for "epoch")
    epochs: int
    step: int = 0             # steps done in this epoch
    steps: int = 0            # steps per epoch
    train_loss: float = math.nan
    train_acc: float = math.nan
    val_loss: float = math.nan
    val_acc: float = math.nan
    lr: float = math.nan
    elapsed: float = 0.0      # seconds since this process started training
    message: str = ""


Callback = Callable[[Event], None]


# --- the state of a run in training ---------------------------------------------------------

@dataclass
class Trainee:
    """Everything that changes while a run trains, and what a resume restores."""
    model: nn.Module
    forward: Callable          # the training forward pass (an ensemble's member by member)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    shuffle: torch.Generator   # batch order
    aug: torch.Generator       # augmentation draws
    device: torch.device
    bf16: bool
    channels_last: bool
    # adversarial training: the kept weights of the epoch with the best held-out PGD check so far
    best: dict | None = None   # {"epoch": int, "check": float, "kept": state_dict}
    # outlier exposure: the normalised exposure images on the device (drawn again on a resume)
    exposure: torch.Tensor | None = None

    def autocast(self):
        """bf16 autocast when on; no context at all when off (entering a disabled autocast
        still costs a few microseconds a step)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    @property
    def kept(self) -> nn.Module:
        """The weights the run keeps, validates and tests: the EMA's, else the model's."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self, epoch: int, history: list[dict]) -> dict:
        rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(), "aug": self.aug.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": history, "rng": rng,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                **({"best": self.best} if self.best is not None else {})}

    def load_state_dict(self, state: dict) -> list[dict]:
        """Restore a saved epoch; return the history up to it."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.best = state.get("best")
        torch.set_rng_state(state["rng"]["torch"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.aug.set_state(state["rng"]["aug"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        return [dict(row) for row in state["history"]]


def build_trainee(cfg: TrainConfig, device: torch.device, steps_per_epoch: int) -> Trainee:
    model = create_model(cfg.arch).to(device)
    cuda = device.type == "cuda"
    channels_last = trains_channels_last(cfg.arch, model, device, cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Fused Adam/AdamW: 1-4% faster per step than the for-loop on the CPU for every Adam
    # recipe (`core bench --steps`); for SGD no implementation wins consistently: torch's default.
    optimizer = build_optimizer(model, cfg, **({"fused": True} if cfg.optimizer != "sgd" else {}))
    forward = getattr(model, "member_logits", model)  # an ensemble trains member by member
    return Trainee(
        model=model, forward=torch.compile(forward) if cfg.compile else forward, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch)),
        ema=EMA(model, cfg.ema_decay) if cfg.ema else None,
        shuffle=torch.Generator().manual_seed(cfg.seed + 1), aug=torch.Generator().manual_seed(cfg.seed + 2),
        device=device, bf16=cfg.bf16 if cfg.bf16 is not None else cuda, channels_last=channels_last)


# --- one epoch, one evaluation, the end of a run ------------------------------------------------

def train_epoch(t: Trainee, cfg: TrainConfig, split: data_mod.Split, report: Callable[[int, float, float], None],
                stop: threading.Event) -> tuple[float, float]:
    """One pass over the training set; return (mean loss, accuracy in %). Calls
    report(step, loss so far, accuracy so far) REPORTS_PER_EPOCH times; raises Cancelled
    when `stop` is set."""
    t.model.train()
    steps = math.ceil(len(split.x_train) / cfg.batch_size)
    report_every = max(1, steps // REPORTS_PER_EPOCH)
    loss_sum = torch.zeros((), device=t.device)
    correct = torch.zeros((), device=t.device, dtype=torch.long)
    seen = 0
    for step, (x, y) in enumerate(data_mod.batches(split.x_train, split.y_train, cfg.batch_size, t.shuffle), 1):
        if stop.is_set():
            raise Cancelled()
        x = augment(x, cfg, t.aug)
        x = in_layout(x, t.channels_last)
        if cfg.adv_eps:
            eps = adversarial.radius(cfg, t.scheduler.last_epoch, steps)
            with t.autocast():
                x = adversarial.perturb(lambda v: t.forward(v).float(), x, y, eps, cfg.adv_steps,
                                        cfg.adv_step * eps, t.aug,
                                        loss=lambda out, labels: training_loss(out, labels, 0.0)[0])
        extra = None
        if t.exposure is not None:  # the digits and as many exposure images, in one batch as in the paper
            extra = in_layout(outlier_exposure.draw(t.exposure, len(x), t.aug), t.channels_last)
            if cfg.adv_eps:  # and attacked too, towards a sure answer (ALOE, Chen et al. 2021)
                with t.autocast():
                    extra = outlier_exposure.attack(lambda v: t.forward(v).float(), extra, eps, cfg.adv_steps,
                                                    cfg.adv_step * eps, t.aug)
        with t.autocast():
            out = t.forward(x if extra is None else torch.cat([x, extra])).float()
            loss, reported, logits = training_loss(out[:len(x)], y, cfg.label_smoothing)
            if extra is not None:
                loss = loss + cfg.oe_weight * outlier_exposure.uniform_loss(out[len(x):])
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        t.scheduler.step()
        if t.ema is not None:
            t.ema.update(t.model)
        loss_sum += reported * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if step % report_every == 0 or step == steps:
            report(step, loss_sum.item() / seen, correct.item() / seen * 100)
    return loss_sum.item() / max(1, seen), correct.item() / max(1, seen) * 100


def finish_run(t: Trainee, split: data_mod.Split, history: list[dict], writer: RunWriter,
               cfg: TrainConfig, stopped: str = "") -> float:
    """Test the kept weights once, save them with the predictions and metrics; return the
    test accuracy. `stopped` says why training ended before its last epoch."""
    kept = t.kept
    test_loss, test_acc, probs = evaluate(kept, split.x_test, split.y_test, amp=t.bf16)
    labels = split.y_test.cpu()
    cm = confusion_matrix(labels.numpy(), probs.argmax(1).numpy())
    writer.save_weights({k: v.contiguous() for k, v in kept.state_dict().items()}, cfg.arch)
    writer.save_predictions(labels, probs)
    cuda, threads = t.device.type == "cuda", torch.get_num_threads()
    writer.write_metrics({
        "test_accuracy": test_acc, "test_loss": test_loss,
        "val_accuracy": history[-1]["val_acc"], "val_loss": history[-1]["val_loss"],
        "kept_weights": f"epoch {history[-1]['epoch']}" + (" (EMA)" if t.ema is not None else ""),
        **({"stopped_early": stopped} if stopped else {}),
        **({"robust_checks": [{"epoch": r["epoch"], "pgd_accuracy": r["val_robust_acc"]} for r in history
                              if "val_robust_acc" in r], "robust_check": robust_check_settings(cfg)}
           if cfg.adv_eps else {}),
        **per_class(cm), "confusion_matrix": cm.tolist(), "parameters": count_parameters(kept),
        "device": torch.cuda.get_device_name(t.device) if cuda else f"cpu ({threads} thread{'s' * (threads != 1)})",
        "bf16": t.bf16, "channels_last": t.channels_last,
        "torch": torch.__version__, "seconds": round(sum(r["seconds"] for r in history), 3),
        "epochs": len(history), "finished": now_iso()})
    return test_acc


def robust_check_settings(cfg: TrainConfig) -> dict:
    return {"attack": "pgd", "epsilon": cfg.adv_eps, "steps": adversarial.CHECK_STEPS, "restarts": 1,
            "images": f"the first {adversarial.CHECK_IMAGES:,} validation images",
            "collapse": f"a fall of more than {adversarial.COLLAPSE:g} points below the best epoch"}


def check_robustness(t: Trainee, cfg: TrainConfig, split: data_mod.Split, history: list[dict]) -> str:
    """Adversarial training's check after an epoch: PGD on held-out validation images, kept in the
    epoch's history row. At catastrophic overfitting, restore the best epoch's weights, cut the
    history back to it and return why training stops; else ''."""
    row = history[-1]
    row["val_robust_acc"] = round(adversarial.robust_check(t.kept, split.x_val, split.y_val, cfg.adv_eps,
                                                           seed=cfg.seed + row["epoch"]), 2)
    if t.best is None or row["val_robust_acc"] > t.best["check"]:
        t.best = {"epoch": row["epoch"], "check": row["val_robust_acc"],
                  "kept": {k: v.detach().clone() for k, v in t.kept.state_dict().items()}}
    if adversarial.collapsed([r["val_robust_acc"] for r in history]) is None:
        return ""
    t.kept.load_state_dict(t.best["kept"])
    del history[t.best["epoch"]:]
    return (f"catastrophic overfitting at epoch {row['epoch']}: PGD accuracy on held-out validation images fell "
            f"from {t.best['check']:.1f}% (epoch {t.best['epoch']}) to {row['val_robust_acc']:.1f}%; "
            f"kept epoch {t.best['epoch']}")


def check_trainable(cfg: TrainConfig, data_root=None) -> None:
    """Everything about `cfg` that can be checked before its run folder exists (MNIST there
    and intact, the CSV, the device), so bad input leaves no failed run behind; the CLI and
    the dashboard call it before creating runs. Raises a LabError that says what is wrong."""
    if not data_mod.is_available(data_root):
        raise data_mod.DataError(f"MNIST is missing or partial in {data_mod.raw_dir(data_root)}: "
                                 "run `python -m core fetch`")
    load_source(cfg, data_root)
    resolve_device(cfg.device)


def fit(cfg: TrainConfig, writer: RunWriter, device: torch.device, data_root,
        callback: Callback, stop: threading.Event, saved: dict | None) -> None:
    """Train the run from its first unfinished epoch (after the `saved` train state, if any)
    to the end, then finish it."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    with interruptible(stop):  # Cancel ends it here at once, not after the first step
        split, dataset = load_split(cfg, device, data_root)
    writer.write_dataset(dataset)
    steps = math.ceil(len(split.x_train) / cfg.batch_size)
    t = build_trainee(cfg, device, steps)
    if cfg.oe_weight:
        with interruptible(stop):  # drawing the exposure images takes some 15 s the first time
            t.exposure = outlier_exposure.exposure_images(split.x_train, data_root)
    history = t.load_state_dict(saved) if saved is not None else []
    writer.write_history(history)
    left_out = dataset["test_duplicates_left_out"]
    callback(Event("start", writer.run_id, len(history) + 1, cfg.epochs, 0, steps, message=(
        f"{cfg.arch} ({count_parameters(t.model):,} parameters) on {device}"
        + (f"; left out {left_out:,} training images identical to MNIST test images" if left_out else ""))))

    stopped = ""
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        epoch_start = time.perf_counter()

        def report(step: int, loss: float, acc: float) -> None:
            writer.write_progress(epoch=epoch, epochs=cfg.epochs, step=step, steps=steps, train_loss=loss,
                                  train_acc=acc, epoch_seconds=time.perf_counter() - epoch_start)
            callback(Event("step", writer.run_id, epoch, cfg.epochs, step, steps, loss, acc,
                           lr=t.scheduler.get_last_lr()[0], elapsed=time.perf_counter() - started))
        try:
            train_loss, train_acc = train_epoch(t, cfg, split, report, stop)
        except Cancelled:
            writer.save_weights(t.kept.state_dict(), cfg.arch)
            raise
        train_seconds = time.perf_counter() - epoch_start
        val_loss, val_acc, _ = evaluate(t.kept, split.x_val, split.y_val, amp=t.bf16)
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 4),
                        "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 4),
                        "lr": t.optimizer.param_groups[0]["lr"],
                        "train_seconds": round(train_seconds, 4)})
        stopped = check_robustness(t, cfg, split, history) if cfg.adv_eps else ""
        val_seconds = time.perf_counter() - epoch_start - train_seconds   # with adversarial training's check
        if stopped:  # the history ends at the kept epoch; the run finishes with it
            writer.write_history(history)
            callback(Event("epoch", writer.run_id, epoch, cfg.epochs, steps, steps, train_loss, train_acc,
                           val_loss, val_acc, history[-1]["lr"], time.perf_counter() - started, message=stopped))
            break
        history[-1].update(seconds=round(train_seconds + val_seconds, 4), val_seconds=round(val_seconds, 4))
        writer.save_train_state(t.state_dict(epoch, history))
        writer.write_history(history)  # after the state: a listed epoch can always be resumed
        try:
            callback(Event("epoch", writer.run_id, epoch, cfg.epochs, steps, steps, train_loss, train_acc,
                           val_loss, val_acc, history[-1]["lr"], time.perf_counter() - started))
        except Cancelled:  # a search pruned the run after this epoch (core.training.search): kept as it is
            writer.save_weights(t.kept.state_dict(), cfg.arch)
            raise

    test_acc = finish_run(t, split, history, writer, cfg, stopped)
    last = history[-1]
    callback(Event("end", writer.run_id, cfg.epochs, cfg.epochs, steps, steps, last["train_loss"],
                   last["train_acc"], last["val_loss"], last["val_acc"], last["lr"],
                   time.perf_counter() - started, message=f"test accuracy {test_acc:.2f}%"
                   + (f" ({stopped})" if stopped else "")))


# --- the run's life: claim, queue, train, record ------------------------------------------------

def prepare_run(cfg: TrainConfig, run_id: str | None = None, root=None) -> RunWriter:
    """Create the run folder with its config and status 'queued'. The returned writer holds
    the run's lock: train it here (`train(..., writer=...)`) or hand it to a job process
    (`core.training.jobs.launch_prepared`)."""
    return RunWriter.create(cfg.to_dict(), run_id, root)


def train(run_id: str, *, root=None, data_root=None, callback: Callback | None = None,
          stop: threading.Event | None = None, resume: bool = False,
          writer: RunWriter | None = None, lock_fd: int | None = None, device: str | None = None,
          queue: bool = True) -> str:
    """Train the prepared run `run_id` to its end; return the final status. The run is owned
    by this process throughout: `writer` already holds its lock, or `lock_fd` is the lock
    handed over by a launcher, or the lock is taken here (refused if another process has it).
    `device` (a resume on another machine) replaces the device in the run's config.
    `queue=False` skips the device's slot: a scheduler that shares out devices itself (a Ray
    cluster, core.training.raysweep) would otherwise have its trials wait for each other."""
    stop = stop or threading.Event()
    if writer is None:
        found = load_run(run_id, root)  # a clear error if there is no such run
        if found.config.get("kind") == "ensemble":  # core.analysis.ensemble: combined, never trained
            raise RunError(f"run {run_id!r} is an ensemble of finished runs: nothing in it is trained, so "
                           "there is nothing to resume" + ("" if found.status == "finished" else
                           "; it is debris of an ensemble whose writing was killed: delete it"))
        writer = RunWriter(run_id, root, RunLock.claim(found.path, lock_fd))
    try:
        run = load_run(run_id, root)  # read under the lock: nobody else changes it now
        if not run.config:
            raise RunError(f"run {run_id!r} has no readable {CONFIG}")
        state = run.status_info.get("status")
        if resume and state == "finished":
            raise RunError(f"run {run_id!r} is already finished")
        if not resume and state != "queued":
            if state == "cancelled":  # cancelled before its job started
                return "cancelled"
            if state == "finished":
                raise RunError(f"run {run_id!r} is already finished")
            raise RunError(f"run {run_id!r} is {run.status}: use --resume to continue it")
        cfg = TrainConfig.from_dict(run.config)
        if device is not None and device != cfg.device:
            resolve_device(device)  # refuse a missing GPU before changing the run
            cfg = cfg.replace(device=device)
            writer.write_config({**run.config, "device": device})
        device = resolve_device(cfg.device)
        # A damaged train state is refused before the run changes (its history stays as it is).
        saved = load_train_state(run_id, root) if resume and train_state_exists(writer.path) else None
        if stop.is_set():
            writer.cancel("cancelled before it started")
            return "cancelled"
        if queue:
            writer.queue("waiting for the " + device.type.upper() + " slot")
        try:
            with device_slot(device.type, root) if queue else contextlib.nullcontext():
                writer.start()
                fit(cfg, writer, device, data_root, callback or (lambda e: None), stop, saved)
        except Cancelled as exc:  # its message, when it has one, says who stopped it (a search's pruner)
            writer.cancel(str(exc) or "stopped by the user")
            return "cancelled"
        except OSError as exc:
            message = describe_os_error(exc, writer.path)
            try:
                writer.fail(message)
            except OSError:
                pass
            raise RunError(message) from None
        except BaseException as exc:
            writer.fail(f"{type(exc).__name__}: {exc}")
            raise
        writer.finish()
        return "finished"
    finally:
        writer.release()
