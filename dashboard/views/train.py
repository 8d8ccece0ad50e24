"""Train: configure a run from an architecture's recipe, start it as a separate process, and
watch every job (started here, by a sweep or from the CLI) by reading the run folders."""
from __future__ import annotations

import time

import streamlit as st

from core import explore, jobs
from core.config import AUGMENTS, DEVICES, OPTIMIZERS, SCHEDULES, ConfigError, TrainConfig
from core.models import get_spec, list_models
from core.runs import RunError, load_run
from dashboard import common

DEFAULT_ARCH = "lenet"
KEEP = {"persist_state": "session"}  # the form keeps its values while the user visits other pages
# Recipe field -> widget key: changing the architecture writes its recipe into these.
RECIPE_KEYS = {"epochs": "train_epochs", "batch_size": "train_batch_size", "lr": "train_lr",
               "optimizer": "train_optimizer", "schedule": "train_schedule", "augment": "train_augment",
               "momentum": "train_momentum", "weight_decay": "train_weight_decay",
               "label_smoothing": "train_label_smoothing", "ema": "train_ema"}


def apply_recipe(only_missing: bool = False) -> None:
    recipe = get_spec(st.session_state["train_arch"]).recipe
    for field, key in RECIPE_KEYS.items():
        if not only_missing or key not in st.session_state:
            st.session_state[key] = getattr(recipe, field)


def recipe_line(arch: str) -> str:
    return get_spec(arch).recipe.describe(" · ")


def settings_form(mnist_ok: bool) -> None:
    models = list_models()
    if st.session_state.get("train_arch") not in models:
        st.session_state["train_arch"] = DEFAULT_ARCH if DEFAULT_ARCH in models else models[0]
    apply_recipe(only_missing=True)  # first visit of the session
    st.session_state.setdefault("train_limit", 0)
    st.session_state.setdefault("train_device", "auto")
    st.session_state.setdefault("train_seed", 0)

    arch = st.selectbox("Architecture", models, key="train_arch", **KEEP, on_change=apply_recipe)
    spec = get_spec(arch)
    st.markdown(f"**{spec.summary}**  \n"
                f":gray[from {spec.source} · its recipe reaches ≥ {spec.target:g}% test accuracy]")
    st.caption(f"Recipe: {recipe_line(arch)}")

    left, right = st.columns(2)
    # No help tooltips on these: their "Help for <label>" buttons would make a browser test's
    # get_by_label("Epochs") ambiguous. The captions say what a tooltip would.
    left.number_input("Epochs", step=1, key="train_epochs", **KEEP)
    right.number_input("Batch size", step=16, key="train_batch_size", **KEEP)
    left.number_input("Learning rate", step=0.0005, format="%g", key="train_lr", **KEEP)
    right.selectbox("Optimizer", OPTIMIZERS, key="train_optimizer", **KEEP)
    left.selectbox("Schedule", SCHEDULES, key="train_schedule", **KEEP)
    right.selectbox("Augmentation", AUGMENTS, key="train_augment", **KEEP)
    left.selectbox("Device", DEVICES, key="train_device", **KEEP)
    right.number_input("Training-set limit (0 = all)", min_value=0, step=1000, key="train_limit",
                       **KEEP)
    st.text_input("Run name", key="train_name", **KEEP, placeholder="optional, e.g. baseline")
    st.caption("Learning rate is the peak one (schedules scale it); augmentation runs on the device; "
               "device auto takes the GPU if there is one; a training-set limit trains on the first N "
               "images of the training split, for quick experiments.")
    with st.expander("More options"):
        a, b = st.columns(2)
        a.number_input("Momentum", step=0.05, format="%g", key="train_momentum", **KEEP, help="SGD only")
        b.number_input("Weight decay", step=0.0001, format="%g", key="train_weight_decay", **KEEP)
        a.number_input("Label smoothing", step=0.05, format="%g", key="train_label_smoothing", **KEEP)
        b.number_input("Seed", min_value=0, step=1, key="train_seed", **KEEP,
                       help="one seed for weights, shuffling and the train/validation split")
        st.checkbox("Evaluate an EMA of the weights", key="train_ema", **KEEP)

    if st.button("Start training", type="primary", icon=":material/play_arrow:", width="stretch",
                 disabled=not mnist_ok):
        start(arch)
    if st.session_state.get("train_started"):
        st.success(f"Started `{st.session_state['train_started']}`: follow it on the right.",
                   icon=":material/rocket_launch:")


