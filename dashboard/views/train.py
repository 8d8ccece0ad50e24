"""Train: configure a run from an architecture's recipe, start it as a separate process, and
watch every job (started here, by a sweep or from the CLI) by reading the run folders.

The form is TrainConfig's fields (their metadata gives the technical help and the choices and
says whether the architecture's recipe fills them; a knob's range in core.recipe.KNOBS bounds its
input), so a knob added to the config shows up here by itself, and the form, the CLI and
config.json use the same words. The essentials come first (the architecture, what its recipe
says, the epochs, a training-set limit and a name); every other field sits under one "Advanced",
each with a sentence of plain help (PLAIN) before its technical one. `?preset=quick` (the first
page's "Train a small model") fills in a small LeNet run.
"""
from __future__ import annotations

import dataclasses
import time

import streamlit as st

from core.training import jobs
from core.store import tables
from core.config import FieldSpec, TrainConfig, field_specs
from core.errors import LabError
from core.models import get_spec, list_models
from core.store.runs import is_resumable
from core.training.grids import MAX_SEEDS, parse_seeds, prepare_seeds
from core.training.loop import check_trainable
from dashboard import access
from dashboard.charts import show_history
from dashboard.inference import resume_device
from dashboard.notices import no_runs_notice, report, require_mnist, show_run_warnings
from dashboard.state import dataset_info, load_runs
from dashboard.text import md_text
from dashboard.knobs import PLAIN, float_step
from dashboard.widgets import VAL_HELP, format_seconds, status_badge, status_text

DEFAULT_ARCH = "lenet"
KEEP = {"persist_state": "session"}  # the form keeps its values while the user visits other pages
NOT_IN_FORM = ("arch",   # the selectbox above the form
               "sweep",  # set by the Sweep page
               "group",  # set by "Seeds" below the form (one group per launch)
               "study",  # set by a search (the Sweep page's Search, `python -m core search`)
               "csv")    # a path on the machine that trains: `python -m core train --csv FILE`
LABELS = {"lr": "Learning rate", "augment": "Augmentation", "ema": "Evaluate an EMA of the weights",
          "ema_decay": "EMA decay", "aug_degrees": "Rotation (degrees)", "aug_shift": "Shift (pixels)",
          "aug_zoom": "Zoom", "val_size": "Validation images", "train_limit": "Training-set limit (0 = all)",
          "name": "Run name", "bf16": "bf16 autocast", "channels_last": "channels_last",
          "compile": "torch.compile", "nesterov": "Nesterov momentum", "warmup": "Warm-up share",
          "oe_weight": "Outlier exposure weight", "beta1": "Adam beta1", "beta2": "Adam beta2",
          "step_size": "Epochs between LR drops", "gamma": "LR drop factor", "start_factor": "Starting LR share",
          "final_factor": "Final LR share", "adv_eps": "Adversarial training radius (eps)",
          "adv_steps": "Attack steps", "adv_step": "Attack step size", "adv_warmup": "Attack warm-up share"}
ESSENTIAL = ("epochs", "train_limit", "name")  # the fields above "Advanced"; the architecture comes first
AUTO = ("auto", "on", "off")  # a `bool | None` field: None lets the trainer decide (on for CUDA)


@dataclasses.dataclass(frozen=True)
class FormField(FieldSpec):
    """One TrainConfig field as the form shows it (an optional field's None is 0, "" or "auto")."""

    @property
    def key(self) -> str:   # train_epochs, train_lr, ..., train_limit (not train_train_limit)
        return "train_" + self.name.removeprefix("train_")

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def plain_help(self) -> str:
        """The widget's help: a plain sentence, then the table's technical words and the CLI option."""
        technical = f"{self.help} · `{self.flag}`" if self.help else f"`{self.flag}`"
        return f"{PLAIN[self.name]}\n\n{technical}" if self.name in PLAIN else technical

    @property
    def bounds(self) -> tuple:
        """The number input's (min, max): a knob's range (an open end's value included, so that the
        config's check names it); 0 for an optional whole number, whose 0 is None."""
        if self.knob is not None:
            return self.knob.bounds
        return (0 if self.optional and self.kind is int else None), None

    def to_widget(self, value):
        """A config value as the widget holds it."""
        if self.kind is bool and self.optional:
            return AUTO[0] if value is None else AUTO[1] if value else AUTO[2]
        if value is None:
            return 0 if self.kind is int else 0.0 if self.kind is float else ""
        return self.kind(value)

    def from_widget(self, value):
        """The widget's value as the config takes it."""
        if self.kind is bool and self.optional:
            return None if value == AUTO[0] else value == AUTO[1]
        if self.kind is str:
            value = (value or "").strip()
        if self.optional and not value:
            return None
        return self.kind(value)


