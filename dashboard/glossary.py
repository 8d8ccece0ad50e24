"""Plain words beside every figure: for each technical figure the pages show (an interval, a
p-value, ECE, a temperature, the not-a-digit score, eps, PGD, AUROC, ...) one sentence a student
can read, and the section of the docs (docs/glossary.md) that says more.

Pages use `caption(key)` (the sentence and a "what is this?" link, under a figure), `help_text(key)`
(the same for a widget's or a metric's `help=` tooltip) or `sentence(key)` / `link(key)` to build
their own text. tests/test_glossary.py checks that every link names an existing docs page and anchor.

Where the links go: the docs are an MkDocs site, which `make docs` serves on http://127.0.0.1:8000
(the dashboard's Streamlit server does not serve them, so a link relative to the dashboard would
land on its "page not found"; the project has no published repository address to point a GitHub
link at). So links go to the docs site at $MNIST_LAB_DOCS_URL, by default the address `make docs`
serves; a deployment that publishes the docs elsewhere sets the variable. The sentence itself is
always on the page, so the link is only for more.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import streamlit as st

DOCS_URL = "http://127.0.0.1:8000"  # what `make docs` serves; $MNIST_LAB_DOCS_URL overrides it


class Entry(NamedTuple):
    term: str      # the figure's name as the pages show it
    sentence: str  # one plain sentence a student can read
    anchor: str    # its section in docs/glossary.md (the heading's id as MkDocs makes it)


PAGE = "glossary.md"  # every entry's section is on this docs page

ENTRIES: dict[str, Entry] = {
    "interval": Entry(
        "95% interval",
        "If the model were tested on another 10,000 digits like these, its accuracy would land in this range "
        "95 times out of 100; the narrower, the surer the figure.",
        "95-interval"),
    "p_value": Entry(
        "p-value",
        "How often a difference at least this large would turn up by luck if the two models were in fact "
        "equally good; below 0.05 is the usual bar for calling it real.",
        "p-value"),
    "holm": Entry(
        "Holm correction",
        "When many pairs are tested at once, some look different by luck alone; the Holm correction raises "
        "each p-value to allow for that, so a corrected p is larger than the pair's own.",
        "holm-correction"),
    "ece": Entry(
        "ECE",
        "Expected calibration error: how far the model's confidence is, on average, from how often it is "
        "right (0 is perfect; 0.02 means off by about two points).",
        "ece-expected-calibration-error"),
    "temperature": Entry(
        "temperature",
        "One number the model's scores are divided by before they become probabilities: above 1 makes it "
        "less sure of itself (it was over-confident), below 1 more sure.",
        "temperature"),
    "ood_score": Entry(
        "not-a-digit score",
        "How unlike a digit the drawing looks to this model's not-a-digit check; higher is stranger, and "
        "above the model's threshold it is not a digit to this model.",
        "not-a-digit-score-and-threshold"),
    "ood_threshold": Entry(
        "not-a-digit threshold",
        "The threshold is the score above which an image counts as not a digit, set so that 99 of every 100 "
        "real digits the model was checked on stay below it.",
        "not-a-digit-score-and-threshold"),
    "weak_check": Entry(
        "weak not-a-digit check",
        "A model whose check was measured to catch fewer than 90 of 100 non-digits (the lab's target) will "
        "often name a digit for a letter or a scribble: do not trust its \"it is a digit\".",
        "a-weak-check"),
    "eps": Entry(
        "eps",
        "How far an attack may change each pixel, on a scale where 0 is black and 1 is white: eps 0.1 lets "
        "each pixel move by at most a tenth of its range.",
        "eps"),
    "fgsm": Entry(
        "FGSM",
        "The quickest attack: one step that moves every pixel by eps in the direction that most raises the "
        "model's error.",
        "fgsm"),
    "pgd": Entry(
        "PGD",
        "A stronger attack: many small steps, each kept within eps of the original image; PGD-50x10 means "
        "50 steps, tried from 10 random starts, and the model must survive every one.",
        "pgd"),
    "auroc": Entry(
        "AUROC",
        "The chance that a random non-digit gets a higher not-a-digit score than a random real digit: "
        "1 is a perfect check, 0.5 a coin toss.",
        "auroc"),
    "fpr95": Entry(
        "FPR at 95% TPR",
        "The share of real digits wrongly called not a digit when the threshold is set to catch 95 of 100 "
        "non-digits; lower is better.",
        "fpr-at-95-tpr"),
    "corruption": Entry(
        "corruption error",
        "Accuracy on test digits damaged in everyday ways (noise, blur, rotation, fog...) instead of by an "
        "attacker; what it loses against the clean accuracy is the corruption error.",
        "corruption-error"),
    "unit": Entry(
        "channel (unit)",
        "One detector of a layer: a small map (a channel) or one number (a unit of a dense layer) saying how "
        "strongly, and where, it found its pattern in the digit; black is 0 on every map.",
        "channel-or-unit"),
    "penultimate": Entry(
        "penultimate features",
        "The numbers the model computes just before its last layer: its own summary of the digit, from which "
        "the last layer only weighs the ten answers.",
        "penultimate-features"),
    "knn_vote": Entry(
        "nearest-digit vote",
        "The training digits whose penultimate features are closest to the input's vote for a digit; when the "
        "vote and the model disagree, the model reads the input unlike anything it learnt from.",
        "nearest-digit-vote"),
    "margin_loss": Entry(
        "margin loss",
        "A second way to aim an attack (push the true digit's score below the best other digit's), tried to "
        "make sure the usual attack was not simply fooled by the model.",
        "margin-loss"),
    "pruned": Entry(
        "pruned",
        "A trial the study stopped after an epoch or two because its validation accuracy was behind the other "
        "trials' at the same epoch: its compute goes to more promising values instead.",
        "pruned-trial"),
    "tpe": Entry(
        "TPE",
        "The way the study picks the next values to try: it favours values like those of its best trials so far "
        "and unlike those of its worst, after a few trials picked at random.",
        "tpe-tree-structured-parzen-estimator"),
    "importance": Entry(
        "importance",
        "How much of the differences in validation accuracy between the trials each knob explains: a knob near 0 "
        "barely mattered in the ranges tried.",
        "parameter-importance"),
}

FRACTIONS = {0.05: "a twentieth", 0.1: "a tenth", 0.2: "a fifth", 0.25: "a quarter", 0.3: "three tenths",
             0.5: "half"}


def docs_url() -> str:
    """The docs site's address: $MNIST_LAB_DOCS_URL, else what `make docs` serves."""
    return (os.environ.get("MNIST_LAB_DOCS_URL") or DOCS_URL).rstrip("/")


