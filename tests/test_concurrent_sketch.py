"""Many visitors at once (issue 40): the server answers every session's stroke on its own thread,
with the models loaded once for all. The not-a-digit check reads a model's convolutions through
forward hooks on that shared model, and a hook fires on every pass through it, whichever thread
makes it: a thread collected another's activations, from its own hooked pass or from a plain one
("Sizes of tensors must match": 41 of 708 strokes with 30 sessions). Each thread's outputs must be
what it alone would get."""
from __future__ import annotations

import threading

import torch

from core.models import create_model
from core.notadigit.detector import outputs


def test_two_threads_reading_one_shared_model_each_get_their_own_outputs():
    torch.manual_seed(0)
    model = create_model("lenet").eval()
    inputs = [torch.randn(n, 1, 28, 28) for n in (1, 2, 3)]  # different sizes: a mix-up cannot go unseen
    alone = [outputs(model, x, many=False) for x in inputs]  # the oracle: one thread, one at a time
    failures: list[str] = []

    def work(k: int) -> None:
        for round_ in range(150):
            x = inputs[(k + round_) % len(inputs)]
            try:
                got = outputs(model, x, many=False)
            except Exception as exc:  # noqa: BLE001 - any failure in a thread is the test's
                failures.append(repr(exc))
                return
            want = alone[(k + round_) % len(inputs)]
            same = [torch.equal(got.logits, want.logits), len(got.grids) == len(want.grids) > 0,
                    *(torch.equal(a, b) for a, b in zip(got.grids, want.grids))]
            if not all(same):
                failures.append(f"thread {k} round {round_}: another thread's activations")
                return
    def plain() -> None:  # a model without a check, or saliency: the same model, no hooks of its own
        for round_ in range(300):
            model(inputs[round_ % len(inputs)])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)] + [threading.Thread(target=plain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