def form_fields() -> list[FormField]:
    return [FormField(*(getattr(spec, f.name) for f in dataclasses.fields(FieldSpec)))
            for spec in field_specs() if spec.name not in NOT_IN_FORM]


FIELDS = form_fields()


def apply_recipe(only_missing: bool = False) -> None:
    """Write the chosen architecture's recipe into the recipe fields (all of them when the
    architecture changes; on the session's first visit, only those not set yet)."""
    recipe = get_spec(st.session_state["train_arch"]).recipe
    for f in FIELDS:
        if f.recipe and (not only_missing or f.key not in st.session_state):
            st.session_state[f.key] = f.to_widget(getattr(recipe, f.name))


def field_widget(f: FormField, where) -> None:
    common_args = {"key": f.key, "help": f.plain_help, **KEEP}
    if f.choices:
        where.selectbox(f.label, f.choices, **common_args)
    elif f.kind is bool and f.optional:
        where.selectbox(f.label, AUTO, **common_args)
    elif f.kind is bool:
        where.checkbox(f.label, **common_args)
    elif f.kind is int:
        where.number_input(f.label, step=1, min_value=f.bounds[0], max_value=f.bounds[1], **common_args)
    elif f.kind is float:
        where.number_input(f.label, step=float_step(st.session_state[f.key]), format="%g",
                           min_value=f.bounds[0], max_value=f.bounds[1], **common_args)
    else:
        where.text_input(f.label, placeholder="optional" if f.optional else "", **common_args)


def fields_in_columns(fields: list[FormField]) -> None:
    """Two columns of inputs, then the checkboxes at full width (their labels are long)."""
    boxes = [f for f in fields if f.kind is bool and not f.optional]
    columns = st.columns(2)
    for i, f in enumerate(f for f in fields if f not in boxes):
        field_widget(f, columns[i % 2])
    for f in boxes:
        field_widget(f, st)


def recipe_line(arch: str) -> str:
    return get_spec(arch).recipe.describe(" · ")


# `?preset=<name>` fills the form with these values over the architecture's recipe, once.
PRESETS = {"quick": {"arch": "lenet", "epochs": 2, "train_limit": None, "name": "my first lenet"}}
PRESET_NOTE = {"quick": "A small LeNet: two passes over the 55,000 training images, about 20 seconds on a CPU "
                        "(a minute on a busy one). Press **Start training** below."}


def apply_preset() -> None:
    """Fill the form from the URL's `?preset=` (then drop it from the URL, so a rerun keeps the
    user's edits): the preset's architecture with its whole recipe, then the preset's values."""
    name = st.query_params.get("preset")
    if name not in PRESETS:
        return
    values = dict(PRESETS[name])
    st.session_state["train_arch"] = values.pop("arch")
    apply_recipe()
    by_name = {f.name: f for f in FIELDS}
    for field, value in values.items():
        st.session_state[by_name[field].key] = by_name[field].to_widget(value)
    st.session_state["train_preset_note"] = PRESET_NOTE[name]
    del st.query_params["preset"]


