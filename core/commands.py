"""The commands of `python -m core`: core.cli parses the options and calls one of COMMANDS, which
returns the exit status. Those that report on finished runs live in core.reports. The Ray side
(core.training.raysweep) is imported only by `sweep --ray`."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

from tqdm import tqdm

from core.notadigit import exposure
from core.notadigit.detector import detector_for
from core.analysis.predict import Predictor
from core.reports import REPORTS
from core.bench.costs import bookkeeping_costs, embedding_costs, flip_latency, saliency_latency, step_costs
from core.bench.export import onnx_costs
from core.bench.pipelines import run_bench
from core.bench.race import run_race
from core.config import ConfigError, TrainConfig, field_specs
from core.data.csvfile import CSVFormatError, read_digits_csv
from core.data.images import ImageError, preprocess
from core.data.mnist import data_dir, fetch
from core import owner
from core.errors import BadInput, Cancelled, LabError
from core.fsio import strict_json
from core.models import count_parameters, create_model, get_spec, list_models
from core.store import tables
from core.store.folder import RunError, now_iso, store_problem
from core.store.runs import list_runs, load_run
from core.training.grids import grid_table, parse_seeds, parse_values, prepare_seeds, prepare_sweep, run_sweep
from core.training import search
from core.training.jobs import interruptible_now
from core.training.rayaddress import check_address
from core.training.loop import check_trainable, prepare_run, train


def config_from_args(args: argparse.Namespace, **override) -> TrainConfig:
    """The TrainConfig of the options given (core.cli.add_config_options), with `override`."""
    given = {spec.name: getattr(args, spec.name) for spec in field_specs()
             if getattr(args, spec.name, None) is not None}
    given.update(override)
    return TrainConfig(**given)


def cmd_fetch(args) -> int:
    fetch(args.data, report=lambda m: print(m, file=sys.stderr))
    if args.exposure:
        start = time.perf_counter()
        found = exposure.kept(args.data)
        print(f"{len(found):,} exposure images ready in {data_dir(args.data) / 'exposure'} "
              f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    print(f"{'name':<8} {'params':>9}  {'from':<10} {'target':>6}  recipe")
    for name in list_models():
        spec = get_spec(name)
        recipe = spec.recipe.describe()
        print(f"{name:<8} {count_parameters(create_model(name)):>9,}  {spec.source:<10} "
              f"{spec.target:>5.1f}%  {recipe}")
        print(f"{'':<8} {'':>9}  {spec.summary}")
    return 0


class ProgressPrinter:
    """tqdm progress bar over the trainer's events (one bar per epoch)."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, event) -> None:
        if self.quiet:
            if event.kind in ("epoch", "end", "start"):
                print(self.line(event), file=sys.stderr, flush=True)
            return
        if event.kind == "start":
            print(f"{event.run_id}: {event.message}", file=sys.stderr)
        elif event.kind == "step":
            if self.bar is None:
                self.bar = tqdm(total=event.steps, desc=f"epoch {event.epoch}/{event.epochs}",
                                unit="step", leave=False, file=sys.stderr)
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(loss=f"{event.train_loss:.4f}", acc=f"{event.train_acc:.2f}")
        else:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            print(self.line(event), file=sys.stderr, flush=True)

    @staticmethod
    def line(e) -> str:
        if e.kind == "start":
            return f"{e.run_id}: {e.message}"
        if e.kind == "end":
            return f"{e.run_id}: finished, {e.message}"
        return (f"epoch {e.epoch}/{e.epochs}  train loss {e.train_loss:.4f} acc {e.train_acc:.2f}%  "
                f"val loss {e.val_loss:.4f} acc {e.val_acc:.2f}%  lr {e.lr:.3g}  {e.elapsed:.1f}s")


