"""What the benchmarks share: the device's sync and name, a run of MNIST Lab's trainer in a
scratch folder, the check of the count options and the median (min, max) text."""
from __future__ import annotations

import platform
import statistics
import tempfile

import torch

from core.config import ConfigError, TrainConfig
from core.store.runs import load_run
from core.training.loop import prepare_run, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def scratch_run(cfg: TrainConfig, data_root=None):
    """Train `cfg` with MNIST Lab's own trainer in a scratch run folder, deleted afterwards;
    return the finished run as read (history, metrics: what the benchmarks time and score)."""
    with tempfile.TemporaryDirectory() as root:
        writer = prepare_run(cfg, root=root)
        train(writer.run_id, root=root, data_root=data_root, writer=writer)
        return load_run(writer.run_id, root)


def check_options(**counts: int | None) -> None:
    """Each count (None: not given) must be a whole number >= 1; refused before any timing."""
    for name, value in counts.items():
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