def settings_form(mnist_ok: bool) -> None:
    models = list_models()
    apply_preset()
    if st.session_state.get("train_arch") not in models:
        st.session_state["train_arch"] = DEFAULT_ARCH if DEFAULT_ARCH in models else models[0]
    apply_recipe(only_missing=True)  # first visit of the session
    for f in FIELDS:
        if not f.recipe:
            st.session_state.setdefault(f.key, f.to_widget(f.default))

    if note := st.session_state.pop("train_preset_note", None):
        st.info(note, icon=":material/bolt:")
    arch = st.selectbox("Architecture", models, key="train_arch", **KEEP, on_change=apply_recipe,
                        help="The model to train. Each comes with a recipe: the settings it trains well with.")
    spec = get_spec(arch)
    st.markdown(f"**{spec.summary}**  \n"
                f":gray[from {spec.source} · its recipe reaches ≥ {spec.target:g}% test accuracy]")
    st.caption(f"Recipe: {recipe_line(arch)}")
    essential = {f.name: f for f in FIELDS if f.name in ESSENTIAL}
    for name in ESSENTIAL:
        field_widget(essential[name], st)
    with st.expander("Advanced"):
        st.caption("The recipe fills these in; change them to try something else. Hover a "
                   ":material/help: for what each does.")
        fields_in_columns([f for f in FIELDS if f.name not in ESSENTIAL])
        st.text_input("Seeds", key="train_seeds", placeholder="e.g. 0, 1, 2 (empty: one run with the seed above)",
                      help=f"Train the same settings once per seed (at most {MAX_SEEDS}), as one seed group: the "
                           f"runs queue one after another, and Compare shows the group's mean ± std", **KEEP)

    if st.button("Start training", type="primary", icon=":material/play_arrow:", width="stretch",
                 disabled=not mnist_ok or access.locked(), help=access.LOCKED_HELP if access.locked() else None):
        start(arch)
    if st.session_state.get("train_started"):
        st.success(f"Started {st.session_state['train_started']}: its card shows how it goes.",
                   icon=":material/rocket_launch:")


def start(arch: str) -> None:
    if not access.allowed("start a training"):
        return
    values = {f.name: f.from_widget(st.session_state[f.key]) for f in FIELDS}
    seeds_text = (st.session_state.get("train_seeds") or "").strip()
    try:
        seeds = parse_seeds(seeds_text) if seeds_text else None
        config = TrainConfig(arch=arch, **values)
    except LabError as exc:  # a value out of range: the message names it
        st.error(str(exc), icon=":material/error:")
        return
    if seeds is not None:
        start_seeds(config, seeds)
        return
    try:
        check_trainable(config)  # bad data or no GPU: say so, create nothing
        run_id = jobs.launch(config)
    except LabError as exc:  # e.g. an altered MNIST file, a checkpoints folder that cannot take the run
        report(exc, "Could not start the run", error=True)
        return
    st.session_state["train_started"] = f"`{run_id}`"
    st.session_state["train_show_card"] = True
    watch()
    st.toast(f"Training {arch} started", icon=":material/rocket_launch:")


def start_seeds(config: TrainConfig, seeds: list[int]) -> None:
    """One run per seed, one seed group, queued through the same jobs as a single run."""
    try:
        check_trainable(config)  # bad data or no GPU: say so, create nothing
        group, writers = prepare_seeds(config, seeds)
    except LabError as exc:
        report(exc, "Could not start the runs", error=True)
        return
    for writer in writers:
        jobs.launch_prepared(writer)
    st.session_state["train_started"] = f"seed group `{group}` ({len(writers)} runs, seeds {', '.join(map(str, seeds))})"
    st.session_state["train_show_card"] = True
    watch()
    st.toast(f"Training {config.arch} over {len(writers)} seeds", icon=":material/rocket_launch:")


# --- the live side ---------------------------------------------------------------------------

WATCH_SECONDS = 30  # after a start, resume or cancel: poll even before the job writes its status


def watch() -> None:
    """Poll the run folders for a while and redraw the whole page once, so the fragment's
    timer starts even though the new job's process has not written its status yet."""
    st.session_state["train_watch_until"] = time.time() + WATCH_SECONDS
    st.session_state["train_full_rerun"] = True


def polling_wanted(runs: list) -> bool:
    return bool(tables.active(runs)) or time.time() < st.session_state.get("train_watch_until", 0)


def cancel(run_id: str) -> None:
    if not access.allowed("cancel a job"):
        return
    try:
        stopped = jobs.cancel(run_id)
    except LabError as exc:
        st.toast(md_text(exc), icon=":material/error:")
        return
    watch()
    st.toast("Stopping…" if stopped else "That job is not running here any more",
             icon=":material/stop_circle:")


def resume(run_id: str, device: str | None = None) -> None:
    """Resume the run; `device` (dashboard.inference.resume_device) replaces one this machine lacks."""
    if not access.allowed("resume a run"):
        return
    try:
        jobs.resume(run_id, device=device)
    except LabError as exc:
        st.toast(md_text(exc), icon=":material/error:")
        return
    watch()
    st.toast(f"Resuming on {device.upper()} from its last saved epoch: this machine has no CUDA GPU"
             if device else "Resuming from its last saved epoch", icon=":material/replay:")