def start(arch: str) -> None:
    s = st.session_state
    try:
        config = TrainConfig(
            arch=arch, epochs=s["train_epochs"], batch_size=s["train_batch_size"], lr=float(s["train_lr"]),
            optimizer=s["train_optimizer"], schedule=s["train_schedule"], augment=s["train_augment"],
            momentum=float(s["train_momentum"]), weight_decay=float(s["train_weight_decay"]),
            label_smoothing=float(s["train_label_smoothing"]), ema=bool(s["train_ema"]),
            seed=s["train_seed"], device=s["train_device"], train_limit=s["train_limit"] or None,
            name=(s.get("train_name") or "").strip() or None)
    except ConfigError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    try:
        run_id = jobs.launch(config)
    except (RunError, OSError) as exc:
        st.error(f"Could not start the run: {exc}", icon=":material/error:")
        return
    s["train_started"] = run_id
    watch()
    st.toast(f"Training {arch} started", icon=":material/rocket_launch:")


# --- the live side ---------------------------------------------------------------------------

WATCH_SECONDS = 30  # after a start, resume or cancel: poll even before the job writes its status


def watch() -> None:
    """Poll the run folders for a while and redraw the whole page once, so the fragment's
    timer starts even though the new job's process has not written its status yet."""
    st.session_state["train_watch_until"] = time.time() + WATCH_SECONDS
    st.session_state["train_full_rerun"] = True


def polling_wanted(runs: list) -> bool:
    return bool(explore.active(runs)) or time.time() < st.session_state.get("train_watch_until", 0)


def cancel(run_id: str) -> None:
    try:
        stopped = jobs.cancel(run_id)
    except RunError as exc:
        st.toast(str(exc), icon=":material/error:")
        return
    watch()
    st.toast("Stopping…" if stopped else "That job is not running here any more",
             icon=":material/stop_circle:")


def resume(run_id: str) -> None:
    try:
        jobs.resume(run_id)
    except RunError as exc:
        st.toast(str(exc), icon=":material/error:")
        return
    watch()
    st.toast("Resuming from its last saved epoch", icon=":material/replay:")


def progress_line(run) -> None:
    """Progress bar within the epoch, epoch count and ETA of a running job."""
    p = run.progress
    epochs = explore.planned_epochs(run) or p.get("epochs")
    if run.status != "running" or not p:
        message = run.status_info.get("message") or "waiting for its turn"
        st.caption(f":material/schedule: {message}")
        return
    fraction = explore.epoch_fraction(p)
    eta = explore.eta_seconds(p, run.history, epochs)
    st.progress(fraction, text=f"Epoch {p.get('epoch', '?')}/{epochs} · step {p.get('step', 0)}/"
                               f"{p.get('steps', '?')} · about {common.format_seconds(eta)} left")


def latest_run_card(run) -> None:
    with st.container(border=True):
        head, badge = st.columns([4, 1], vertical_alignment="center")
        detail = f"`{run.run_id}` · {run.arch}" if run.name != run.run_id else run.arch
        head.markdown(f"#### {run.name}\n:gray[{detail}]")
        with badge:
            common.status_badge(run.status)
        epochs = explore.planned_epochs(run)
        m = st.columns(4)
        m[0].metric("Test accuracy", f"{run.test_acc:.2f}%" if run.test_acc is not None else "–")
        m[1].metric("Val accuracy (kept weights)", f"{run.val_acc:.2f}%" if run.val_acc is not None else "–")
        m[2].metric("Epochs", f"{run.epochs_done}/{epochs if epochs else '?'}")
        m[3].metric("Seconds / epoch", common.format_seconds(explore.seconds_per_epoch(run)))
        if run.status in ("running", "queued"):
            progress_line(run)
        elif run.status == "failed":
            st.error(run.status_info.get("message") or "the job failed", icon=":material/error:")
        elif run.status == "finished":
            st.markdown(f"Run **finished** with **{run.test_acc:.2f}%** test accuracy."
                        if run.test_acc is not None else "Run **finished**.")
        curves = explore.live_curves(run.history, run.progress if run.status == "running" else None)
        if len(curves):
            common.show_history(curves)
        elif run.status in ("running", "queued"):
            st.caption("Curves appear as soon as the first steps are done.")
        buttons = st.columns(4)
        if run.status in ("running", "queued"):
            buttons[0].button("Cancel", key=f"cancel_latest_{run.run_id}", icon=":material/stop:",
                              on_click=cancel, args=(run.run_id,))
        if explore.is_resumable(run):
            buttons[0].button("Resume", key=f"resume_latest_{run.run_id}", icon=":material/replay:",
                              on_click=resume, args=(run.run_id,))


