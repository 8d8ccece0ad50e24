"""The training loop: data as device tensors, batches as index slices, one callback.

`prepare_run(config)` creates the run folder (status 'queued'); `train(run_id)` waits for
the device's slot, trains, evaluates on the test set once at the end, and saves everything.
`train(run_id, resume=True)` continues an interrupted or cancelled run from its last
finished epoch. The loop never prints: it reports `Event`s to one callback and checks a
stop flag at every step.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core import data as data_mod
from core.config import TrainConfig
from core.jobs import Cancelled, device_slot
from core.metrics import confusion_matrix, per_class
from core.models import combine_members, count_parameters, create_model
from core.runs import RunError, RunWriter, load_run, load_train_state, now_iso, describe_os_error

REPORTS_PER_EPOCH = 20  # progress events per epoch (each one syncs with the device once)
EVAL_BATCH = 1000


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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is available here")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """LR multiplier by global step. Every schedule is a plain function of the step, so the
    scheduler's state is one integer and resumes exactly."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        return lambda s: cfg.gamma ** (s // (cfg.step_size * steps_per_epoch))
    if cfg.schedule == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    if cfg.schedule == "onecycle":  # linear warm-up over 25% of steps from lr/25, cosine to ~0
        warm = max(1, int(0.25 * total))

        def onecycle(s: int) -> float:
            if s < warm:
                return 0.04 + 0.96 * s / warm
            return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(s - warm, total - warm) / max(1, total - warm)))
        return onecycle
    return lambda s: 1.0


