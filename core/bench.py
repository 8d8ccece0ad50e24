"""`python -m core bench`: MNIST Lab's trainer side by side with the pipelines it replaces.

Three modes, each in one process, the contestants interleaved so that a machine's drift
falls on both:
  - default: the seed-style data pipeline against MNIST Lab's trainer, `--rounds` alternating
    rounds (median, min-max). All train the same architecture with the same optimizer,
    learning rate and batch size on the same 55,000 training images (one seeded split):
      seed-style: torchvision `MNIST` + `ToTensor` + `Normalize` + a shuffled `DataLoader`,
        written plainly as the seed projects do (num_workers=0, their default);
      plain loop: the same model in the plainest loop over in-memory tensors (the floor: what
        the trainer's bookkeeping costs is its distance from this);
      MNIST Lab: the trainer itself (`core.training.loop`); its training and validation seconds are
        read apart from history.csv.
    Then the sketch path: preprocess one 280x280 drawing and run one model of each registered
    architecture on it, timed per prediction, p50 and p95.
  - `--time-to 99.0`: tuomaso/train_mnist_fast's final recipe, the fastest published way to
    99% on MNIST, written plainly as published, against MNIST Lab's recipe for that accuracy
    (`speedrun` for 99.0), `--seeds` seeds each, interleaved: median training seconds, median
    test accuracy, and the ratio.
  - `--steps`: milliseconds per training step of every architecture on the CPU, per memory
    layout and optimizer implementation (what `cpu_channels_last` in the registry rests on).
"""
from __future__ import annotations

import math
import platform
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.config import ConfigError, TrainConfig
from core.data.mnist import data_dir, split_indices
from core.models import channels_last, create_model, list_models
from core.data.images import MNIST_MEAN, MNIST_STD, to_mnist
from core.training.loop import prepare_run, resolve_device, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
                     train_idx: torch.Tensor, data_root) -> list[float]:
    """Seconds per epoch of the seed-style pipeline (torchvision dataset + DataLoader)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms
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
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def plain_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
                 train_idx: torch.Tensor, data_root) -> list[float]:
    """Seconds per epoch of the plainest loop over in-memory tensors: the same model (in the
    memory layout the trainer picks for it), Adam, shuffled index slices, nothing else."""
    from core.data.mnist import load_mnist, normalize_uint8
    from core.models import get_spec
    mnist = load_mnist(data_root)
    x, y = normalize_uint8(mnist.train_images[train_idx]).to(device), mnist.train_labels[train_idx].long().to(device)
    torch.manual_seed(0)
    model = create_model(arch).to(device)
    fast_layout = get_spec(arch).cpu_channels_last or device.type == "cuda"
    if fast_layout:
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
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def scratch_run(cfg: TrainConfig, data_root=None):
    """Train `cfg` with MNIST Lab's own trainer in a scratch run folder, deleted afterwards;
    return the finished run as read (history, metrics: what the benchmarks time and score)."""
    from core.store.runs import load_run
    with tempfile.TemporaryDirectory() as root:
        writer = prepare_run(cfg, root=root)
        train(writer.run_id, root=root, data_root=data_root, writer=writer)
        return load_run(writer.run_id, root)


def lab_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
               train_limit: int | None, data_root) -> list[dict[str, float]]:
    """Training and validation seconds per epoch of MNIST Lab's own trainer (history.csv)."""
    cfg = TrainConfig(arch=arch, batch_size=batch_size, lr=lr, optimizer="adam", epochs=epochs,
                      schedule="none", momentum=0.0, weight_decay=0.0, augment="none",
                      label_smoothing=0.0, ema=False, device=device.type, train_limit=train_limit)
    return scratch_run(cfg, data_root).history[["train_seconds", "val_seconds"]].to_dict("records")


def sample_drawing(size: int = 280) -> np.ndarray:
    """An RGBA canvas image like the Sketch page's: a '7' in black strokes on transparency."""
    from PIL import Image, ImageDraw
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 280
    draw.line([(70 * s, 60 * s), (210 * s, 60 * s), (120 * s, 230 * s)], fill=(0, 0, 0, 255), width=int(18 * s))
    return np.asarray(image)


def latency_ms(call: Callable[[], object], repeats: int, warmup: int) -> dict[str, float]:
    """p50 and p95 milliseconds of `repeats` calls, after `warmup` untimed ones (the first
    calls warm up allocators and kernels)."""
    times = []
    for i in range(repeats + warmup):
        start = time.perf_counter()
        call()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95))}