def stop_on_signals() -> threading.Event:
    """SIGTERM (the dashboard's Cancel) and Ctrl-C set a flag the loop checks at every step."""
    stop = threading.Event()

    def handler(*_):
        stop.set()
        if interruptible_now():  # queued, or preparing its data: end it at once
            raise Cancelled()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def cmd_train(args) -> int:
    stop = stop_on_signals()
    if args.seeds is not None:
        return _train_seeds(args, stop)
    writer = None
    if args.resume or args.run_id:
        _check_resume_options(args)
        run_id, resume = args.resume or args.run_id, bool(args.resume)
    else:
        if args.arch is None:
            raise ConfigError(f"--arch is required (one of: {', '.join(list_models())})")
        cfg = config_from_args(args, **_absolute_csv(args))
        check_trainable(cfg, args.data)  # before the run folder exists: bad input leaves no junk run
        writer = prepare_run(cfg, root=args.checkpoints)
        run_id, resume = writer.run_id, False
    status = train(run_id, root=args.checkpoints, data_root=args.data, callback=ProgressPrinter(args.quiet),
                   stop=stop, resume=resume, writer=writer, lock_fd=args.lock_fd,
                   device=args.device if args.resume else None)
    print(run_id)
    return 0 if status == "finished" else 3


def _train_seeds(args, stop) -> int:
    """`train --seeds 0,1,2`: one run per seed in one seed group, trained one after another;
    each run's result, then the group's accuracy as mean ± std (sample std, ddof=1)."""
    clash = [option for option, value in (("--seed", args.seed), ("--resume", args.resume),
                                          ("--run-id", args.run_id)) if value is not None]
    if clash:
        raise ConfigError(f"--seeds gives each run its seed; leave out {', '.join(clash)}")
    seeds = parse_seeds(args.seeds)
    if args.arch is None:
        raise ConfigError(f"--arch is required (one of: {', '.join(list_models())})")
    base = config_from_args(args, seed=seeds[0], **_absolute_csv(args))
    check_trainable(base, args.data)  # before any run folder exists
    group, writers = prepare_seeds(base, seeds, root=args.checkpoints, group=args.group)
    print(f"seed group {group}: {len(writers)} runs (seeds {', '.join(map(str, seeds))})", file=sys.stderr)
    try:
        run_sweep(writers, root=args.checkpoints, data_root=args.data, stop=stop,
                  callback_factory=lambda: ProgressPrinter(args.quiet))
    except LabError as exc:  # a run failed and ended the group: its summary first, then the error
        failure = exc
    else:
        failure = None
    runs = [load_run(w.run_id, args.checkpoints) for w in writers]
    for run in runs:
        print(f"{run.run_id}  seed {run.config.get('seed')}  {run.status}  "
              f"val {tables.format_pct(run.val_acc)}  test {tables.format_pct(run.test_acc)}")
    summary = tables.group_table(runs).iloc[0]
    print(f"group {group}: test accuracy {tables.mean_std_text(summary.test_mean, summary.test_std)}, "
          f"val {tables.mean_std_text(summary.val_mean, summary.val_std)}, over the finished runs: "
          f"{summary.count_text}")
    if failure is not None:
        raise failure
    return 0 if all(r.status == "finished" for r in runs) else 3


def _check_resume_options(args) -> None:
    """A resumed or prepared run trains with its saved config: refuse options it would ignore."""
    if args.resume and args.run_id:
        raise ConfigError("give --resume RUN or --run-id RUN, not both")
    allowed = {"device"} if args.resume else set()
    ignored = [spec.flag for spec in field_specs()
               if spec.name not in allowed and getattr(args, spec.name, None) is not None]
    if ignored:
        option = "--resume" if args.resume else "--run-id"
        raise ConfigError(f"{option} trains with the run's saved config; {', '.join(ignored)} would be ignored"
                          + (" (only --device can change)" if args.resume else ""))


def _absolute_csv(args) -> dict:
    """`--csv` as an absolute path, so a resume from another folder finds the file."""
    if args.csv is None:
        return {}
    if not args.csv.strip():
        raise ConfigError("--csv needs a file name (leave the option out to train on MNIST)")
    return {"csv": os.path.abspath(args.csv)}


