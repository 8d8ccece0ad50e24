"""`bench --time-to`: MNIST Lab's recipe for an accuracy against the fastest other ways there.

Up to 99%, tuomaso/train_mnist_fast's final recipe, written plainly as published, races the
registered recipe aimed at the accuracy. Above it, where nothing published aims, the lab's own
alternatives race it: the next recipe aimed at the accuracy and the time-to-99% recipe trained
for longer. Seed by seed, interleaved."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from core.bench.common import check_options, device_name, scratch_run, spread, sync
from core.config import ConfigError, TrainConfig
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.models import get_spec, list_models
from core.store.folder import RunError
from core.store.reference import reference_ids
from core.store.runs import load_run
from core.training.parts import resolve_device


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


PUBLISHED_TARGET = 99.0  # the published recipe's aim (tuomaso/train_mnist_fast: 99% in under a second on a GPU)


def training_seconds(run) -> float | None:
    """A run's training seconds as the race counts them: its epochs' `train_seconds` from
    history.csv (validation passes not counted); None for a run without them."""
    if run.history is None or "train_seconds" not in run.history:
        return None
    return float(run.history["train_seconds"].sum())


def reference_seconds(root=None) -> dict[str, float]:
    """arch -> the training seconds of its reference run in the checkpoints folder `root`
    (an architecture without one is absent)."""
    found = {}
    for run_id in reference_ids(root):
        try:
            run = load_run(run_id, root)
        except RunError:
            continue
        if (seconds := training_seconds(run)) is not None:
            found[run.arch] = seconds
    return found


def recipe_for(target: float, besides: str | None = None, root=None) -> str:
    """MNIST Lab's recipe for `target`% test accuracy: the cheapest one aimed there, i.e. the
    registered recipe with the lowest target at or above it, and of recipes with the same target
    the one whose reference run in `root` trained fastest; `besides`: another than that one."""
    seconds = reference_seconds(root)
    aimed = sorted((get_spec(a).target, seconds.get(a, math.inf), a)
                   for a in list_models() if get_spec(a).target >= target and a != besides)
    if not aimed:
        best = max(get_spec(a).target for a in list_models())
        raise ConfigError(f"--time-to {target:g}: no recipe aims that high (the highest target is {best:g}%)")
    return aimed[0][-1]


def lab_recipe(arch: str, seed: int, device: torch.device, data_root=None,
               train_limit: int | None = None, epochs: int | None = None,
               val_size: int = TrainConfig.val_size) -> tuple[float, float, int]:
    """(training seconds, test accuracy %, epochs trained) of MNIST Lab's recipe `arch` (for `epochs` where
    given), trained by the trainer itself in a scratch run folder, `val_size` images held out for
    its validation passes: training seconds from history.csv (validation passes not counted, as
    the published recipe has none), test accuracy from metrics.json."""
    cfg = TrainConfig(arch=arch, seed=seed, device=device.type, train_limit=train_limit, epochs=epochs,
                      val_size=val_size)
    run = scratch_run(cfg, data_root)
    return training_seconds(run), float(run.metrics["test_accuracy"]), len(run.history)


@dataclass(frozen=True)
class Contender:
    name: str                                      # as printed, and its key in the result
    train: Callable[[int], tuple[float, float, int]]  # seed -> (training seconds, test accuracy %, epochs)


def rivals(target: float, arch: str, dev: torch.device, data_root=None,
           train_limit: int | None = None, root=None, val_size: int = TrainConfig.val_size) -> list[Contender]:
    """What races MNIST Lab's `arch` to `target`: the published recipe, up to the accuracy it
    aims at (99%). Above it nothing published aims, and the lab's own fastest alternatives race:
    the next recipe aimed at the accuracy (the cheapest other one, e.g. resnet), and the time-to-99%
    recipe trained for as many epochs as `arch` (what `arch`'s changes buy, besides more epochs)."""
    if target <= PUBLISHED_TARGET:
        return [Contender("published", lambda seed: (*published_recipe(seed, dev, data_root, train_limit), 1))]
    found = []
    try:
        other = recipe_for(target, besides=arch, root=root)
        found.append(Contender(other, lambda seed: lab_recipe(other, seed, dev, data_root, train_limit, val_size=val_size)))
    except ConfigError:
        pass  # no other recipe aims that high
    fastest, epochs = recipe_for(PUBLISHED_TARGET, root=root), get_spec(arch).recipe.epochs
    if fastest not in (arch, *(c.name for c in found)) and epochs > get_spec(fastest).recipe.epochs:
        found.append(Contender(f"{fastest} ({epochs} epochs)",
                               lambda seed: lab_recipe(fastest, seed, dev, data_root, train_limit, epochs, val_size)))
    return found


def run_race(target: float = 99.0, seeds: int = 3, recipe: str | None = None, device: str = "auto",
             train_limit: int | None = None, data_root=None, root=None,
             report: Callable[[str], None] = print, val_size: int = TrainConfig.val_size) -> dict:
    """MNIST Lab's recipe for `target` against its rivals (see `rivals`), `seeds` seeds each
    (0, 1, ...), interleaved: seed 0 of each, then seed 1 of each, ... The lab's runs hold out
    `val_size` validation images (the trainer's default: 5,000) and score them after each epoch,
    untimed: fewer make a quick race (`train_limit`) quicker."""
    check_options(seeds=seeds, train_limit=train_limit, val_size=val_size)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 < target < 100):
        raise ConfigError(f"--time-to must be a test accuracy in (0, 100) %, got {target!r}")
    arch = recipe or recipe_for(target, root=root)
    TrainConfig(arch=arch, val_size=val_size)  # an unknown recipe or a bad --val-size is refused before any timing
    dev = resolve_device(device)
    lab = Contender(f"MNIST Lab {arch}", lambda seed: lab_recipe(arch, seed, dev, data_root, train_limit,
                                                                           val_size=val_size))
    field = rivals(target, arch, dev, data_root, train_limit, root, val_size) + [lab]
    report(f"time to {target:g}%: MNIST Lab's {arch} against {', '.join(c.name for c in field[:-1]) or 'nothing'}, "
           f"{seeds} seed(s) each, interleaved, on {device_name(dev)} (torch {torch.__version__})")
    runs: dict[str, list[tuple[float, float, int]]] = {c.name: [] for c in field}
    for seed in range(seeds):
        for contender in field:
            runs[contender.name].append(contender.train(seed))
            seconds, accuracy, epochs = runs[contender.name][-1]
            report(f"  seed {seed}: {contender.name} {seconds:.2f} s, {accuracy:.2f}% ({epochs} epoch"
                   + ("s)" if epochs != 1 else ")"))
    result = {"target": target, "recipe": arch, "seeds": seeds, "device": device_name(dev), "torch": torch.__version__,
              "val_size": val_size, "rivals": [c.name for c in field[:-1]]}
    for contender in field:
        secs, accs, epochs = (list(column) for column in zip(*runs[contender.name]))
        key = "lab" if contender is lab else contender.name
        result[key] = {"seconds": secs, "test_accuracy": accs, "epochs": epochs, "median_seconds": statistics.median(secs),
                       "median_test_accuracy": statistics.median(accs)}
        verdict = "reached" if result[key]["median_test_accuracy"] >= target else "did NOT reach"
        report(f"  {contender.name}: median {spread(secs)} s training, median test accuracy "
               f"{result[key]['median_test_accuracy']:.2f}% ({verdict} {target:g}%)")
    result["ratios"] = {name: result[name]["median_seconds"] / result["lab"]["median_seconds"]
                        for name in result["rivals"]}
    for name, ratio in result["ratios"].items():
        report(f"  ratio ({name} / MNIST Lab {arch} training seconds): {ratio:.2f}x")
    if result["ratios"]:  # over the fastest rival that reached the target (if none did: the fastest rival)
        reached = [name for name in result["rivals"] if result[name]["median_test_accuracy"] >= target]
        closest = min(reached or result["rivals"], key=lambda name: result["ratios"][name])
        result["ratio"], result["ratio_over"] = result["ratios"][closest], closest
        report(f"  MNIST Lab {arch} against the fastest rival that reached {target:g}% ({closest}): {result['ratio']:.2f}x"
               if reached else f"  no rival reached {target:g}%; against the fastest ({closest}): {result['ratio']:.2f}x")
    return result
