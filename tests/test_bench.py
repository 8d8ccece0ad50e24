"""`python -m core bench` runs both pipelines and the sketch path (figures live in docs/BENCHMARKS.md)."""
from __future__ import annotations

import json

from core.cli import main
from core.models import list_models
from tests.helpers import require_mnist


def test_bench_times_both_pipelines_and_every_sketch_model(capsys):
    code = main(["--data", str(require_mnist()), "bench", "--train-limit", "1500", "--sketch-repeats", "3",
                 "--device", "cpu", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["images"] == 1500 and result["arch"] == "lenet" and result["batch_size"] == 64
    assert len(result["reference_s_per_epoch"]) == len(result["lab_s_per_epoch"]) == 1
    assert result["ratio"] == result["reference_s_per_epoch"][0] / result["lab_s_per_epoch"][0]
    assert set(result["sketch_ms"]) == set(list_models())
    for timing in result["sketch_ms"].values():
        assert 0 < timing["p50_ms"] <= timing["p95_ms"]
    assert "seed-style pipeline" in captured.err and "ratio" in captured.err