def resume_button(run, where, key: str) -> None:
    """Resume, or "Resume on CPU" for a run made for a GPU this machine lacks."""
    device = resume_device(run)
    where.button(f"Resume on {device.upper()}" if device else "Resume", key=key, icon=":material/replay:",
                 on_click=resume, args=(run.run_id, device), disabled=access.locked(),
                 help=(f"This run was set up for {run.config.get('device')}, which this machine does not have: "
                       f"it continues on the {device.upper()}") if device else None)


def progress_line(run) -> None:
    """Progress bar within the epoch, epoch count and ETA of a running job."""
    p = run.progress
    epochs = tables.planned_epochs(run) or p.get("epochs")
    if run.status != "running" or not p:
        message = run.status_info.get("message") or "waiting for its turn"
        st.caption(f":material/schedule: {md_text(message)}")
        return
    fraction = tables.epoch_fraction(p)
    eta = tables.eta_seconds(p, run.history, epochs)
    epoch, step, steps = (md_text(p.get(k, d)) for k, d in (("epoch", "?"), ("step", 0), ("steps", "?")))
    st.progress(fraction, text=f"Epoch {epoch}/{md_text(epochs)} · step {step}/{steps} · "
                               f"about {format_seconds(eta)} left")


# Brings the live card into view (the browser scrolls no more than needed, leaving room above the
# card for its heading); the card is the
# container keyed "train_live_card", which Streamlit gives the class st-key-train_live_card.
SCROLL_TO_CARD = """<script>
(function bring(tries) {
  const card = document.querySelector(".st-key-train_live_card");
  if (card) {  // a margin above it keeps its heading clear of the app's header
    card.style.scrollMarginTop = "6rem";
    card.scrollIntoView({block: "nearest", behavior: "instant"});
  }
  else if (tries > 0) { setTimeout(() => bring(tries - 1), 50); }
})(100);
</script>"""


def latest_run_card(run) -> None:
    with st.container(border=True, key="train_live_card"):
        head, badge = st.columns([4, 1], vertical_alignment="center")
        arch = md_text(run.arch)
        detail = f"`{run.run_id}` · {arch}" if run.name != run.run_id else arch
        head.markdown(f"#### {md_text(run.name)}\n:gray[{detail}]")
        with badge:
            status_badge(run.status)
        epochs = tables.planned_epochs(run)
        m = st.columns(4)
        m[0].metric("Test accuracy", f"{run.test_acc:.2f}%" if run.test_acc is not None else "–")
        m[1].metric("Val accuracy", f"{run.val_acc:.2f}%" if run.val_acc is not None else "–",
                    help=VAL_HELP)
        m[2].metric("Epochs", f"{run.epochs_done}/{epochs if epochs else '?'}")
        m[3].metric("Seconds / epoch", format_seconds(tables.seconds_per_epoch(run)))
        left_out = dataset_info(run).get("test_duplicates_left_out")
        if isinstance(left_out, int) and left_out > 0:
            st.caption(f":material/filter_alt: {left_out:,} training image{'s' if left_out != 1 else ''} "
                       f"identical to MNIST test images {'were' if left_out != 1 else 'was'} left out")
        if run.status in ("running", "queued"):
            progress_line(run)
        elif run.status == "failed":
            st.error(md_text(run.status_info.get("message") or "the job failed"), icon=":material/error:")
        elif run.status == "finished":
            st.markdown(f"Run **finished** with **{run.test_acc:.2f}%** test accuracy."
                        if run.test_acc is not None else "Run **finished**.")
        curves = tables.live_curves(run.history, run.progress if run.status == "running" else None)
        if len(curves):
            show_history(curves)
        elif run.status in ("running", "queued"):
            st.caption("Curves appear as soon as the first steps are done.")
        buttons = st.columns(4)
        if run.status in ("running", "queued"):
            buttons[0].button("Cancel", key=f"cancel_latest_{run.run_id}", icon=":material/stop:",
                              on_click=cancel, args=(run.run_id,), disabled=access.locked())
        if is_resumable(run):
            resume_button(run, buttons[0], f"resume_latest_{run.run_id}")