def sketch_latency(repeats: int, root=None) -> dict[str, dict[str, float]]:
    """Milliseconds per (preprocess + one model's forward pass), p50/p95, per architecture."""
    from core.analysis.predict import Predictor
    from core.store.runs import list_runs
    best: dict[str, str] = {}
    for run in list_runs(root):
        if run.status == "finished" and run.has_weights and run.arch not in best:
            best[run.arch] = run.run_id
    drawing = sample_drawing()
    results = {}
    for arch in list_models():
        if arch in best:
            predictor, source = Predictor.from_run(best[arch], root), best[arch]
        else:
            predictor, source = Predictor("untrained", arch, create_model(arch).eval()), "untrained weights"
        results[arch] = {**latency_ms(lambda: predictor.probabilities(to_mnist(drawing)), repeats, warmup=3),
                         "weights": source}
    return results


def _check_options(**counts: int | None) -> None:
    """Each count (None: not given) must be a whole number >= 1; refused before any timing."""
    for name, value in counts.items():
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def run_bench(arch: str = "lenet", batch_size: int = 64, lr: float = 1e-3, epochs: int = 1,
              device: str = "auto", train_limit: int | None = None, sketch_repeats: int = 50,
              rounds: int = 5, data_root=None, root=None, report: Callable[[str], None] = print) -> dict:
    """Seconds per epoch of the seed-style pipeline, the plain loop and MNIST Lab's trainer,
    in `rounds` alternating rounds, and the sketch path's latency per architecture (timed with
    the first finished run of each architecture in the checkpoints folder `root`).
    The ratio is seed-style / MNIST Lab training seconds, per round; its median is reported."""
    _check_options(batch_size=batch_size, epochs=epochs, sketch_repeats=sketch_repeats,
                   train_limit=train_limit, rounds=rounds)
    dev = resolve_device(device)
    train_idx, _ = split_indices(60_000, 5_000, seed=0)  # the trainer's own split (seed 0)
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
    report(f"  seed-style pipeline (torchvision MNIST + DataLoader): {_spread(ref)} s/epoch")
    report(f"  plain loop over in-memory tensors: {_spread(plain)} s/epoch")
    report(f"  MNIST Lab trainer: {_spread(lab_train)} s/epoch training, {_spread(lab_val)} s validation")
    report(f"  ratio: {ratio:.2f}x (median of {rounds}; min {min(ratios):.2f}x, max {max(ratios):.2f}x); "
           f"with validation {statistics.median(ref) / statistics.median([a + b for a, b in zip(lab_train, lab_val)]):.2f}x")
    sketch = sketch_latency(sketch_repeats, root)
    report("sketch path (preprocess a 280x280 drawing + one model), CPU:")
    for name, t in sketch.items():
        report(f"  {name:<8} p50 {t['p50_ms']:6.2f} ms   p95 {t['p95_ms']:6.2f} ms   ({t['weights']})")
    return {"arch": arch, "batch_size": batch_size, "lr": lr, "epochs": epochs, "images": len(train_idx),
            "rounds": rounds, "device": _device_name(dev), "torch": torch.__version__,
            "reference_s_per_epoch": ref, "plain_s_per_epoch": plain, "lab_s_per_epoch": lab_train,
            "lab_val_s_per_epoch": lab_val, "ratios": ratios, "ratio": ratio, "sketch_ms": sketch}


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