def cmd_runs(args) -> int:
    if problem := store_problem(args.checkpoints):  # else "no runs yet" would hide it
        raise RunError(problem)
    runs = list_runs(args.checkpoints)
    if not runs:
        print("no runs yet: start one with `python -m core train --arch lenet`")
        return 0

    def pct(v):
        return f"{v:.2f}" if v is not None else "-"

    def interval(ci):
        return f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"
    print(f"{'run id':<44} {'arch':<7} {'status':<11} {'epochs':>6} {'val':>8} {'test':>6} {'test 95% CI':>13}")
    for r in runs:
        epochs = f"{r.epochs_done}/{r.config.get('epochs', '?')}"
        warn = "  ! " + "; ".join(r.warnings) if r.warnings else ""
        print(f"{r.run_id:<44} {r.arch:<7} {r.status:<11} {epochs:>6} {pct(r.val_acc):>8} "
              f"{pct(r.test_acc):>6} {interval(r.test_ci):>13}{warn}")
    return 0


def cmd_predict(args) -> int:
    predictor = Predictor.from_run(args.run, args.checkpoints, calibrated=args.calibrated)
    check = _Check(args)
    failed = 0
    for image in args.images:
        try:
            if image.lower().endswith(".csv"):  # Kaggle-format rows (seed 003): one result per row
                failed += _predict_csv(predictor, image, args.json, check)
                continue
            mnist_image, _ = preprocess(image)
            probs = predictor.probabilities(mnist_image)[0]
            judged = check.judge(predictor, mnist_image)
        except (ImageError, CSVFormatError) as exc:
            failed += 1
            if args.json:
                print(strict_json({"file": image, "error": str(exc)}))
            else:
                print(f"{image}: error: {exc}", file=sys.stderr)
            continue
        digit = int(probs.argmax())
        if args.json:
            print(strict_json({"file": image, "digit": digit, "probabilities": [round(float(p), 6) for p in probs],
                               **_confidences(predictor), **_ood_fields(predictor, judged, 0)}))
        else:
            print(f"{image}: {_plain(predictor, probs, judged, 0)}")
    return 1 if failed else 0


def _detector(args):
    """The run's not-a-digit detector, fitted first if it has none; None (said on stderr) if it
    cannot be had, and predictions go on without the check."""
    try:
        return detector_for(args.run, args.checkpoints, args.data,
                            report=lambda line: print(line, file=sys.stderr, flush=True))
    except LabError as exc:
        print(f"warning: no not-a-digit check: {exc}", file=sys.stderr)
        return None


class _Check:
    """The run's not-a-digit check, had when the first image has been read: a run without one has
    it fitted then (half a minute), so a command whose files are all unreadable never waits for it."""

    def __init__(self, args):
        self.args, self.had = args, False

    def judge(self, predictor: Predictor, images):
        if not self.had:
            predictor.detector, self.had = _detector(self.args), True
        return predictor.not_a_digit(images) if predictor.detector is not None else None


def _ood_fields(predictor: Predictor, judged, i: int) -> dict:
    if judged is None:
        return {"not_a_digit": None, "ood_score": None}
    scores, flags = judged
    return {"not_a_digit": bool(flags[i]), "ood_score": float(scores[i]), "ood_threshold": predictor.detector.threshold,
            "ood_detector": predictor.detector.name}


def _plain(predictor: Predictor, probs, judged, i: int) -> str:
    digit = int(probs.argmax())
    said = f"{digit} ({probs[digit] * 100:.1f}%{', calibrated' if predictor.calibrated else ''})"
    if judged is not None and judged[1][i]:
        return (f"not a digit to this model (score {judged[0][i]:.4g} above its threshold "
                f"{predictor.detector.threshold:.4g}); it would say {said}")
    return said


def _confidences(predictor: Predictor) -> dict:
    """What the JSON says of its probabilities: calibrated (by which temperature) or the model's own."""
    return {"calibrated": True, "temperature": predictor.temperature} if predictor.calibrated else {}


