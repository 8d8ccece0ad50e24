"""Search that learns: `python -m core search`, a study over any of the recipe's knobs.

Optuna does the searching: a sampler (TPE by default; random, for comparison) proposes each
trial's values of the searched knobs, the trial trains a run like any other (core.training.loop)
and reports the validation accuracy of its kept weights after each epoch, and a pruner (ASHA by
default; Hyperband, the median rule, or none) stops a trial that is behind the others at the
same epoch. The metric is validation accuracy: the test set chooses nothing.

A study lives in the run store, beside its runs, in `<store>/.studies/<name>/`:
- `study.journal`: Optuna's journal file, its storage. Each change (a trial asked, an epoch
  reported, a trial told) is one JSON line appended under a lock and fsynced, so another process
  (a Ray worker, a resumed driver) reads every change made before. A write cut short (a full
  disk, a kill mid-write) leaves at most a partial last line: the next driver cuts it off
  before reading (`repair_tail`); a file damaged anywhere else is refused in one line.
- `settings.json`: how the study was asked for (written once, atomically): the base config,
  the searched knobs, the sampler, pruner, seed and budget. `search --resume NAME` reads it.
- `status.json`: the driver's last word (running, finished, cancelled, failed); `lock`: held by
  the driver while it runs, so a second driver is refused and a dead one is seen as such.

Each trial is a run (`config.study` names its study, its name is "<study> #<number>"), whose
id the trial keeps as the user attribute `run_id`. A pruned trial's run ends 'cancelled' with the
message "pruned by study ...", its weights kept as at the epoch it stopped at.

What a killed driver leaves: trials Optuna still lists as running. The next driver (`--resume`)
adopts each one (`optuna.trial.Trial` on its id): it reports the epochs the run finished that the
journal missed, then resumes the run from its last finished epoch (train_state.pt) or, where the
run had finished or been pruned, only tells the study. No trial is asked twice and none is lost;
what a kill costs is the epoch in progress.

Budget: `trials` (trials asked, whatever their end) and/or `budget_epochs` (epochs trained, summed
over trials: the journal's reported epochs). No trial starts once either is spent, and a trial
that reaches the epoch budget stops there (pruned, "the study's budget is spent"), so a study
trains exactly its budget (with trials in parallel on Ray: up to one epoch more per trial running).

On a Ray cluster (`--ray ADDRESS`) the driver asks the trials and sends each to a Ray task (1 CPU,
or a share of a GPU), up to as many at once as the cluster has CPUs for them: the workers train
and report to the one journal file in the shared run store, the driver tells the study each end.
Optuna workers sharing one storage rather than Ray Tune: Ray Tune is not in the core Ray package
this lab installs (its extras bring pyarrow and more), it would keep its own copy of each trial
beside the run store, and the lab's runs, resume and retry (core.training.raysweep) already do
what Tune's trial runner would. A worker killed mid-trial is retried by Ray (max_retries) and
the retry resumes the run from its last finished epoch, as a grid's trial does.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.config import ConfigError, TrainConfig
from core.errors import Cancelled, LabError
from core.fsio import atomic_write_json
from core.recipe import KNOB, KNOBS
from core.store.folder import (LOCK_NAME, Busy, RunError, RunLock, checkpoints_dir, lock_held, now_iso, read_json,
                               read_json_checked, read_owner)
from core.store.runs import Run, load_run
from core.store.writer import RunWriter
from core.training.jobs import signal_owner, spawn
from core.training.loop import check_trainable, prepare_run, train
from core.training.rayaddress import check_address

STUDIES = ".studies"              # <store>/.studies/<name>/
JOURNAL = "study.journal"
SETTINGS = "settings.json"
STATE = "status.json"
DRIVER_LOG = "driver.log"         # the output of a driver the dashboard started
SAMPLERS = ("tpe", "random")
PRUNERS = ("asha", "hyperband", "median", "none")
NOT_SEARCHED = ("epochs",)        # a trial's length: the pruner decides how much of it a trial gets
MAX_TRIALS = 1000
MAX_PARAMS = 12
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRUNED = "pruned by study"        # how a pruned trial's run message begins
BUDGET = "the study's budget of"  # ...and one stopped by the epoch budget
STARTUP_TRIALS = 5                # the median rule and TPE's random start: trials before they act


class SearchError(LabError):
    """The study cannot go on (its file damaged, another driver on it, a disk that fails)."""


# --- the searched knobs -----------------------------------------------------------------------

def searchable() -> list[str]:
    return [k.name for k in KNOBS if k.name not in NOT_SEARCHED]


@dataclass(frozen=True)
class Param:
    """One searched knob: a range (`low`..`high`, on a log scale or not) or a list of `choices`."""
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    @property
    def text(self) -> str:
        """As the command line writes it: lr=0.001:1:log, optimizer=sgd,adam."""
        if self.choices:
            return f"{self.name}=" + ",".join(str(c).lower() if isinstance(c, bool) else f"{c:g}"
                                              if isinstance(c, float) else str(c) for c in self.choices)
        return f"{self.name}={self.low:g}:{self.high:g}" + (":log" if self.log else "")

    @property
    def values(self) -> tuple:
        """The values that bound the space: the ends of a range, every choice."""
        return self.choices or (self.low, self.high)

    def suggest(self, trial):
        """Optuna's suggestion for `trial` (an adopted trial gets back the value it was given)."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if KNOB[self.name].kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_dict(self) -> dict:
        return {"name": self.name, **({"choices": list(self.choices)} if self.choices else
                                      {"low": self.low, "high": self.high, "log": self.log})}

    @classmethod
    def from_dict(cls, data: dict) -> "Param":
        return cls(data["name"], data.get("low"), data.get("high"), bool(data.get("log")),
                   tuple(data.get("choices") or ()))


