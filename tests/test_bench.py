"""`python -m core bench` runs both pipelines and the sketch path (figures live in docs/BENCHMARKS.md)."""
from __future__ import annotations

import json
import math

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
    assert all(s > 0 for s in result["reference_s_per_epoch"] + result["lab_s_per_epoch"])
    assert 0 < result["ratio"] < math.inf
    assert f"ratio: {result['ratio']:.2f}x" in captured.err  # the report and the JSON agree
    assert set(result["sketch_ms"]) == set(list_models())
    for timing in result["sketch_ms"].values():
        assert 0 < timing["p50_ms"] <= timing["p95_ms"]
    assert "seed-style pipeline" in captured.err and "ratio" in captured.err


def test_ratio_is_how_many_times_faster_mnist_lab_trains(monkeypatch):
    """With timings known in advance: the seed-style pipeline at 4 s per epoch (mean of 3 and 5)
    and MNIST Lab at 2 s (mean of 1 and 3) is a ratio of 2, reported as 2.00x."""
    from core import bench
    monkeypatch.setattr(bench, "reference_epochs", lambda *args, **kwargs: [3.0, 5.0])
    monkeypatch.setattr(bench, "lab_epochs", lambda *args, **kwargs: [1.0, 3.0])
    monkeypatch.setattr(bench, "sketch_latency", lambda *args, **kwargs: {})
    lines = []
    result = bench.run_bench(epochs=2, device="cpu", report=lines.append)
    assert result["ratio"] == 2.0
    assert any(line.strip() == "ratio: 2.00x" for line in lines)


def test_bench_reads_past_a_damaged_run(tmp_path, trained_runs, capsys):
    root = trained_runs.copy_to(tmp_path / "runs")
    damaged = root / "20200101-000000-mlp-damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"format": None, "arch": "mlp"}))
    (damaged / "status.json").write_text(json.dumps({"status": "finished"}))
    (damaged / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n1,x,y,z,abc,0.1,1\n")
    code = main(["--checkpoints", str(root), "--data", str(require_mnist()), "bench", "--train-limit", "200",
                 "--sketch-repeats", "1", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sketch_ms"]["mlp"]["weights"] == trained_runs.ids["mlp"]   # the real run, timed