def _predict_csv(predictor, path: str, as_json: bool, check: _Check) -> int:
    table = read_digits_csv(path)
    images = table.images.numpy().astype("float32") / 255.0
    probs = predictor.probabilities(images)
    judged = check.judge(predictor, images)
    for row, p in enumerate(probs, start=1):
        digit = int(p.argmax())
        record = {"file": path, "row": row, "digit": digit, "probabilities": [round(float(v), 6) for v in p],
                  **_confidences(predictor), **_ood_fields(predictor, judged, row - 1)}
        if table.has_labels:
            record["label"] = int(table.labels[row - 1])
        print(strict_json(record) if as_json else f"{path} row {row}: {_plain(predictor, p, judged, row - 1)}")
    return 0


def cmd_sweep(args) -> int:
    stop = stop_on_signals()
    lrs = parse_values(args.lr, float, "learning rates (--lr)")
    sizes = parse_values(args.batch_size, int, "batch sizes (--batch-size)")
    if args.arch is None:
        raise ConfigError("--arch is required")
    base = config_from_args(args, lr=lrs[0], batch_size=sizes[0], **_absolute_csv(args))
    if args.ray is not None:  # `--ray ""` too, which is refused; only here is Ray imported (the cluster has the device)
        from core.training.raysweep import run_sweep_on_ray
        sweep_id, statuses = run_sweep_on_ray(base, lrs, sizes, args.ray, root=args.checkpoints, data_root=args.data,
                                              stop=stop, report=lambda line: print(line, file=sys.stderr, flush=True))
        print(grid_table(sweep_id, args.checkpoints).to_string())
        return 0 if all(s == "finished" for s in statuses.values()) else 3
    check_trainable(base, args.data)
    sweep_id, writers = prepare_sweep(base, lrs, sizes, root=args.checkpoints)
    print(f"sweep {sweep_id}: {len(writers)} runs", file=sys.stderr)
    run_sweep(writers, root=args.checkpoints, data_root=args.data, stop=stop,
              callback_factory=lambda: ProgressPrinter(args.quiet))
    print(grid_table(sweep_id, args.checkpoints).to_string())
    return 3 if stop.is_set() else 0  # 3: cancelled, like `train`


def cmd_search(args) -> int:
    """`search`: a new study to its budget, or (--resume) one a killed or cancelled search left."""
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.resume is not None:
        given = [flag for flag, value in (("--param", args.param), ("--trials", args.trials),
                                          ("--budget-epochs", args.budget_epochs), ("--study", args.study),
                                          ("--arch", args.arch)) if value is not None]
        if given:
            raise ConfigError(f"--resume goes on with the study as it was asked: leave out {', '.join(given)}")
        name = args.resume
        search.study_dir(name, args.checkpoints)  # a name that could leave the store is refused here
    else:
        if args.arch is None:
            raise ConfigError(f"--arch is required (one of: {', '.join(list_models())})")
        params = [search.parse_param(text) for text in args.param or []]
        both = [p.name for p in params if getattr(args, p.name, None) is not None]
        if both:  # the option would be silently overridden by every trial's own value
            flag = "--" + both[0].replace("_", "-")
            raise ConfigError(f"{flag} is searched (--param {both[0]}=...): leave {flag} out, or search another knob")
        base = config_from_args(args, seed=args.seed, **_absolute_csv(args))
        settings = search.Settings(
            study=args.study or search.default_name(base.arch), base=base.to_dict(), params=tuple(params),
            trials=args.trials, budget_epochs=args.budget_epochs, sampler=args.sampler, pruner=args.pruner,
            seed=args.seed, ray=args.ray, created=now_iso())
        search.study_dir(settings.study, args.checkpoints)
        search.check_space(base, params)
        if args.ray is None:
            check_trainable(base, args.data)  # before the study exists: bad input leaves nothing behind
        else:
            check_address(args.ray)  # an address where no Ray answers: refused before anything is made
        search.new_study(settings, args.checkpoints)
        name = settings.study
        report(f"study {name}: {base.arch}, " + ", ".join(p.text for p in params)
               + f"; {settings.sampler} sampler, {settings.pruner} pruner; budget "
               + " and ".join(b for b in (f"{args.trials} trials" if args.trials else "",
                                          f"{args.budget_epochs} epochs" if args.budget_epochs else "") if b))
    stop = stop_on_signals()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the summary's alone (Ray's driver prints its notes there)
        search.run_study(name, root=args.checkpoints, data_root=args.data, stop=stop, report=report,
                         echo=ProgressPrinter(args.quiet), ray=args.ray if args.resume is not None else None)
    result = search.summary(name, args.checkpoints)
    if args.json:
        print(strict_json(result))
    else:
        for t in result["trials"]:
            params = " ".join(f"{k}={search._fmt(v)}" for k, v in t["params"].items())
            print(f"#{t['number']:<3} {t['state']:<9} {t['epochs']:>3} epoch{'s' * (t['epochs'] != 1)}  val {tables.format_pct(t['val_acc']):>7}  "
                  f"{params}  {t['run_id'] or ''}")
        best = result["best"]
        print(f"best: trial #{best['number']}, run {best['run_id']}, validation {best['val_acc']:.2f}%" if best
              else "best: none yet (no trial finished)")
    return 3 if stop.is_set() else 0