# --- time to accuracy: the fastest published recipe against MNIST Lab's ---------------------

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
    from core.data.mnist import load_mnist, normalize_uint8
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
    _sync(device)
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
    _sync(device)
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
    from core.models import get_spec
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
    _check_options(seeds=seeds, train_limit=train_limit)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 < target < 100):
        raise ConfigError(f"--time-to must be a test accuracy in (0, 100) %, got {target!r}")
    arch = recipe or recipe_for(target)
    TrainConfig(arch=arch)  # an unknown recipe is refused before any timing
    dev = resolve_device(device)
    report(f"time to {target:g}%: tuomaso/train_mnist_fast (published) against MNIST Lab's {arch}, "
           f"{seeds} seed(s) each, interleaved, on {_device_name(dev)} (torch {torch.__version__})")
    published, lab = [], []
    for seed in range(seeds):
        published.append(published_recipe(seed, dev, data_root, train_limit))
        report(f"  seed {seed}: published {published[-1][0]:.2f} s, {published[-1][1]:.2f}%")
        lab.append(lab_recipe(arch, seed, dev, data_root, train_limit))
        report(f"  seed {seed}: MNIST Lab {arch} {lab[-1][0]:.2f} s, {lab[-1][1]:.2f}%")
    result = {"target": target, "recipe": arch, "seeds": seeds, "device": _device_name(dev), "torch": torch.__version__}
    for name, runs in (("published", published), ("lab", lab)):
        secs, accs = [s for s, _ in runs], [a for _, a in runs]
        result[name] = {"seconds": secs, "test_accuracy": accs, "median_seconds": statistics.median(secs),
                        "median_test_accuracy": statistics.median(accs)}
        reached = "reached" if result[name]["median_test_accuracy"] >= target else "did NOT reach"
        report(f"  {'published' if name == 'published' else 'MNIST Lab ' + arch}: median {_spread(secs)} s "
               f"training, median test accuracy {result[name]['median_test_accuracy']:.2f}% ({reached} {target:g}%)")
    result["ratio"] = result["published"]["median_seconds"] / result["lab"]["median_seconds"]
    report(f"  ratio (published / MNIST Lab training seconds): {result['ratio']:.2f}x")
    return result


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, impl: str) -> torch.optim.Optimizer:
    """The recipe's optimizer with one implementation: 'for-loop', 'foreach' or 'fused'."""
    from core.training.loop import build_optimizer
    flags = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    return build_optimizer(model, cfg, **flags)


