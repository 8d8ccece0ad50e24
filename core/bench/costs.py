"""What single things cost: a training step per layout and optimizer implementation (`--steps`),
the trainer's bookkeeping beside the step, a saliency map (`--saliency`), an embedding map
(`--embedding`) and a sketch prediction (the default bench's last part)."""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from core.analysis.attacks import smallest_flip
from core.analysis.embedding import check_method, features, project
from core.analysis.predict import Predictor
from core.analysis.saliency import attribute
from core.config import TrainConfig
from core.data.images import normalize_uint8, to_mnist
from core.data.mnist import TRAIN_SIZE, load_mnist, load_test_pixels
from core.models import channels_last, create_model, get_spec, in_layout, is_convolutional, list_models
from core.notadigit.nondigits import pad_redrawn
from core.store import tables
from core.store.runs import list_runs, load_model
from core.store.writer import RunWriter
from core.training.loop import REPORTS_PER_EPOCH, build_trainee
from core.training.parts import EMA, build_optimizer


def sample_drawing(size: int = 280) -> np.ndarray:
    """An RGBA canvas image like the Sketch page's: a '7' in black strokes on transparency."""
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
    best: dict[str, str] = {}
    for run in list_runs(root):
        if run.finished_with("weights") and run.arch not in best:
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


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, impl: str) -> torch.optim.Optimizer:
    """The recipe's optimizer with one implementation: 'for-loop', 'foreach' or 'fused'."""
    flags = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    return build_optimizer(model, cfg, **flags)


def step_costs(steps: int = 20, rounds: int = 3, archs: list[str] | None = None, data_root=None,
               report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Milliseconds per training step on the CPU, per architecture at its recipe's batch size:
    the memory layout (contiguous or channels_last) and the optimizer implementation
    (for-loop, foreach, fused), each timed in `rounds` interleaved rounds of `steps` steps on
    real MNIST batches; the medians. This is the measurement behind each architecture's
    `cpu_channels_last` and the engine's choice of optimizer implementation."""
    mnist = load_mnist(data_root)
    results: dict[str, dict[str, float]] = {}
    for arch in archs or list_models():
        cfg = TrainConfig(arch=arch, device="cpu")
        x_all = normalize_uint8(mnist.train_images[: cfg.batch_size * steps])
        y_all = mnist.train_labels[: cfg.batch_size * steps].long()
        convolutional = is_convolutional(create_model(arch))
        variants = [(layout, impl) for layout in (("contiguous", "channels_last") if convolutional else ("contiguous",))
                    for impl in ("for-loop", "foreach", "fused")]
        times: dict[str, list[float]] = {f"{layout} {impl}": [] for layout, impl in variants}
        for _ in range(rounds):
            for layout, impl in variants:
                torch.manual_seed(0)
                model = create_model(arch)
                if layout == "channels_last":
                    model, _ = channels_last(model, x_all[:0])
                optimizer = _optimizer(model, cfg, impl)
                forward = getattr(model, "member_logits", model)
                model.train()
                elapsed = []
                for i in range(steps + 2):
                    x = x_all[i % steps * cfg.batch_size:(i % steps + 1) * cfg.batch_size]
                    y = y_all[i % steps * cfg.batch_size:(i % steps + 1) * cfg.batch_size]
                    start = time.perf_counter()
                    x = in_layout(x, layout == "channels_last")
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
    cfg = TrainConfig(arch=arch, device="cpu")
    t = build_trainee(cfg, torch.device("cpu"), steps_per_epoch=steps)
    mnist = load_mnist(data_root)
    x = normalize_uint8(mnist.train_images[:cfg.batch_size])
    x = in_layout(x, t.channels_last)
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

    per_epoch = math.ceil((TRAIN_SIZE - cfg.val_size) / cfg.batch_size)
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
    best = {r.arch: r.run_id for r in tables.best_run_per_arch(list_runs(root))}
    image = normalize_uint8(load_mnist(data_root).test_images[:1])
    results = {}
    for arch in list_models():
        model = load_model(best[arch], root) if arch in best else create_model(arch).eval()
        results[arch] = {**latency_ms(lambda: attribute(model, image, 7), repeats, warmup=2),
                         "weights": best.get(arch, "untrained weights")}
        report(f"  saliency {arch:<8} p50 {results[arch]['p50_ms']:7.1f} ms   p95 {results[arch]['p95_ms']:7.1f} ms")
    return results


def flip_latency(repeats: int = 3, root=None, data_root=None,
                 report: Callable[[str], None] = print) -> dict[str, dict]:
    """Seconds of Sketch's "What would change its mind?" (core.analysis.attacks.smallest_flip) per
    architecture, median/min/max of `repeats` calls, with the best finished run of each (untrained
    weights where there is none), on MNIST's first test digit redrawn as the pad draws it: issue
    23's budget is 2 s a model."""
    best = {r.arch: r.run_id for r in tables.best_run_per_arch(list_runs(root))}
    drawing = torch.from_numpy(pad_redrawn(load_test_pixels(data_root)[:1, 0].numpy()))[:, None]
    results = {}
    for arch in list_models():
        model = load_model(best[arch], root) if arch in best else create_model(arch).eval()
        seconds, found = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            found = smallest_flip(model, drawing)
            seconds.append(time.perf_counter() - start)
        results[arch] = {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
                         "eps": found[0] if found else None, "new_digit": found[2] if found else None,
                         "weights": best.get(arch, "untrained weights")}
        report(f"  flip {arch:<8} {results[arch]['median_s']:.2f} s (median of {repeats}); eps "
               f"{results[arch]['eps'] if found else 'none up to 0.5'}")
    return results


def embedding_costs(methods: tuple[str, ...] = ("umap", "tsne", "pca"), root=None, data_root=None,
                    report: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Seconds to draw one run's embedding map (core.analysis.embedding), per architecture with the best
    finished run of each: the features of the 10,000 test images, then each projection, on the
    CPU, nothing read from or written to the run folder. Issue 13's budget is 90 s a map. The
    first UMAP in a process includes numba's compilation (10-30 s here), as a fresh dashboard's does."""
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