def queue_section(active: list) -> None:
    st.subheader("Queue", divider="gray")
    if not active:
        st.caption("No jobs running or queued. Jobs run one per device at a time; later ones wait here.")
        return
    for run in active:
        with st.container(border=True):
            cols = st.columns([3, 1, 1], vertical_alignment="center")
            cols[0].markdown(f"**{run.name}** :gray[· {run.arch} · `{run.run_id}`]")
            with cols[1]:
                common.status_badge(run.status)
            cols[2].button("Cancel", key=f"cancel_{run.run_id}", icon=":material/stop:",
                           on_click=cancel, args=(run.run_id,))
            progress_line(run)


def recent_section(runs: list) -> None:
    st.subheader("Recent runs", divider="gray")
    recent = runs[:12]
    table = explore.run_table(recent)
    st.dataframe(table[["name", "arch", "status", "epochs", "val_acc", "test_acc", "sec_per_epoch"]],
                 hide_index=True, width="stretch", height=38 + 35 * len(table), placeholder="–",
                 key="train_recent", column_config={
                     "name": st.column_config.TextColumn("Name", width="large"),
                     "arch": st.column_config.TextColumn("Arch", width="small"),
                     "status": st.column_config.TextColumn("Status", width="small"),
                     "epochs": st.column_config.NumberColumn("Epochs", width="small"),
                     "val_acc": st.column_config.NumberColumn("Val", format="%.2f%%", width="small", help="validation accuracy of the kept weights"),
                     "test_acc": st.column_config.NumberColumn("Test", format="%.2f%%", width="small"),
                     "sec_per_epoch": st.column_config.NumberColumn("s/epoch", format="%.1f", width="small")})
    for run in [r for r in recent if explore.is_resumable(r)]:
        cols = st.columns([4, 1], vertical_alignment="center")
        cols[0].markdown(f"{common.status_text(run.status)} **{run.name}** stopped after "
                         f"{run.epochs_done} of {explore.planned_epochs(run) or '?'} epochs")
        cols[1].button("Resume", key=f"resume_{run.run_id}", icon=":material/replay:",
                       on_click=resume, args=(run.run_id,))


def live_panel() -> None:
    if st.session_state.pop("train_full_rerun", False):
        st.rerun()  # a button in this fragment started or stopped a job: a full run re-arms the timer
    runs = common.load_runs()
    active = explore.active(runs)
    if not runs:
        common.no_runs_notice("No runs yet: pick an architecture on the left and press **Start training**. "
                              "The lenet recipe reaches about 99% in a few minutes on a CPU; set a "
                              "training-set limit for a quicker first look.", link_to_train=False)
        return
    common.show_run_warnings(runs)
    running = [r for r in active if r.status == "running"]
    latest = running[0] if running else explore.newest(runs)  # the job training now, else the newest
    st.subheader("Training now" if running else "Latest run", divider="gray")
    latest_run_card(latest)
    queue_section(active)
    recent_section(runs)
    # Polling ends with the last active job: one full rerun drops the fragment's timer.
    if st.session_state.get("train_polling") and not polling_wanted(runs):
        st.session_state["train_polling"] = False
        st.rerun()


st.title("Train")
st.caption("Pick an architecture: its recipe fills the form. Training runs in its own process, so "
           "closing this tab does not stop it; runs started from the CLI show up here too.")
mnist_ok = common.require_mnist("Training")
form_column, live_column = st.columns([1, 1.7], gap="large")
with form_column:
    settings_form(mnist_ok)
with live_column:
    polling = polling_wanted(common.load_runs())
    st.session_state["train_polling"] = polling
    st.session_state.pop("train_full_rerun", None)  # this is the full run
    st.fragment(live_panel, run_every=1.0 if polling else None)()