def step_costs(steps: int = 20, rounds: int = 3, archs: list[str] | None = None, data_root=None,
               report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Milliseconds per training step on the CPU, per architecture at its recipe's batch size:
    the memory layout (contiguous or channels_last) and the optimizer implementation
    (for-loop, foreach, fused), each timed in `rounds` interleaved rounds of `steps` steps on
    real MNIST batches; the medians. This is the measurement behind each architecture's
    `cpu_channels_last` and the engine's choice of optimizer implementation."""
    from core.data.mnist import load_mnist
    from core.models import get_spec
    from core.data.mnist import normalize_uint8
    mnist = load_mnist(data_root)
    results: dict[str, dict[str, float]] = {}
    for arch in archs or list_models():
        cfg = TrainConfig(arch=arch, device="cpu")
        x_all = normalize_uint8(mnist.train_images[: cfg.batch_size * steps])
        y_all = mnist.train_labels[: cfg.batch_size * steps].long()
        convolutional = any(isinstance(m, torch.nn.Conv2d) for m in create_model(arch).modules())
        variants = [(layout, impl) for layout in (("contiguous", "channels_last") if convolutional else ("contiguous",))
                    for impl in ("for-loop", "foreach", "fused")]
        times: dict[str, list[float]] = {f"{layout} {impl}": [] for layout, impl in variants}
        for _ in range(rounds):
            for layout, impl in variants:
                torch.manual_seed(0)
                model = create_model(arch)
                if layout == "channels_last":
                    model = model.to(memory_format=torch.channels_last)
                optimizer = _optimizer(model, cfg, impl)
                forward = getattr(model, "member_logits", model)
                model.train()
                elapsed = []
                for i in range(steps + 2):
                    x = x_all[i % steps * cfg.batch_size:(i % steps + 1) * cfg.batch_size]
                    y = y_all[i % steps * cfg.batch_size:(i % steps + 1) * cfg.batch_size]
                    start = time.perf_counter()
                    if layout == "channels_last":
                        x = x.contiguous(memory_format=torch.channels_last)
                    out = forward(x)
                    loss = F.cross_entropy(out.flatten(0, -2), y.repeat_interleave(out.numel() // (10 * len(y))))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if i >= 2:  # the first steps warm up the allocator and the kernels
                        elapsed.append(time.perf_counter() - start)
                times[f"{layout} {impl}"].append(statistics.median(elapsed) * 1000)
        results[arch] = {k: statistics.median(v) for k, v in times.items()}
        best = min(results[arch], key=results[arch].get)
        report(f"  {arch:<8} batch {cfg.batch_size:>3}: " + "  ".join(
            f"{k} {v:6.2f}" for k, v in results[arch].items()) + f"  ms/step; fastest: {best}"
            + f" (registry: {'channels_last' if get_spec(arch).cpu_channels_last else 'contiguous'})")
    return results


def bookkeeping_costs(arch: str = "lenet", steps: int = 200, data_root=None,
                      report: Callable[[str], None] = print) -> dict[str, float]:
    """What the trainer does besides the step, in milliseconds per epoch of `arch`'s recipe on
    the CPU: the EMA update, the running loss/accuracy sums, and the progress reports (a
    progress.json written atomically and one sync with the device, REPORTS_PER_EPOCH times),
    each timed over `steps` calls beside the bare training step."""
    from core.data.mnist import load_mnist, normalize_uint8
    from core.store.runs import RunWriter
    from core.training.loop import EMA, REPORTS_PER_EPOCH, build_trainee
    cfg = TrainConfig(arch=arch, device="cpu")
    t = build_trainee(cfg, torch.device("cpu"), steps_per_epoch=steps)
    mnist = load_mnist(data_root)
    x = normalize_uint8(mnist.train_images[:cfg.batch_size])
    x = x.contiguous(memory_format=torch.channels_last) if t.channels_last else x
    y = mnist.train_labels[:cfg.batch_size].long()
    ema = EMA(t.model, 0.999)
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)

    def timed(fn, n: int) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1000

    def step():
        out = t.forward(x)
        loss = F.cross_entropy(out, y)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        return out, loss

    out, loss = step()

    def metrics():
        nonlocal loss_sum, correct
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()

    per_epoch = math.ceil(55_000 / cfg.batch_size)
    with tempfile.TemporaryDirectory() as root:
        writer = RunWriter.create(cfg.to_dict(), None, root)
        try:
            progress = timed(lambda: writer.write_progress(step=1, train_loss=loss_sum.item(), train_acc=correct.item()),
                             max(5, steps // 10))
        finally:
            writer.release()
    costs = {"step": timed(step, steps) * per_epoch, "ema": timed(lambda: ema.update(t.model), steps) * per_epoch,
             "running metrics": timed(metrics, steps) * per_epoch, "progress reports": progress * REPORTS_PER_EPOCH}
    report(f"bookkeeping of {arch} (batch {cfg.batch_size}, {per_epoch} steps per epoch of 55,000 images), "
           f"ms per epoch: " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items())
           + f"; all but the step: {sum(costs.values()) - costs['step']:.1f} "
           f"({(sum(costs.values()) - costs['step']) / costs['step'] * 100:.1f}% of the steps)")
    return costs


def saliency_latency(repeats: int = 10, root=None, data_root=None,
                     report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Milliseconds for one test image's Integrated Gradients map (core.analysis.saliency, 32 steps) per
    architecture on the CPU, p50/p95, with the best finished run of each (untrained weights
    where there is none): the saliency budget of issue 13 is 300 ms per image per model."""
    from core.store import tables
    from core.data.mnist import load_mnist, normalize_uint8
    from core.store.runs import list_runs, load_model
    from core.analysis.saliency import attribute
    best = {r.arch: r.run_id for r in tables.best_run_per_arch(list_runs(root))}
    image = normalize_uint8(load_mnist(data_root).test_images[:1])
    results = {}
    for arch in list_models():
        model = load_model(best[arch], root) if arch in best else create_model(arch).eval()
        results[arch] = {**latency_ms(lambda: attribute(model, image, 7), repeats, warmup=2),
                         "weights": best.get(arch, "untrained weights")}
        report(f"  saliency {arch:<8} p50 {results[arch]['p50_ms']:7.1f} ms   p95 {results[arch]['p95_ms']:7.1f} ms")
    return results


def embedding_costs(methods: tuple[str, ...] = ("umap", "tsne", "pca"), root=None, data_root=None,
                    report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Seconds to draw one run's embedding map (core.analysis.embedding), per architecture with the best
    finished run of each: the features of the 10,000 test images, then each projection, on the
    CPU, nothing read from or written to the run folder. Issue 13's budget is 90 s a map. The
    first UMAP in a process includes numba's compilation (10-30 s here), as a fresh dashboard's does."""
    from core.store import tables
    from core.data.mnist import load_mnist, normalize_uint8
    from core.analysis.embedding import check_method, features, project
    from core.store.runs import list_runs, load_model
    for method in methods:
        check_method(method)
    x = normalize_uint8(load_mnist(data_root).test_images)
    results = {}
    for run in sorted(tables.best_run_per_arch(list_runs(root)), key=lambda r: r.arch):
        model = load_model(run.run_id, root)
        start = time.perf_counter()
        feats = features(model, x)
        row = {"features": time.perf_counter() - start, "width": feats.shape[1]}
        for method in methods:
            start = time.perf_counter()
            project(feats, method)
            row[method] = time.perf_counter() - start
        results[run.arch] = row
        report(f"  map {run.arch:<8} {feats.shape[1]:>4} features {row['features']:5.1f} s  "
               + "  ".join(f"{m} {row[m]:5.1f} s (map {row['features'] + row[m]:5.1f} s)" for m in methods))
    return results