def _value(text: str, kind: type, where: str):
    text = text.strip()
    if kind is bool:
        if text.lower() in ("true", "yes", "on", "1"):
            return True
        if text.lower() in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{where}: {text!r} is not true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not a whole number") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {text!r} is not a finite number")
        return value
    return text


def parse_param(text: str) -> Param:
    """'lr=0.001:1:log' or 'optimizer=sgd,adam' -> Param; ConfigError, one line naming the knob
    and its bounds, if the knob is unknown or the range one it cannot take."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    where = f"--param {text.strip()}"
    if not sep or not name or not spec.strip():
        raise ConfigError(f"{where}: write NAME=LOW:HIGH, NAME=LOW:HIGH:log or NAME=A,B,C")
    if name in NOT_SEARCHED:
        raise ConfigError(f"{where}: epochs is each trial's length, not a knob to search (give --epochs; "
                          "the pruner decides how many of them a poor trial gets)")
    knob = KNOB.get(name)
    if knob is None:
        raise ConfigError(f"{where}: {name!r} is not a knob of the recipe; searchable: {', '.join(searchable())}")
    if ":" in spec:
        if knob.choices or knob.kind is bool:
            options = "|".join(knob.choices or ("true", "false"))
            raise ConfigError(f"{where}: {name} takes one of {options}, not a range: write {name}=A,B")
        parts = [p.strip() for p in spec.split(":")]
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
            raise ConfigError(f"{where}: write {name}=LOW:HIGH or {name}=LOW:HIGH:log")
        low, high = (_value(p, knob.kind, where) for p in parts[:2])
        for end in (low, high):
            if (problem := knob.problem(end)) is not None:
                raise ConfigError(f"{where}: {problem}")
        if not low < high:
            raise ConfigError(f"{where}: the low end must be below the high end")
        log = len(parts) == 3 and parts[2] == "log"
        if log and low <= 0:
            raise ConfigError(f"{where}: a log scale needs a low end above 0")
        return Param(name, low, high, log)
    values = []
    for part in spec.split(","):
        if not part.strip():
            continue
        value = _value(part, knob.kind, where)
        if (problem := knob.problem(value)) is not None:
            raise ConfigError(f"{where}: {problem}")
        if value not in values:
            values.append(value)
    if len(values) < 2:
        raise ConfigError(f"{where}: give two or more values to search, or set {name} with --{name.replace('_', '-')}")
    return Param(name, choices=tuple(values))


def check_space(base: TrainConfig, params: list[Param]) -> None:
    """Refuse, before any trial, a space some of whose values the recipe cannot take with the
    others: every bounding value of each knob, with the base's other knobs (adv_steps searched
    while adv_eps is off would change nothing, and is refused as `train` refuses it)."""
    if not params:
        raise ConfigError("give at least one knob to search: --param NAME=LOW:HIGH[:log] or --param NAME=A,B,C")
    if len(params) > MAX_PARAMS:
        raise ConfigError(f"a study searches at most {MAX_PARAMS} knobs, got {len(params)}")
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--param {twice[0]} is given twice")
    for param in params:
        for value in param.values:
            try:
                base.replace(**{param.name: value})
            except ConfigError as exc:
                raise ConfigError(f"--param {param.text}: {exc}") from None


# --- where a study lives ------------------------------------------------------------------------

def study_dir(name: str, root=None) -> Path:
    """<store>/.studies/<name>; a name that could leave that folder is refused."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise ConfigError(f"a study name is 1..64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                          f"(it names a folder in the run store), got {name!r}")
    return checkpoints_dir(root) / STUDIES / name