class EMA:
    """Exponential moving average of a model's weights and buffers, with warm-up: the decay
    is min(decay, (1 + n) / (10 + n)) after n updates, so early averages are not dominated
    by the random initial weights (a fixed 0.999 keeps 80% of them after 215 steps)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        import copy
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine, theirs = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k] for k in floats], 1 - d)
        for k, v in mine.items():
            if not v.is_floating_point():  # e.g. BatchNorm's num_batches_tracked
                v.copy_(theirs[k])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def training_loss(out: torch.Tensor, y: torch.Tensor,
                  label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, loss to report, logits to score) for one batch.

    A model's (N, 10) logits give plain cross-entropy. An ensemble's (N, K, 10) member logits
    give the sum of the members' own losses, so each member gets the gradient it would get
    alone; the reported loss is the members' mean and the scored logits are the ensemble's.
    """
    if out.dim() == 2:
        loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
        return loss, loss.detach(), out
    k = out.shape[1]
    mean = F.cross_entropy(out.flatten(0, 1), y.repeat_interleave(k), label_smoothing=label_smoothing)
    return mean * k, mean.detach(), combine_members(out.detach())


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "rotate":    # seed 002's RandomRotation(+-7 degrees)
        return data_mod.random_affine(x, generator, degrees=7)
    if kind == "affine":    # small rotations, shifts of up to 2 px and +-10% zoom
        return data_mod.random_affine(x, generator, degrees=10, translate=2 / 28, scale=0.1)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH,
             amp: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy in %, probabilities (N, 10) on the CPU), in order, no batch dropped."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    probs = []
    for xb, yb in data_mod.batches(x, y, batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        probs.append(logits.softmax(1))
    p = torch.cat(probs) if probs else torch.zeros(0, 10, device=x.device)
    # From the integer count: a float32 mean turns 9,970 of 10,000 into 99.6999979, below 99.7.
    acc = (p.argmax(1) == y).sum().item() * 100 / len(y) if len(y) else math.nan
    return loss_sum.item() / max(1, len(y)), acc, p.cpu()


def load_split(cfg: TrainConfig, device: torch.device, data_root=None) -> data_mod.Split:
    mnist = data_mod.load_mnist(data_root)
    if cfg.csv:
        from core.csvdata import read_digits_csv
        table = read_digits_csv(cfg.csv)
        if not table.has_labels:
            raise ValueError(f"{cfg.csv} has no 'label' column: it can be predicted, not trained on")
        images, labels = table.images, table.labels
    else:
        images, labels = mnist.train_images, mnist.train_labels
    return data_mod.make_split(images, labels, mnist.test_images, mnist.test_labels,
                               val_size=cfg.val_size, seed=cfg.seed,
                               train_limit=cfg.train_limit, device=device)


def prepare_run(cfg: TrainConfig, run_id: str | None = None, root=None, detached: bool = False) -> str:
    """Create the run folder with its config and status 'queued'; return its id.
    `detached`: another process will train it (see RunWriter.create)."""
    kwargs = {"owner_pid": None} if detached else {}
    return RunWriter.create(cfg.to_dict(), run_id, root, **kwargs).run_id


def train(run_id: str, *, root=None, data_root=None, callback: Callback | None = None,
          stop: threading.Event | None = None, resume: bool = False) -> str:
    """Train the prepared run `run_id` to its end; return the final status."""
    run = load_run(run_id, root)
    if not run.config:
        raise RunError(f"run {run_id!r} has no readable config.json")
    cfg = TrainConfig.from_dict(run.config)
    writer = RunWriter(run_id, root)
    if resume and run.status == "finished":
        raise RunError(f"run {run_id!r} is already finished")
    if run.status in ("running", "queued") and resume:
        raise RunError(f"run {run_id!r} is {run.status} in another process")
    if not resume and run.status_info.get("status") != "queued":
        if run.status_info.get("status") == "cancelled":  # cancelled before its job started
            return "cancelled"
        raise RunError(f"run {run_id!r} is {run.status}: use --resume to continue it")
    device = resolve_device(cfg.device)
    writer.set_status("queued", "waiting for the " + device.type.upper() + " slot")
    try:
        slot = device_slot(device.type, root)
        slot.__enter__()
    except Cancelled:
        writer.set_status("cancelled", "cancelled while queued")
        return "cancelled"
    try:
        writer.set_status("running")
        try:
            _fit(cfg, writer, device, data_root, callback or (lambda e: None),
                 stop or threading.Event(), resume)
        except Cancelled:
            writer.set_status("cancelled", "stopped by the user")
            return "cancelled"
        except OSError as exc:
            writer_message = describe_os_error(exc, writer.path)
            try:
                writer.set_status("failed", writer_message)
            except OSError:
                pass
            raise RunError(writer_message) from None
        except BaseException as exc:
            writer.set_status("failed", f"{type(exc).__name__}: {exc}"[:500])
            raise
    finally:
        slot.__exit__(None, None, None)
    writer.set_status("finished")
    return "finished"


def _rng_state(shuffle: torch.Generator, aug: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "aug": aug.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _fit(cfg: TrainConfig, writer: RunWriter, device: torch.device, data_root,
         callback: Callback, stop: threading.Event, resume: bool) -> None:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 2)
    split = load_split(cfg, device, data_root)
    cuda = device.type == "cuda"
    model = create_model(cfg.arch).to(device)
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if cuda and convolutional:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    steps = math.ceil(len(split.x_train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
    ema = EMA(model) if cfg.ema else None
    train_forward = getattr(model, "member_logits", model)  # an ensemble trains member by member
    step_fn = torch.compile(train_forward) if cfg.compile else train_forward

    history: list[dict] = []
    start_epoch = 1
    if resume:
        try:
            state = load_train_state(writer.run_id, writer.path.parent)
        except RunError:
            state = None  # killed before its first epoch ended: start again from scratch
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"]["torch"])
            shuffle_gen.set_state(state["rng"]["shuffle"])
            aug_gen.set_state(state["rng"]["aug"])
            if cuda and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"])
            history = [dict(row) for row in state["history"]]
            start_epoch = int(state["epoch"]) + 1
    writer.write_history(history)
    parameters = count_parameters(model)
    callback(Event("start", writer.run_id, start_epoch, cfg.epochs, 0, steps,
                   message=f"{cfg.arch} ({parameters:,} parameters) on {device}"))
    report_every = max(1, steps // REPORTS_PER_EPOCH)

    for epoch in range(start_epoch, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step, (xb, yb) in enumerate(data_mod.batches(split.x_train, split.y_train,
                                                         cfg.batch_size, shuffle_gen), start=1):
            if stop.is_set():
                writer.save_weights((ema.module if ema else model).state_dict(), cfg.arch)
                raise Cancelled()
            xb = augment(xb, cfg.augment, aug_gen)
            if cuda and convolutional:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss, reported, logits = training_loss(step_fn(xb).float(), yb, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            loss_sum += reported * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            if step % report_every == 0 or step == steps:
                train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen * 100
                elapsed = time.perf_counter() - started
                writer.write_progress(epoch=epoch, epochs=cfg.epochs, step=step, steps=steps,
                                      train_loss=train_loss, train_acc=train_acc,
                                      epoch_seconds=time.perf_counter() - epoch_start)
                callback(Event("step", writer.run_id, epoch, cfg.epochs, step, steps,
                               train_loss, train_acc, lr=scheduler.get_last_lr()[0], elapsed=elapsed))

        eval_model = ema.module if ema is not None else model
        val_loss, val_acc, _ = evaluate(eval_model, split.x_val, split.y_val, amp=cuda)
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 4),
                        "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 4),
                        "lr": optimizer.param_groups[0]["lr"],
                        "seconds": round(time.perf_counter() - epoch_start, 4)})
        writer.save_train_state({
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": history,
            "rng": _rng_state(shuffle_gen, aug_gen),
            **({"ema": ema.state_dict()} if ema is not None else {})})
        writer.write_history(history)  # after the state: a listed epoch can always be resumed
        callback(Event("epoch", writer.run_id, epoch, cfg.epochs, steps, steps, train_loss, train_acc,
                       val_loss, val_acc, history[-1]["lr"], time.perf_counter() - started))

    final = ema.module if ema is not None else model
    test_loss, test_acc, probs = evaluate(final, split.x_test, split.y_test, amp=cuda)
    labels = split.y_test.cpu()
    cm = confusion_matrix(labels.numpy(), probs.argmax(1).numpy())
    writer.save_weights({k: v.contiguous() for k, v in final.state_dict().items()}, cfg.arch)
    writer.save_predictions(labels, probs)
    writer.write_metrics({
        "test_accuracy": test_acc, "test_loss": test_loss, **per_class(cm),
        "confusion_matrix": cm.tolist(), "parameters": count_parameters(final),
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} threads)",
        "torch": torch.__version__, "seconds": round(sum(r["seconds"] for r in history), 3),
        "epochs": len(history), "finished": now_iso()})
    callback(Event("end", writer.run_id, cfg.epochs, cfg.epochs, steps, steps, train_loss, train_acc,
                   history[-1]["val_loss"], history[-1]["val_acc"], history[-1]["lr"],
                   time.perf_counter() - started, message=f"test accuracy {test_acc:.2f}%"))