def queue_section(active: list) -> None:
    st.subheader("Queue", divider="gray")
    if not active:
        st.caption("No jobs running or queued. Jobs run one per device at a time; later ones wait here.")
        return
    for run in active:
        with st.container(border=True):
            cols = st.columns([3, 1, 1], vertical_alignment="center")
            cols[0].markdown(f"**{md_text(run.name)}** :gray[· {md_text(run.arch)} · `{run.run_id}`]")
            with cols[1]:
                status_badge(run.status)
            cols[2].button("Cancel", key=f"cancel_{run.run_id}", icon=":material/stop:",
                           on_click=cancel, args=(run.run_id,), disabled=access.locked())
            progress_line(run)


def recent_section(runs: list) -> None:
    st.subheader("Recent runs", divider="gray")
    recent = runs[:12]
    table = tables.run_table(recent)
    st.dataframe(table[["name", "arch", "status", "epochs", "val_acc", "test_acc", "sec_per_epoch"]],
                 hide_index=True, width="stretch", height=38 + 35 * len(table), placeholder="–",
                 key="train_recent", column_config={
                     "name": st.column_config.TextColumn("Name", width="large"),
                     "arch": st.column_config.TextColumn("Arch", width="small"),
                     "status": st.column_config.TextColumn("Status", width="small"),
                     "epochs": st.column_config.NumberColumn("Epochs", width="small"),
                     "val_acc": st.column_config.NumberColumn("Val", format="%.2f%%", width="small", help=VAL_HELP),
                     "test_acc": st.column_config.NumberColumn("Test", format="%.2f%%", width="small"),
                     "sec_per_epoch": st.column_config.NumberColumn("s/epoch", format="%.1f", width="small")})
    for run in [r for r in recent if is_resumable(r)]:
        cols = st.columns([4, 1], vertical_alignment="center")
        cols[0].markdown(f"{status_text(run.status)} **{md_text(run.name)}** stopped after "
                         f"{run.epochs_done} of {tables.planned_epochs(run) or '?'} epochs")
        resume_button(run, cols[1], f"resume_{run.run_id}")


def live_panel() -> None:
    """The right-hand side; while jobs are active, Streamlit reruns it alone every second. A
    full run of the page hands it the runs it just read; the timer's reruns read only the active
    runs again (dashboard.state.load_runs(active_only=True)), so a refresh costs the same with 10
    or 1,000 finished runs on disk."""
    if st.session_state.pop("train_full_rerun", False):
        st.rerun()  # a button in this fragment started or stopped a job: a full run re-arms the timer
    runs = st.session_state.pop("train_runs", None)
    if runs is None:  # the timer's rerun
        runs = load_runs(active_only=True)
    active = tables.active(runs)
    if not runs:
        no_runs_notice("No runs yet: pick an architecture on the left and press **Start training**. "
                       "The lenet recipe reaches about 99% in a few minutes on a CPU; set a "
                       "training-set limit for a quicker first look.", link_to_train=False)
        return
    show_run_warnings(runs)
    running = [r for r in active if r.status == "running"]
    latest = running[0] if running else tables.newest(runs)  # the job training now, else the newest
    st.subheader("Training now" if running else "Latest run", divider="gray")
    latest_run_card(latest)
    if st.session_state.pop("train_show_card", False):  # just started: the card may be out of view
        st.html(SCROLL_TO_CARD, unsafe_allow_javascript=True)
    queue_section(active)
    recent_section(runs)
    # Polling ends with the last active job: one full rerun drops the fragment's timer.
    if st.session_state.get("train_polling") and not polling_wanted(runs):
        st.session_state["train_polling"] = False
        st.rerun()


def page() -> None:
    st.title("Train")
    st.caption("Pick an architecture: its recipe fills the form. Training runs in its own process, so "
               "closing this tab does not stop it; runs started from the CLI show up here too.")
    mnist_ok = require_mnist("Training")
    form_column, live_column = st.columns([1, 1.7], gap="large")
    with form_column:
        settings_form(mnist_ok)
    with live_column:
        runs = load_runs()
        polling = polling_wanted(runs)
        st.session_state["train_polling"] = polling
        st.session_state["train_runs"] = runs  # for live_panel, just below
        st.session_state.pop("train_full_rerun", None)  # this is the full run
        st.fragment(live_panel, run_every=1.0 if polling else None)()


if __name__ == "__main__":  # Streamlit runs a page as __main__; scripts/bench_dashboard.py imports it
    page()
