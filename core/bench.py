"""`python -m core bench`: the seed-style data pipeline against MNIST Lab's, in one process.

Both train the same architecture with the same optimizer, learning rate and batch size on the
same 55,000 training images (one seeded split), for the same number of epochs:
  - reference: torchvision `MNIST` + `ToTensor` + `Normalize` + a shuffled `DataLoader`,
    written plainly as the seed projects do (num_workers=0, their default);
  - MNIST Lab: the trainer itself (`core.train`), data resident on the device, batches as
    index slices; its epoch time also includes the validation pass, the reference's does not.
Then the sketch path: preprocess one 280x280 drawing and run one model of each registered
architecture on it (weights from the best saved run of that architecture when there is one),
timed per prediction, p50 and p95.
"""
from __future__ import annotations

import platform
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.config import ConfigError, TrainConfig
from core.data import data_dir, split_indices
from core.models import create_model, list_models
from core.preprocess import MNIST_MEAN, MNIST_STD, to_mnist
from core.train import prepare_run, resolve_device, train


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


def lab_epochs(arch: str, batch_size: int, lr: float, epochs: int, device: torch.device,
               train_limit: int | None, data_root) -> list[float]:
    """Seconds per epoch of MNIST Lab's own trainer (from the run's history.csv)."""
    from core.runs import load_run
    with tempfile.TemporaryDirectory() as root:
        cfg = TrainConfig(arch=arch, batch_size=batch_size, lr=lr, optimizer="adam", epochs=epochs,
                          schedule="none", momentum=0.0, weight_decay=0.0, augment="none",
                          label_smoothing=0.0, ema=False, device=device.type, train_limit=train_limit)
        writer = prepare_run(cfg, root=root)
        train(writer.run_id, root=root, data_root=data_root, writer=writer)
        return load_run(writer.run_id, root).history["seconds"].tolist()


def sample_drawing(size: int = 280) -> np.ndarray:
    """An RGBA canvas image like the Sketch page's: a '7' in black strokes on transparency."""
    from PIL import Image, ImageDraw
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 280
    draw.line([(70 * s, 60 * s), (210 * s, 60 * s), (120 * s, 230 * s)], fill=(0, 0, 0, 255), width=int(18 * s))
    return np.asarray(image)


def sketch_latency(repeats: int, root=None) -> dict[str, dict[str, float]]:
    """Milliseconds per (preprocess + one model's forward pass), p50/p95, per architecture."""
    from core.predict import Predictor
    from core.runs import list_runs
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
        times = []
        for i in range(repeats + 3):
            start = time.perf_counter()
            predictor.probabilities(to_mnist(drawing))
            if i >= 3:  # the first calls warm up allocators and kernels
                times.append((time.perf_counter() - start) * 1000)
        results[arch] = {"p50_ms": statistics.median(times),
                         "p95_ms": float(np.percentile(times, 95)), "weights": source}
    return results


def _check_options(**counts: int | None) -> None:
    """Each count (None: not given) must be a whole number >= 1; refused before any timing."""
    for name, value in counts.items():
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def run_bench(arch: str = "lenet", batch_size: int = 64, lr: float = 1e-3, epochs: int = 1,
              device: str = "auto", train_limit: int | None = None, sketch_repeats: int = 50,
              data_root=None, root=None, report: Callable[[str], None] = print) -> dict:
    """Both pipelines' seconds per epoch and the sketch path's latency per architecture, timed
    with the first finished run of each architecture in the checkpoints folder `root`."""
    _check_options(batch_size=batch_size, epochs=epochs, sketch_repeats=sketch_repeats, train_limit=train_limit)
    dev = resolve_device(device)
    train_idx, _ = split_indices(60_000, 5_000, seed=0)  # the trainer's own split (seed 0)
    if train_limit:
        train_idx = train_idx[:train_limit]
    report(f"bench: {arch}, batch {batch_size}, Adam lr {lr:g}, {epochs} epoch(s) of {len(train_idx):,} "
           f"images on {dev} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    ref = reference_epochs(arch, batch_size, lr, epochs, dev, train_idx, data_root)
    report(f"  seed-style pipeline (torchvision MNIST + DataLoader): {statistics.mean(ref):.2f} s/epoch")
    lab = lab_epochs(arch, batch_size, lr, epochs, dev, train_limit, data_root)
    report(f"  MNIST Lab trainer (tensors on {dev.type}, index slices): {statistics.mean(lab):.2f} s/epoch")
    ratio = statistics.mean(ref) / statistics.mean(lab)
    report(f"  ratio: {ratio:.2f}x")
    sketch = sketch_latency(sketch_repeats, root)
    report("sketch path (preprocess a 280x280 drawing + one model), CPU:")
    for name, t in sketch.items():
        report(f"  {name:<8} p50 {t['p50_ms']:6.2f} ms   p95 {t['p95_ms']:6.2f} ms   ({t['weights']})")
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {"arch": arch, "batch_size": batch_size, "lr": lr, "epochs": epochs, "images": len(train_idx),
            "device": device_name, "torch": torch.__version__, "reference_s_per_epoch": ref,
            "lab_s_per_epoch": lab, "ratio": ratio, "sketch_ms": sketch}


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, impl: str) -> torch.optim.Optimizer:
    """The recipe's optimizer with one implementation: 'for-loop', 'foreach' or 'fused'."""
    from core.train import build_optimizer
    flags = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    return build_optimizer(model, cfg, **flags)


def step_costs(steps: int = 20, rounds: int = 3, archs: list[str] | None = None, data_root=None,
               report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Milliseconds per training step on the CPU, per architecture at its recipe's batch size:
    the memory layout (contiguous or channels_last) and the optimizer implementation
    (for-loop, foreach, fused), each timed in `rounds` interleaved rounds of `steps` steps on
    real MNIST batches; the medians. This is the measurement behind each architecture's
    `cpu_channels_last` and the engine's choice of optimizer implementation."""
    from core.data import load_mnist
    from core.models import get_spec
    from core.data import normalize_uint8
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
