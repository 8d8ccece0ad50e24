"""core.store.cache.RunCache: the long-lived listing the dashboard uses. Its oracle is the store
read from scratch (list_runs) after every kind of change a user or a job makes."""
from __future__ import annotations

import shutil

from core.config import TrainConfig
from core.store import cache
from core.store.cache import RunCache
from core.store.runs import delete_run, list_runs, rename_run
from core.store.writer import RunWriter


def summary(runs) -> list[tuple]:
    return [(r.run_id, r.name, r.status, r.status_info.get("message"), r.epochs_done) for r in runs]


def finished_run(root, name: str) -> str:
    writer = RunWriter.create(TrainConfig(arch="mlp", name=name).to_dict(), root=root)
    writer.write_history([{"epoch": 1, "train_loss": 0.5, "train_acc": 85.0, "val_loss": 0.4,
                           "val_acc": 88.0, "lr": 0.1, "seconds": 1.0}])
    writer.finish()
    writer.release()
    return writer.run_id


def test_the_cache_always_lists_what_a_fresh_read_lists(tmp_path):
    root = tmp_path / "checkpoints"
    first, second = finished_run(root, "first"), finished_run(root, "second")
    runs = RunCache(root)
    assert summary(runs.runs()) == summary(list_runs(root))

    rename_run(first, "renamed", root)
    assert summary(runs.runs()) == summary(list_runs(root))
    assert "renamed" in [r.name for r in runs.runs()]

    live = RunWriter.create(TrainConfig(arch="mlp", name="live").to_dict(), root=root)
    live.start()  # this process holds its lock: it is running
    assert summary(runs.runs()) == summary(list_runs(root))
    assert [r.status for r in runs.runs() if r.run_id == live.run_id] == ["running"]
    live.release()  # its owner is gone: interrupted, though its file still says running
    assert [r.status for r in runs.runs() if r.run_id == live.run_id] == ["interrupted"]
    assert summary(runs.runs()) == summary(list_runs(root))

    delete_run(second, root)
    shutil.rmtree(root / live.run_id)
    assert summary(runs.runs()) == summary(list_runs(root))
    assert [r.run_id for r in runs.runs()] == [first]


def test_a_settled_run_is_read_once_and_the_active_listing_looks_only_at_active_runs(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    done = finished_run(root, "done")
    live = RunWriter.create(TrainConfig(arch="mlp", name="live").to_dict(), root=root)
    try:
        live.start()
        reads, looked_at = [], []
        real_load, real_signature = cache.load_run, cache.run_signature
        monkeypatch.setattr(cache, "load_run", lambda run_id, root=None: reads.append(run_id) or real_load(run_id, root))
        monkeypatch.setattr(cache, "run_signature", lambda folder: looked_at.append(folder) or real_signature(folder))
        runs = RunCache(root)
        runs.runs()
        assert sorted(reads) == sorted([done, live.run_id])
        reads.clear()
        runs.runs()
        assert reads == []  # nothing changed, nothing read
        live.write_history([{"epoch": 1, "train_loss": 0.5, "train_acc": 85.0, "val_loss": 0.4,
                             "val_acc": 88.0, "lr": 0.1, "seconds": 1.0}])
        looked_at.clear()
        (active,) = [r for r in runs.runs(active_only=True) if r.run_id == live.run_id]
        assert reads == [live.run_id] and [str(p).rsplit("/", 1)[-1] for p in looked_at] == [live.run_id]
        assert active.epochs_done == 1
    finally:
        live.release()