def url(key: str) -> str:
    """The address of the entry's section of the docs (MkDocs makes glossary.md /glossary/)."""
    return f"{docs_url()}/{PAGE.removesuffix('.md')}/#{ENTRIES[key].anchor}"


def sentence(key: str) -> str:
    return ENTRIES[key].sentence


def link(key: str) -> str:
    """A Markdown "what is this?" link to the entry's docs section."""
    return f"[what is this?]({url(key)})"


def plain(key: str) -> str:
    """The sentence and its link, as Markdown: what `caption` and `help_text` show."""
    return f"{sentence(key)} {link(key)}"


def help_text(key: str, before: str = "") -> str:
    """A `help=` tooltip: `before` (what the figure is here), then the plain sentence and the link."""
    return f"{before}\n\n{plain(key)}" if before else plain(key)


def caption(key: str, figure: str | None = None) -> None:
    """Under a figure: "**figure**: the plain sentence (what is this?)"."""
    lead = f"**{figure}**: " if figure else f"**{ENTRIES[key].term}**: "
    st.caption(lead + plain(key))


def captions(*keys: str) -> None:
    """Several entries' sentences in one caption, each with its term and link."""
    st.caption("  \n".join(f"**{ENTRIES[k].term}**: {plain(k)}" for k in keys))


def eps_words(eps: float) -> str:
    """eps as a student reads it: "each pixel may move by at most a tenth of its range"."""
    if eps == 0:
        return "no pixel may move: the clean image"
    share = FRACTIONS.get(round(float(eps), 4)) or f"{float(eps):g}"
    return f"each pixel may move by at most {share} of its range"
