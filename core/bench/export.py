"""`python -m core bench --onnx`: what taking a model out of the lab costs and buys, per architecture
with the best finished run of each: the export's seconds, the file's size, and the latency per image
of ONNX Runtime against the lab's PyTorch path (the same [0, 1]-pixels-to-probabilities module the
export traces, in inference mode) for one image at a time (Sketch's case) and in batches of 1,000
(the test set's), the two interleaved over `rounds` rounds (median, min, max)."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data.mnist import load_test_pixels
from core.export import graph
from core.store import tables
from core.store.runs import list_runs, load_model


def _per_image(fn: Callable[[np.ndarray], object], pixels: np.ndarray, batch: int) -> float:
    """Milliseconds per image of fn over `pixels` in batches of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        fn(pixels[i:i + batch])
    return (time.perf_counter() - start) * 1000 / len(pixels)


def onnx_costs(rounds: int = 5, root=None, data_root=None, report: Callable[[str], None] = print) -> dict[str, dict]:
    import onnxruntime  # heavy: only this benchmark and the export's check load it
    pixels = load_test_pixels(data_root).numpy()
    single = pixels[:200]
    results = {}
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-") as folder:
        for run in sorted(tables.best_run_per_arch(list_runs(root)), key=lambda r: r.arch):
            done = graph.export(run.run_id, root, "onnx", Path(folder) / f"{run.arch}.onnx", verify=False)
            session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
            module = graph.PixelsToProbabilities(load_model(run.run_id, root))

            def ort(x):
                return session.run(None, {graph.INPUT: x})

            def lab(x):
                with torch.inference_mode():
                    return module(torch.from_numpy(x))
            ort(single[:1]), lab(single[:1])   # warm both up
            timings = {"ort_1": [], "torch_1": [], "ort_1000": [], "torch_1000": []}
            for _ in range(rounds):
                timings["ort_1"].append(_per_image(ort, single, 1))
                timings["torch_1"].append(_per_image(lab, single, 1))
                timings["ort_1000"].append(_per_image(ort, pixels, 1000))
                timings["torch_1000"].append(_per_image(lab, pixels, 1000))
            row = {"run_id": run.run_id, "export_s": done.seconds, "bytes": done.bytes}
            for name, values in timings.items():
                row[f"{name}_ms"] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
            results[run.arch] = row
            report(f"  {run.arch:<9} export {done.seconds:5.1f} s, {done.bytes / 1e6:6.2f} MB; ms per image, one at a "
                   f"time: ONNX Runtime {row['ort_1_ms']['median']:.3f}, PyTorch {row['torch_1_ms']['median']:.3f}; "
                   f"in batches of 1,000: {row['ort_1000_ms']['median']:.4f} vs {row['torch_1000_ms']['median']:.4f}")
    return results
