"""`python -m core ...`: fetch, models, train, runs, predict, sweep, search, bench, ensemble,
label-issues, embedding, ... The options are parsed here; the commands are core.commands."""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import MISSING

from core.notadigit import detector
from core.commands import COMMANDS
from core.config import SWEPT_FIELDS, TrainConfig, field_specs
from core.errors import LabError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per TrainConfig field (core.config.field_specs; a knob's help from its row of
    core.recipe.KNOBS), so the CLI and the saved config use the same words."""
    for spec in field_specs():
        if spec.name in skip:
            continue
        help_text = spec.help
        if spec.recipe:
            help_text += " (default: the architecture's recipe, see `python -m core models`)"
        elif spec.default is not MISSING and "default:" not in help_text:
            help_text += f" (default: {'none' if spec.default is None else spec.default})"
        if spec.kind is bool:
            parser.add_argument(spec.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif spec.kind is int:
            parser.add_argument(spec.flag, type=_positive_int, default=None, help=help_text, metavar="N")
        elif spec.kind is float:
            parser.add_argument(spec.flag, type=_float, default=None, help=help_text, metavar="X")
        else:
            parser.add_argument(spec.flag, default=None, help=help_text, choices=spec.choices)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m core", description="MNIST Lab: train, compare and probe digit classifiers.")
    parser.add_argument("--checkpoints", help="runs folder (default: $MNIST_LAB_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--data", help="MNIST folder (default: $MNIST_LAB_DATA or ./data)")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    fetch = sub.add_parser("fetch", help="download and verify MNIST into the data folder")
    fetch.add_argument("--exposure", action="store_true",
                       help="also draw the exposure images that outlier exposure and the not-a-digit check learn "
                            "from (some 15 s, once; kept in the data folder), so no training or fit waits for them")
    sub.add_parser("models", help="list architectures with parameter counts and recipes")

    train = sub.add_parser("train", help="train one model; Ctrl-C or SIGTERM cancels cleanly")
    add_config_options(train)
    train.add_argument("--resume", metavar="RUN", help="continue RUN from its last finished epoch")
    train.add_argument("--run-id", help="train a run already prepared (by the dashboard) under this id")
    train.add_argument("--seeds", metavar="LIST",
                       help="train one run per seed (e.g. 0,1,2), one after another, as one seed group; "
                            "prints the group's test accuracy as mean ± std (not with --seed or --resume)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the run's lock, from core.training.jobs

    sub.add_parser("runs", help="list runs")

    predict = sub.add_parser("predict", help="classify image files with a saved run")
    predict.add_argument("run", help="run id (see `python -m core runs`)")
    predict.add_argument("images", nargs="+", help="image files of any size")
    predict.add_argument("--json", action="store_true", help="one JSON line per image")
    predict.add_argument("--calibrated", action="store_true",
                         help="confidences scaled by the run's fitted temperature (see `calibration`)")

    sweep = sub.add_parser("sweep", help="train a learning-rate x batch-size grid")
    sweep.add_argument("--lr", required=True, help="comma-separated learning rates, e.g. 0.01,0.1")
    sweep.add_argument("--batch-size", required=True, help="comma-separated batch sizes, e.g. 32,128")
    add_config_options(sweep, skip=SWEPT_FIELDS)
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run each grid point as a task on the Ray cluster at "
                       "HOST:PORT, or 'auto' (the one on this machine); the checkpoints folder must be shared "
                       "by every node (default: train here, one run after another)")

    search = sub.add_parser(
        "search", help="a hyperparameter study (Optuna): trials sampled by TPE (or at random), poor ones stopped "
                       "after an epoch or two by a pruner; validation accuracy decides, never the test set",
        description="Search any knobs of the recipe. Each trial is a run in the store (grouped under its study); "
                    "the study is kept beside them, so a killed search goes on with --resume.")
    search.add_argument("--param", action="append", metavar="SPEC",
                        help="a knob and its range: NAME=LOW:HIGH (linear), NAME=LOW:HIGH:log, or NAME=A,B,C "
                             "(choices); repeat for each knob, e.g. --param lr=0.001:1:log --param optimizer=sgd,adam")
    search.add_argument("--trials", type=_positive_int, help="how many trials at most")
    search.add_argument("--budget-epochs", type=_positive_int, metavar="E",
                        help="training epochs at most, summed over the trials (a pruned trial counts the epochs it "
                             "trained); give this, --trials, or both")
    search.add_argument("--sampler", default="tpe", metavar="NAME",
                        help="tpe (default: Optuna's Tree-structured Parzen Estimator) or random")
    search.add_argument("--pruner", default="asha", metavar="NAME",
                        help="asha (default: successive halving, Li et al. 2020), hyperband, median (the median "
                             "rule) or none")
    search.add_argument("--seed", type=_positive_int, default=0,
                        help="the study's seed: the sampler's and every trial's training seed (default: 0)")
    search.add_argument("--study", metavar="NAME", help="the study's name (default: ARCH-<UTC time>)")
    search.add_argument("--resume", metavar="STUDY",
                        help="go on with a study a killed or cancelled search left: no trial is repeated or lost")
    add_config_options(search, skip=("sweep", "name", "group", "study", "seed"))
    search.add_argument("--ray", metavar="ADDRESS", help="run the trials as tasks on the Ray cluster at HOST:PORT, "
                        "or 'auto', as many at once as it has CPUs; the checkpoints folder must be shared by every "
                        "node (default: here, one trial after another)")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.add_argument("--json", action="store_true",
                        help="one JSON object: study, trials (number, run_id, state, epochs, val_acc, params), best")

    bench = sub.add_parser("bench", help="time MNIST Lab against the seed-style pipeline, or (--time-to) "
                                         "against the fastest published recipe",
                           description="Default: the seed-style pipeline, a plain loop and MNIST Lab's trainer, "
                                       "one epoch each in alternating rounds, then the sketch path. --time-to: "
                                       "the time-to-accuracy race. --steps: ms per step per architecture.")
    bench.add_argument("--arch", default="lenet", help="architecture (default: lenet)")
    bench.add_argument("--batch-size", type=_positive_int, default=64, help="(default: 64)")
    bench.add_argument("--lr", type=_float, default=1e-3, help="Adam learning rate (default: 0.001)")
    bench.add_argument("--epochs", type=_positive_int, default=1, help="epochs timed per pipeline (default: 1)")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: auto)")
    bench.add_argument("--train-limit", type=_positive_int, default=None, help="images per epoch (default: all 60,000)")
    bench.add_argument("--sketch-repeats", type=_positive_int, default=50, help="timed sketch predictions per model (default: 50)")
    bench.add_argument("--rounds", type=_positive_int, default=5, help="alternating rounds of the epoch timing (default: 5)")
    bench.add_argument("--time-to", type=_float, default=None, metavar="ACCURACY",
                       help="race MNIST Lab's recipe for this test accuracy against the fastest other ways there: "
                            "tuomaso/train_mnist_fast's published recipe up to 99.0; above it, the next recipe "
                            "aimed at it and the time-to-99%% recipe trained for longer (e.g. 99.0, 99.5)")
    bench.add_argument("--seeds", type=_positive_int, default=3, help="--time-to: seeds per contestant (default: 3)")
    bench.add_argument("--val-size", type=_positive_int, default=TrainConfig.val_size,
                       help="--time-to: validation images each of MNIST Lab's runs holds out and scores after each "
                            "epoch, untimed; fewer make a quick race (--train-limit) quicker (default: 5000, the trainer's)")
    bench.add_argument("--recipe", default=None,
                       help="--time-to: MNIST Lab's recipe to race (default: the one whose target is the lowest at or above it)")
    bench.add_argument("--steps", action="store_true",
                       help="ms per training step of every architecture on the CPU, per memory layout and optimizer implementation")
    bench.add_argument("--saliency", action="store_true",
                       help="ms per Integrated Gradients map (one test image, one model of each architecture)")
    bench.add_argument("--flip", action="store_true",
                       help="seconds of Sketch's 'What would change its mind?' (one drawing, one model of each architecture)")
    bench.add_argument("--embedding", action="store_true",
                       help="time the embedding map (features + UMAP, t-SNE, PCA) of the best run of each architecture")
    bench.add_argument("--onnx", action="store_true",
                       help="export the best run of each architecture to ONNX: seconds, size, and ONNX Runtime's "
                            "latency per image against the lab's PyTorch path")
    bench.add_argument("--json", action="store_true", help="print the results as one JSON object")

    ensemble = sub.add_parser("ensemble", help="save finished runs as one run (kind ensemble) that "
                                               "averages their probabilities; prints its run id")
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="two or more finished run ids")
    ensemble.add_argument("--name", help="a readable name (default: the members' names)")

    issues = sub.add_parser("label-issues", help="rank MNIST's test images by how likely their label is wrong "
                                                 "(cleanlab, from saved test probabilities)")
    issues.add_argument("--runs", nargs="+", metavar="RUN", default=None,
                        help="runs whose averaged probabilities rank the images (default: the reference runs, "
                             "else every finished run)")
    issues.add_argument("--top", type=_positive_int, default=30, help="how many to print (default: 30)")
    issues.add_argument("--json", action="store_true", help="one JSON list of {rank, index, label, suggested, score, confirmed}")

    emb = sub.add_parser("embedding", help="project a finished run's penultimate features on the test set "
                                           "to 2-D (kept in its run folder; computed once)")
    emb.add_argument("run", metavar="RUN", help="a finished run id")
    emb.add_argument("--method", default="umap", choices=["umap", "tsne", "pca"],
                     help="the projection (default: umap)")

    look = sub.add_parser("inside", help="one digit through a finished run's model, layer by layer, and the training "
                                         "digits nearest to it in the model's penultimate features")
    look.add_argument("run", metavar="RUN", help="a finished run id")
    given = look.add_mutually_exclusive_group(required=True)
    given.add_argument("--image", metavar="FILE", help="an image file of a digit (PNG, JPEG, ...)")
    given.add_argument("--test-index", type=int, metavar="I", help="MNIST test image I (0..9999)")
    look.add_argument("--member", type=_positive_int, default=1,
                      help="for an ensemble: which member's layers (default: 1)")
    look.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                      help="distance between penultimate features (default: cosine)")
    look.add_argument("--k", type=_positive_int, default=9, help="how many nearest training digits (default: 9)")
    look.add_argument("--json", action="store_true",
                      help="one JSON object: layers (name, shape), probabilities, metric, neighbours "
                           "(train_index, label, distance), knn_vote")

    compare = sub.add_parser("compare", help="is the difference real? two runs on the same test images: "
                                             "McNemar's exact test, intervals, in a sentence")
    compare.add_argument("run_a", metavar="RUN_A", help="a finished run id")
    compare.add_argument("run_b", metavar="RUN_B", help="another finished run id")
    compare.add_argument("--json", action="store_true",
                         help="one JSON object: a_only, b_only, p_value, each run's accuracy and ci95, ...")

    ood = sub.add_parser("ood", help="not a digit: a run's out-of-distribution detector (pytorch-ood), fitted "
                                     "on its training split, its threshold on its validation split (kept)")
    ood.add_argument("run", metavar="RUN", help="a finished run id")
    ood.add_argument("--detector", default=detector.DEFAULT, choices=list(detector.DETECTORS),
                     help=f"which detector to fit and keep (default: {detector.DEFAULT}, chosen on the lab's "
                          "not-a-digit set)")
    ood.add_argument("--refit", action="store_true", help="fit again even if a detector is kept")
    ood.add_argument("--evaluate", action="store_true",
                     help="measure every detector on the lab's not-a-digit set against MNIST's test digits "
                          "(a few minutes), and keep the figures with the detector")
    ood.add_argument("--json", action="store_true", help="one JSON object")

    robust = sub.add_parser("robustness", help="a run's accuracy under MNIST-C's corruptions and under FGSM and "
                                               "PGD attacks at eps 0.05-0.3, with sanity checks (kept)")
    robust.add_argument("run", metavar="RUN", help="a finished run id")
    robust.add_argument("--refresh", action="store_true", help="measure again even if a report is kept")
    robust.add_argument("--json", action="store_true",
                        help="one JSON object: entries such as {attack, epsilon, steps, restarts, accuracy} and one "
                             "per corruption")

    calibration = sub.add_parser("calibration", help="expected calibration error of a run's test probabilities, "
                                                     "and a temperature fitted on its validation split (kept)")
    calibration.add_argument("run", metavar="RUN", help="a finished run id")
    calibration.add_argument("--refit", action="store_true", help="fit again even if a fit is kept")
    calibration.add_argument("--json", action="store_true",
                             help="one JSON object: ece, ece_calibrated, temperature, fitted_on, ...")

    export = sub.add_parser("export", help="a run's model as one ONNX (or TorchScript) file that takes [0, 1] pixels "
                                           "and returns probabilities, with its model card beside it")
    export.add_argument("run", metavar="RUN", help="a finished run id")
    export.add_argument("--format", default="onnx", metavar="FORMAT", help="onnx (default) or torchscript")
    export.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="where to write it (default: RUN.onnx or RUN.pt here); the card goes to FILE.card.md "
                             "and FILE.card.json")
    export.add_argument("--no-verify", action="store_true",
                        help="skip running the file on MNIST's 10,000 test images against the run's own predictions")
    export.add_argument("--json", action="store_true", help="one JSON object: path, card paths, seconds, bytes, card")
    own = sub.add_parser("owner", help="the owner's password, which a lab opened to others (make run ADDRESS=0.0.0.0) "
                                       "asks before anything that spends its compute or changes its runs")
    what = own.add_mutually_exclusive_group()
    what.add_argument("--set", action="store_true",
                      help="keep a new password (asked twice at a terminal; one line from a pipe): only its "
                           "Argon2id hash is written, to $MNIST_LAB_OWNER_FILE or ~/.config/mnist-lab/owner-password")
    what.add_argument("--clear", action="store_true", help="forget the kept password")
    what.add_argument("--check-listen", metavar="ADDRESS", default=None,
                      help="exit 2, saying why, if the dashboard must not listen on ADDRESS (not this machine's "
                           "loopback, and no owner password set); `make run` asks this first")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m core runs | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except LabError as exc:  # ours: the message says what to do; anything else keeps its traceback
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