def study_names(root=None) -> list[str]:
    """The studies in the store, newest first."""
    base = checkpoints_dir(root) / STUDIES
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and NAME.match(p.name) and (p / SETTINGS).is_file()]
    return [p.name for p in sorted(found, key=lambda p: (p / SETTINGS).stat().st_mtime, reverse=True)]


@dataclass(frozen=True)
class Settings:
    """How a study was asked for: what `search --resume` needs to go on."""
    study: str
    base: dict                      # the base TrainConfig (to_dict) every trial starts from
    params: tuple[Param, ...]
    trials: int | None = None
    budget_epochs: int | None = None
    sampler: str = "tpe"
    pruner: str = "asha"
    seed: int = 0
    ray: str | None = None
    created: str = ""

    def __post_init__(self) -> None:
        if self.trials is None and self.budget_epochs is None:
            raise ConfigError("give a budget: --trials N, --budget-epochs E, or both")
        for flag, value, top in (("--trials", self.trials, MAX_TRIALS), ("--budget-epochs", self.budget_epochs, None)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                                      or (top is not None and value > top)):
                raise ConfigError(f"{flag} must be a whole number 1..{top:,}, got {value!r}" if top else
                                  f"{flag} must be a whole number of at least 1, got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.base)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "params": [p.to_dict() for p in self.params], "format": 1}

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        given["params"] = tuple(Param.from_dict(p) for p in data.get("params", []))
        return cls(**given)


def read_settings(folder: Path) -> Settings:
    data, problem = read_json_checked(folder / SETTINGS)
    if data is None:
        raise SearchError(f"study {folder.name!r}: its {SETTINGS} cannot be read ({problem}); its runs stay "
                          "readable in the runs list")
    try:
        return Settings.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchError(f"study {folder.name!r}: its {SETTINGS} is damaged ({str(exc).splitlines()[0]}); "
                          "its runs stay readable in the runs list") from None


def repair_tail(journal: Path) -> int:
    """Cut a partial last line (a write cut short) off the journal; return the bytes cut. Only a
    driver holding the study's lock calls it: no one else writes then."""
    try:
        with open(journal, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            keep = 0
            step = 1 << 16
            end = size
            while end > 0 and not keep:  # the last newline, read backwards in blocks
                start = max(0, end - step)
                f.seek(start)
                block = f.read(end - start)
                at = block.rfind(b"\n")
                if at >= 0:
                    keep = start + at + 1
                end = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return size - keep
    except FileNotFoundError:
        return 0


def _optuna():
    import optuna  # heavy (sqlalchemy, alembic): only a study loads it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(folder: Path):
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
    path = str(folder / JOURNAL)
    # the open-lock (a lock file made with O_EXCL) works on NFS too, where the run store of a Ray cluster lives
    return optuna, JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def pruner(name: str):
    optuna = _optuna()
    if name == "asha":  # Li et al. 2020: rungs at 1, 3, 9, ... epochs, the best third goes on
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def sampler(name: str, seed: int, told: int, parallel: bool):
    """The study's sampler, seeded by the study's seed and the number of trials already asked,
    so a resumed driver does not draw again what the first one drew."""
    optuna = _optuna()
    seed = (seed + 7919 * told) % (2**32)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=parallel)


def open_study(folder: Path, settings: Settings, *, parallel: bool = False):
    """The study in `folder` with its pruner (and a sampler for a driver); a damaged journal is
    refused in one line."""
    try:
        optuna, storage = _storage(folder)
        study = optuna.load_study(study_name=settings.study, storage=storage, pruner=pruner(settings.pruner))
        told = len(study.get_trials(deepcopy=False))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SearchError(f"study {settings.study!r}: its file {folder / JOURNAL} is damaged "
                          f"({str(exc).splitlines()[0] or type(exc).__name__}); its runs stay readable in the runs "
                          "list: start a new study") from None
    study.sampler = sampler(settings.sampler, settings.seed, told, parallel)
    return study


# --- one trial: where it trains (this process, or a Ray worker) ---------------------------------

@dataclass
class Outcome:
    number: int
    state: str                  # finished | pruned | failed | cancelled
    run_id: str | None = None
    value: float | None = None  # the validation accuracy of its kept weights (finished)
    why: str = ""


def spent_epochs(study) -> int:
    """Epochs trained in the study so far: every trial's reported epochs."""
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


class _Reporter:
    """The trial's callback: each finished epoch's validation accuracy to the study; pruned, or
    at the end of the epoch budget, it stops the run there (Cancelled with the reason)."""

    def __init__(self, study, trial, settings: Settings, echo: Callable | None):
        self.study, self.trial, self.settings, self.echo = study, trial, settings, echo
        self.stopped: str | None = None  # "pruned" or "budget"

    def __call__(self, event) -> None:
        if self.echo is not None:
            self.echo(event)
        if event.kind != "epoch" or not math.isfinite(event.val_acc):
            return
        self.trial.report(event.val_acc, event.epoch)
        if event.epoch < event.epochs and self.trial.should_prune():
            self.stopped = "pruned"
            raise Cancelled(f"{PRUNED} {self.settings.study!r} after epoch {event.epoch} "
                            f"(validation {event.val_acc:.2f}%, behind the study's other trials there)")
        budget = self.settings.budget_epochs
        if budget is not None and event.epoch < event.epochs and spent_epochs(self.study) >= budget:
            self.stopped = "budget"
            raise Cancelled(f"{PRUNED} {self.settings.study!r} after epoch {event.epoch}: "
                            f"{BUDGET} {budget} epochs is spent")


def _adopt(study, trial, frozen, run: Run, settings: Settings) -> Outcome | None:
    """A trial a dead driver left running, whose run exists: tell what the run already says
    (finished, pruned) or report the epochs the journal missed; None: train on."""
    done = frozen.intermediate_values
    for row in run.history.itertuples():
        if int(row.epoch) not in done and math.isfinite(float(row.val_acc)):
            trial.report(float(row.val_acc), int(row.epoch))
    if run.status == "finished":
        return Outcome(frozen.number, "finished", run.run_id, run.val_acc)
    message = str(run.status_info.get("message", ""))
    if run.status == "cancelled" and message.startswith(PRUNED):
        return Outcome(frozen.number, "pruned", run.run_id, run.val_acc, message)
    return None


def run_trial(folder: str, number: int, root=None, data_root=None, stop: threading.Event | None = None,
              echo: Callable | None = None, queue: bool = True,
              on_run: Callable[[str, int | None], None] | None = None) -> Outcome:
    """Train trial `number` of the study in `folder` to its end, pruned or not: create its run,
    or adopt the run of an attempt that died (a killed driver, a lost Ray worker). The study is
    told nothing here: the driver tells it (`Driver.tell`). `on_run(run_id, resumed_after)` is
    called before training (resumed_after: the epochs the adopted run had, else None)."""
    folder = Path(folder)
    settings = read_settings(folder)
    study = open_study(folder, settings)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    optuna = _optuna()
    trial = optuna.trial.Trial(study, frozen._trial_id)
    values = {p.name: p.suggest(trial) for p in settings.params}
    run_id = frozen.user_attrs.get("run_id")
    try:
        cfg = settings.config.replace(**values, study=settings.study, name=f"{settings.study} #{number}")
    except ConfigError as exc:  # these values together: refused as `train` would refuse them
        return Outcome(number, "failed", run_id, why=str(exc))
    writer, resume = None, False
    if run_id is not None:
        try:
            run = load_run(run_id, root)
        except RunError:
            run = None  # deleted meanwhile: the trial trains a new run
        if run is not None:
            told = _adopt(study, trial, frozen, run, settings)
            if told is not None:
                return told
            resume = True
            if trial.should_prune() and run.epochs_done < cfg.epochs:
                return _prune_adopted(run, settings, number)
    if not resume:
        check_trainable(cfg, data_root)
        writer = prepare_run(cfg, root=root)
        run_id = writer.run_id
        trial.set_user_attr("run_id", run_id)
    if on_run is not None:
        on_run(run_id, run.epochs_done if resume else None)
    reporter = _Reporter(study, trial, settings, echo)
    status = train(run_id, root=root, data_root=data_root, callback=reporter, stop=stop, resume=resume,
                   writer=writer, queue=queue)
    run = load_run(run_id, root)
    if status == "finished":
        return Outcome(number, "finished", run_id, run.val_acc)
    if reporter.stopped is not None:
        return Outcome(number, "pruned", run_id, run.val_acc, str(run.status_info.get("message", "")))
    return Outcome(number, "cancelled", run_id)


def _prune_adopted(run: Run, settings: Settings, number: int) -> Outcome:
    """An adopted trial whose reported epochs the pruner now stops: its run ends cancelled, as
    it would have."""
    epoch = run.epochs_done
    why = f"{PRUNED} {settings.study!r} after epoch {epoch} (validation {run.val_acc:.2f}%, behind the study's " \
          "other trials there)"
    writer = RunWriter(run.run_id, run.path.parent, RunLock.claim(run.path))
    try:
        writer.cancel(why)
    finally:
        writer.release()
    return Outcome(number, "pruned", run.run_id, run.val_acc, why)


# --- the driver: ask, send, tell ------------------------------------------------------------

class LocalTrials:
    """Trials trained one after another in this process."""
    parallel = 1

    def __init__(self, folder: Path, root, data_root, stop: threading.Event, echo: Callable | None):
        self.folder, self.root, self.data_root, self.stop, self.echo = folder, root, data_root, stop, echo
        self.waiting: list[int] = []

    def free(self) -> bool:
        return not self.waiting

    def submit(self, number: int) -> None:
        self.waiting.append(number)

    def busy(self) -> bool:
        return bool(self.waiting)

    def next_end(self) -> Outcome:
        number = self.waiting.pop(0)
        return run_trial(str(self.folder), number, self.root, self.data_root, self.stop, self.echo)

    def close(self) -> None:
        pass


class Driver:
    """Runs a study to its budget: adopts the trials a dead driver left, asks new ones while the
    budget lasts, and tells the study how each one ended."""

    def __init__(self, folder: Path, settings: Settings, trials, report: Callable[[str], None]):
        self.folder, self.settings, self.trials, self.report = folder, settings, trials, report
        self.study = open_study(folder, settings, parallel=trials.parallel > 1)

    def budget_left(self) -> bool:
        asked = len(self.study.get_trials(deepcopy=False))
        if self.settings.trials is not None and asked >= self.settings.trials:
            return False
        budget = self.settings.budget_epochs
        if budget is not None:
            running = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING")
            if spent_epochs(self.study) + running >= budget:  # each running trial trains one more epoch at least
                return False
        return True

    def tell(self, outcome: Outcome) -> None:
        optuna = _optuna()
        state = optuna.trial.TrialState
        if outcome.state == "cancelled":  # left running: `--resume` adopts it and goes on from its last epoch
            return
        trial = next(t for t in self.study.get_trials(deepcopy=False) if t.number == outcome.number)
        if outcome.why:
            optuna.trial.Trial(self.study, trial._trial_id).set_user_attr("why", outcome.why)
        if outcome.state == "finished" and outcome.value is not None:
            self.study.tell(outcome.number, outcome.value)
        elif outcome.state == "pruned":
            self.study.tell(outcome.number, state=state.PRUNED)
        else:
            self.study.tell(outcome.number, state=state.FAIL)
        line = f"trial {outcome.number} ({outcome.run_id or 'no run'}): {outcome.state}"
        if outcome.value is not None:
            line += f", validation {outcome.value:.2f}%"
        params = trial.params
        line += "  " + " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        if outcome.state == "failed" and outcome.why:
            line += f"  ({outcome.why})"
        self.report(line)

    def run(self, stop: threading.Event) -> None:
        for frozen in self.study.get_trials(deepcopy=False):
            if frozen.state.name == "RUNNING":
                self.report(f"trial {frozen.number}: adopted from a driver that stopped")
                self.trials.submit(frozen.number)
        while not stop.is_set():
            while self.trials.free() and not stop.is_set() and self.budget_left():
                self.trials.submit(self.study.ask().number)
            if not self.trials.busy():
                return
            outcome = self.trials.next_end()
            if outcome.state == "cancelled" and not stop.is_set():  # its run alone was cancelled (its Cancel button)
                outcome.state, outcome.why = "failed", "its run was cancelled while the study went on"
            self.tell(outcome)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _claim(folder: Path, name: str) -> RunLock:
    try:
        return RunLock.claim(folder)
    except Busy:
        owner = read_json(folder / STATE) or {}
        raise SearchError(f"study {name!r} is being run by another driver (pid {owner.get('pid', '?')} on "
                          f"{owner.get('host', '?')}): wait for it, or cancel it first") from None


def _set_state(folder: Path, state: str, message: str = "") -> None:
    atomic_write_json(folder / STATE, {"status": state, "pid": os.getpid(), "host": socket.gethostname(),
                                       "updated": now_iso(), "message": message})


def new_study(settings: Settings, root=None) -> Path:
    """Create the study's folder and settings; a name already taken is refused (resume it instead)."""
    folder = study_dir(settings.study, root)
    check_space(settings.config, list(settings.params))
    if folder.exists():
        raise ConfigError(f"study {settings.study!r} exists: `search --resume {settings.study}` goes on with it, "
                          "or give another --study")
    folder.mkdir(parents=True)
    optuna, storage = _storage(folder)
    optuna.create_study(study_name=settings.study, storage=storage, direction="maximize")
    atomic_write_json(folder / SETTINGS, settings.to_dict())  # last: a study is listed once it can be opened
    return folder


def default_name(arch: str) -> str:
    return f"{arch}-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def run_study(name: str, root=None, data_root=None, stop: threading.Event | None = None,
              report: Callable[[str], None] = print, echo: Callable | None = None, ray: str | None = None):
    """Run (or go on with) the study `name` in the store to its budget, holding its lock; return
    the study. `stop` set (SIGTERM, Ctrl-C, Cancel) ends it after the trial in progress saves."""
    stop = stop or threading.Event()
    folder = study_dir(name, root)
    if not (folder / SETTINGS).is_file():
        raise ConfigError(f"no study {name!r} in {checkpoints_dir(root) / STUDIES}"
                          + (f" (there: {', '.join(study_names(root)[:8])})" if study_names(root) else ""))
    lock = _claim(folder, name)
    try:
        settings = read_settings(folder)
        cut = repair_tail(folder / JOURNAL)
        if cut:
            report(f"study {name}: cut {cut} bytes of a write cut short off the end of its journal")
        address = ray if ray is not None else settings.ray
        _set_state(folder, "running")
        if address:
            from core.training.raysearch import RayTrials  # heavy: Ray loads only for a study on a cluster
            trials = RayTrials(address, folder, settings, root, data_root, stop, report)
        else:
            trials = LocalTrials(folder, root, data_root, stop, echo)
        try:
            driver = Driver(folder, settings, trials, report)
            driver.run(stop)
        except BaseException as exc:
            _set_state(folder, "cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed",
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        finally:
            trials.close()
        _set_state(folder, "cancelled" if stop.is_set() else "finished")
        return driver.study
    finally:
        lock.release()


# --- what a study holds, for the command's summary and the page -------------------------------

def study_state(name: str, root=None) -> str:
    """running (a driver holds it), finished, cancelled, failed, or interrupted (its driver died)."""
    folder = study_dir(name, root)
    if lock_held(folder):
        return "running"
    state = (read_json(folder / STATE) or {}).get("status", "interrupted")
    return "interrupted" if state == "running" else state


def load_study(name: str, root=None):
    """The study, read-only (no sampler needed): for summaries and the page."""
    folder = study_dir(name, root)
    settings = read_settings(folder)
    return settings, open_study(folder, settings)


def trial_rows(study, live: bool = True) -> list[dict]:
    """One dict per trial: number, run_id, state (finished | pruned | failed | running, or for a
    study no driver runs (`live` False) interrupted: `--resume` goes on with it), epochs trained,
    val_acc (the kept weights' validation accuracy: the last reported), params, curve
    ({epoch: val_acc}), why."""
    rows = []
    going = "running" if live else "interrupted"
    names = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": going, "WAITING": going}
    for t in study.get_trials(deepcopy=False):
        curve = dict(sorted(t.intermediate_values.items()))
        value = t.value if t.state.name == "COMPLETE" else (curve[max(curve)] if curve else None)
        rows.append({"number": t.number, "run_id": t.user_attrs.get("run_id"), "state": names.get(t.state.name, "failed"),
                     "epochs": len(curve), "val_acc": value, "params": dict(t.params), "curve": curve,
                     "why": t.user_attrs.get("why", "")})
    return rows


def importances(study) -> dict[str, float]:
    """Each searched knob's share of the differences between the finished trials' validation
    accuracies, by Optuna's fANOVA evaluator (a random forest over the knobs, Hutter et al. 2014),
    largest first; SearchError, one line, if it cannot be computed (too few or identical trials)."""
    optuna = _optuna()
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise SearchError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return {name: float(value) for name, value in found.items()}


def summary(name: str, root=None) -> dict:
    """The `--json` object: study, state, trials (number, run_id, state, epochs, val_acc, params),
    best (run_id, val_acc, params, number) or None, and the epochs spent."""
    settings, study = load_study(name, root)
    state = study_state(name, root)
    rows = trial_rows(study, live=state == "running")
    finished = [r for r in rows if r["state"] == "finished" and r["val_acc"] is not None]
    best = max(finished, key=lambda r: (r["val_acc"], -r["number"]), default=None)
    return {"study": name, "state": state, "arch": settings.base.get("arch"),
            "sampler": settings.sampler, "pruner": settings.pruner, "epochs_spent": sum(r["epochs"] for r in rows),
            "trials": [{k: r[k] for k in ("number", "run_id", "state", "epochs", "val_acc", "params")} for r in rows],
            "best": None if best is None else {k: best[k] for k in ("number", "run_id", "val_acc", "params")}}


# --- from the dashboard: start a study's driver, cancel it ------------------------------------

def launch(settings: Settings, root=None, data_root=None):
    """Create the study and start its driver (`python -m core search --resume NAME`) in its own
    process, its output in <study>/driver.log; return the process. Everything about the request
    is checked before the study exists (the knobs, the data, a Ray address)."""
    config = settings.config
    study_dir(settings.study, root)
    check_space(config, list(settings.params))
    if settings.ray:
        check_address(settings.ray)
    else:
        check_trainable(config, data_root)
    folder = new_study(settings, root)
    data_args = ["--data", str(Path(data_root).resolve())] if data_root else []
    return spawn(["--checkpoints", str(checkpoints_dir(root).resolve()), *data_args, "search", "--resume",
                  settings.study, "--quiet"], log_path=folder / DRIVER_LOG)


def cancel(name: str, root=None) -> bool:
    """SIGTERM to the driver running the study (only the holder of its lock, through a pidfd): the
    trial in progress saves its run and stays in the study for `--resume`. False if none runs it."""
    folder = study_dir(name, root)
    pid = read_owner(folder / LOCK_NAME) if lock_held(folder) else None
    return pid is not None and signal_owner(folder, pid)