def cmd_bench(args) -> int:
    report = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.time_to is not None and args.steps:
        raise ConfigError("--time-to and --steps are two different benchmarks: give one of them")
    if args.time_to is not None:
        result = run_race(target=args.time_to, seeds=args.seeds, recipe=args.recipe, device=args.device,
                          train_limit=args.train_limit, data_root=args.data, root=args.checkpoints, report=report,
                          val_size=args.val_size)
    elif args.onnx:
        result = onnx_costs(rounds=args.rounds, root=args.checkpoints, data_root=args.data, report=report)
    elif args.embedding:
        result = embedding_costs(root=args.checkpoints, data_root=args.data, report=report)
    elif args.flip:
        result = flip_latency(root=args.checkpoints, data_root=args.data, report=report)
    elif args.saliency:
        result = saliency_latency(repeats=args.sketch_repeats, root=args.checkpoints, data_root=args.data,
                                  report=report)
    elif args.steps:
        result = {"steps_ms": step_costs(data_root=args.data, report=report),
                  "bookkeeping_ms_per_epoch": {arch: bookkeeping_costs(arch, data_root=args.data, report=report)
                                               for arch in ("lenet", "speedrun")}}
    else:
        result = run_bench(arch=args.arch, batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
                           device=args.device, train_limit=args.train_limit, rounds=args.rounds,
                           sketch_repeats=args.sketch_repeats, data_root=args.data, root=args.checkpoints,
                           report=report)
    if args.json:
        print(strict_json(result))
    return 0


def _read_new_password() -> str:
    """Twice at a terminal (not echoed); one line from a pipe, for scripts."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    first = getpass.getpass("New owner password: ")
    if getpass.getpass("Again: ") != first:
        raise BadInput("the two passwords differ: nothing was changed")
    return first


def cmd_owner(args) -> int:
    """`owner`: where the owner's password comes from; --set keeps a new one (its hash), --clear
    forgets it, --check-listen ADDRESS refuses an address beyond this machine with none set."""
    if args.check_listen is not None:
        owner.check_listen(args.check_listen)
        return 0
    if args.set:
        path = owner.set_password(_read_new_password())
        print(f"The owner's password is set: its Argon2id hash is kept in {path} (readable by you alone).",
              file=sys.stderr)
        return 0
    if args.clear:
        gone = owner.clear()
        print(f"Forgot the owner's password ({owner.password_file()})." if gone
              else "No owner password was kept.", file=sys.stderr)
    where = owner.source()
    print({"environment": f"Owner password: from {owner.ENV_PASSWORD}, for this start.",
           "file": f"Owner password: set, kept in {owner.password_file()}.",
           None: "Owner password: not set. The lab trusts everyone who can reach it: keep it on 127.0.0.1, or "
                 + owner.HOW_TO_SET + "."}[where])
    return 0


COMMANDS = {"fetch": cmd_fetch, "models": cmd_models, "train": cmd_train, "runs": cmd_runs,
            "predict": cmd_predict, "sweep": cmd_sweep, "search": cmd_search, "bench": cmd_bench,
            "owner": cmd_owner, **REPORTS}
