"""The default `bench`: the seed-style pipeline, a plain loop and MNIST Lab's trainer, one epoch
each in `--rounds` alternating rounds, then the sketch path's latency (core.bench.costs)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from core.bench.common import check_options, device_name, scratch_run, spread, sync
from core.bench.costs import sketch_latency
from core.config import TrainConfig
from core.data.images import MNIST_MEAN, MNIST_STD, normalize_uint8
from core.data.mnist import TRAIN_SIZE, data_dir, load_mnist, split_indices
from core.models import channels_last, create_model, trains_channels_last
from core.training.parts import resolve_device


def reference_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
                     train_idx: torch.Tensor, data_root) -> list[float]:
    """Seconds per epoch of the seed-style pipeline (torchvision dataset + DataLoader)."""
    from torchvision import datasets, transforms  # here: about a second to import, for this pipeline only
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    dataset = datasets.MNIST(str(data_dir(data_root)), train=True, download=False, transform=transform)
    loader = DataLoader(Subset(dataset, train_idx.tolist()), batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    model = create_model(arch).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    times = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def plain_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
                 train_idx: torch.Tensor, data_root) -> list[float]:
    """Seconds per epoch of the plainest loop over in-memory tensors: the same model (in the
    memory layout the trainer picks for it), Adam, shuffled index slices, nothing else."""
    mnist = load_mnist(data_root)
    x, y = normalize_uint8(mnist.train_images[train_idx]).to(device), mnist.train_labels[train_idx].long().to(device)
    torch.manual_seed(0)
    model = create_model(arch).to(device)
    if trains_channels_last(arch, model, device, None):
        model, x = channels_last(model, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    times = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def lab_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
               train_limit: int | None, data_root) -> list[dict[str, float]]:
    """Training and validation seconds per epoch of MNIST Lab's own trainer (history.csv)."""
    cfg = TrainConfig(arch=arch, batch_size=batch_size, lr=lr, optimizer="adam", epochs=epochs,
                      schedule="none", momentum=0.0, weight_decay=0.0, augment="none",
                      label_smoothing=0.0, ema=False, device=device.type, train_limit=train_limit)
    return scratch_run(cfg, data_root).history[["train_seconds", "val_seconds"]].to_dict("records")


def run_bench(arch: str = "lenet", batch_size: int = 64, lr: float = 1e-3, epochs: int = 1,
              device: str = "auto", train_limit: int | None = None, sketch_repeats: int = 50,
              rounds: int = 5, data_root=None, root=None, report: Callable[[str], None] = print) -> dict:
    """Seconds per epoch of the seed-style pipeline, the plain loop and MNIST Lab's trainer,
    in `rounds` alternating rounds, and the sketch path's latency per architecture (timed with
    the first finished run of each architecture in the checkpoints folder `root`).
    The ratio is seed-style / MNIST Lab training seconds, per round; its median is reported."""
    check_options(batch_size=batch_size, epochs=epochs, sketch_repeats=sketch_repeats,
                  train_limit=train_limit, rounds=rounds)
    dev = resolve_device(device)
    train_idx, _ = split_indices(TRAIN_SIZE, TrainConfig.val_size, seed=0)  # the trainer's own split (seed 0)
    if train_limit:
        train_idx = train_idx[:train_limit]
    report(f"bench: {arch}, batch {batch_size}, Adam lr {lr:g}, {epochs} epoch(s) of {len(train_idx):,} "
           f"images on {dev} (torch {torch.__version__}, {torch.get_num_threads()} threads), {rounds} round(s)")
    ref, plain, lab_train, lab_val, ratios = [], [], [], [], []
    for r in range(1, rounds + 1):
        ref.append(statistics.mean(reference_epochs(arch, batch_size, lr, epochs, dev, train_idx, data_root)))
        plain.append(statistics.mean(plain_epochs(arch, batch_size, lr, epochs, dev, train_idx, data_root)))
        lab = lab_epochs(arch, batch_size, lr, epochs, dev, train_limit, data_root)
        lab_train.append(statistics.mean(e["train_seconds"] for e in lab))
        lab_val.append(statistics.mean(e["val_seconds"] for e in lab))
        ratios.append(ref[-1] / lab_train[-1])
        report(f"  round {r}: seed-style {ref[-1]:.2f} s, plain loop {plain[-1]:.2f} s, MNIST Lab "
               f"{lab_train[-1]:.2f} s training + {lab_val[-1]:.2f} s validation; ratio {ratios[-1]:.2f}x")
    ratio = statistics.median(ratios)
    report(f"  seed-style pipeline (torchvision MNIST + DataLoader): {spread(ref)} s/epoch")
    report(f"  plain loop over in-memory tensors: {spread(plain)} s/epoch")
    report(f"  MNIST Lab trainer: {spread(lab_train)} s/epoch training, {spread(lab_val)} s validation")
    report(f"  ratio: {ratio:.2f}x (median of {rounds}; min {min(ratios):.2f}x, max {max(ratios):.2f}x); "
           f"with validation {statistics.median(ref) / statistics.median([a + b for a, b in zip(lab_train, lab_val)]):.2f}x")
    sketch = sketch_latency(sketch_repeats, root)
    report("sketch path (preprocess a 280x280 drawing + one model), CPU:")
    for name, t in sketch.items():
        report(f"  {name:<8} p50 {t['p50_ms']:6.2f} ms   p95 {t['p95_ms']:6.2f} ms   ({t['weights']})")
    return {"arch": arch, "batch_size": batch_size, "lr": lr, "epochs": epochs, "images": len(train_idx),
            "rounds": rounds, "device": device_name(dev), "torch": torch.__version__,
            "reference_s_per_epoch": ref, "plain_s_per_epoch": plain, "lab_s_per_epoch": lab_train,
            "lab_val_s_per_epoch": lab_val, "ratios": ratios, "ratio": ratio, "sketch_ms": sketch}
