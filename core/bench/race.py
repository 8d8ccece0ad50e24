"""`bench --time-to`: the fastest published recipe to an accuracy against MNIST Lab's.

tuomaso/train_mnist_fast's final recipe, written plainly as published, races the registered
recipe aimed at the accuracy, seed by seed, interleaved."""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from core.bench.common import check_options, device_name, scratch_run, spread, sync
from core.config import ConfigError, TrainConfig
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.models import get_spec, list_models
from core.training.recipe import resolve_device


class PublishedNet(torch.nn.Module):
    """tuomaso/train_mnist_fast, 8_Final_00s76.ipynb, as published."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 24, 5, 1)
        self.conv2 = torch.nn.Conv2d(24, 32, 3, 1)
        self.fc1 = torch.nn.Linear(800, 256)
        self.fc2 = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def published_recipe(seed: int, device: torch.device, data_root=None,
                     train_limit: int | None = None) -> tuple[float, float]:
    """(training seconds, test accuracy %) of the published recipe: all 60,000 training images
    in memory, normalised and shuffled once (as its data_saver.py stores them), Adam lr 1e-2
    with betas (0.7, 0.9), OneCycleLR without momentum cycling, batch 256, one epoch, NLL of
    log-softmax; tested in batches of 2,000. Timed: the training loop only, as published."""
    mnist = load_mnist(data_root)
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(seed))[:train_limit]
    train_data = normalize_uint8(mnist.train_images[order]).to(device)
    train_labels = mnist.train_labels[order].long().to(device)
    test_data, test_labels = normalize_uint8(mnist.test_images).to(device), mnist.test_labels.long().to(device)
    torch.manual_seed(seed)
    batch_size, lr, epochs = 256, 1e-2, 1
    model = PublishedNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.7, 0.9))
    batches_per_epoch = (len(train_data) - 1) // batch_size + 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=batches_per_epoch * epochs,
                                                    cycle_momentum=False)
    sync(device)
    start = time.perf_counter()
    model.train()
    for i in range(batches_per_epoch * epochs):
        i = i % batches_per_epoch
        data = train_data[batch_size * i:batch_size * (i + 1)]
        target = train_labels[batch_size * i:batch_size * (i + 1)]
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        scheduler.step()
    sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_data), 2000):
            correct += (model(test_data[i:i + 2000]).argmax(1) == test_labels[i:i + 2000]).sum().item()
    return seconds, correct * 100 / len(test_data)


def recipe_for(target: float) -> str:
    """MNIST Lab's recipe for `target`% test accuracy: the registered recipe with the lowest
    target at or above it (the cheapest one aimed there)."""
    aimed = sorted((get_spec(a).target, a) for a in list_models() if get_spec(a).target >= target)
    if not aimed:
        best = max(get_spec(a).target for a in list_models())
        raise ConfigError(f"--time-to {target:g}: no recipe aims that high (the highest target is {best:g}%)")
    return aimed[0][1]


def lab_recipe(arch: str, seed: int, device: torch.device, data_root=None,
               train_limit: int | None = None) -> tuple[float, float]:
    """(training seconds, test accuracy %) of MNIST Lab's recipe `arch`, trained by the
    trainer itself in a scratch run folder: training seconds from history.csv (validation
    passes not counted, as the published recipe has none), test accuracy from metrics.json."""
    run = scratch_run(TrainConfig(arch=arch, seed=seed, device=device.type, train_limit=train_limit), data_root)
    return float(run.history["train_seconds"].sum()), float(run.metrics["test_accuracy"])


def run_race(target: float = 99.0, seeds: int = 3, recipe: str | None = None, device: str = "auto",
             train_limit: int | None = None, data_root=None,
             report: Callable[[str], None] = print) -> dict:
    """The published recipe and MNIST Lab's, `seeds` seeds each (0, 1, ...), interleaved."""
    check_options(seeds=seeds, train_limit=train_limit)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 < target < 100):
        raise ConfigError(f"--time-to must be a test accuracy in (0, 100) %, got {target!r}")
    arch = recipe or recipe_for(target)
    TrainConfig(arch=arch)  # an unknown recipe is refused before any timing
    dev = resolve_device(device)
    report(f"time to {target:g}%: tuomaso/train_mnist_fast (published) against MNIST Lab's {arch}, "
           f"{seeds} seed(s) each, interleaved, on {device_name(dev)} (torch {torch.__version__})")
    published, lab = [], []
    for seed in range(seeds):
        published.append(published_recipe(seed, dev, data_root, train_limit))
        report(f"  seed {seed}: published {published[-1][0]:.2f} s, {published[-1][1]:.2f}%")
        lab.append(lab_recipe(arch, seed, dev, data_root, train_limit))
        report(f"  seed {seed}: MNIST Lab {arch} {lab[-1][0]:.2f} s, {lab[-1][1]:.2f}%")
    result = {"target": target, "recipe": arch, "seeds": seeds, "device": device_name(dev), "torch": torch.__version__}
    for name, runs in (("published", published), ("lab", lab)):
        secs, accs = [s for s, _ in runs], [a for _, a in runs]
        result[name] = {"seconds": secs, "test_accuracy": accs, "median_seconds": statistics.median(secs),
                        "median_test_accuracy": statistics.median(accs)}
        reached = "reached" if result[name]["median_test_accuracy"] >= target else "did NOT reach"
        report(f"  {'published' if name == 'published' else 'MNIST Lab ' + arch}: median {spread(secs)} s "
               f"training, median test accuracy {result[name]['median_test_accuracy']:.2f}% ({reached} {target:g}%)")
    result["ratio"] = result["published"]["median_seconds"] / result["lab"]["median_seconds"]
    report(f"  ratio (published / MNIST Lab training seconds): {result['ratio']:.2f}x")
    return result
