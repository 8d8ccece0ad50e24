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
    test accuracy, and the ratio. Above 99%, where no published recipe aims: `--time-to 99.5`
    races the recipe aimed there against the next one aimed at it (resnet) and the time-to-99%
    recipe trained for as many epochs.
  - `--steps`: milliseconds per training step of every architecture on the CPU, per memory
    layout and optimizer implementation (what `cpu_channels_last` in the registry rests on).
`--saliency` and `--embedding` time one saliency map and one embedding map per architecture.

One module per family: pipelines (the default mode, run_bench), race (`--time-to`, run_race),
costs (`--steps`, the bookkeeping, saliency, embedding and sketch latencies), and common
(what they share: the device sync and name, a scratch run of the trainer, option checks).
"""
