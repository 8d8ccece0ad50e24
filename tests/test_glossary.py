"""Plain words beside every figure (dashboard/glossary.py): every entry's "what is this?" link leads
to an existing section of the docs site, and the pages that show a figure show its sentence and link
(Evaluate's calibration, Robustness's eps, attacks and corruptions, Sketch's not-a-digit verdict and
its weak checks), on copies of the shipped reference runs."""
from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from urllib.parse import urlparse

import markdown
import numpy as np
import pytest
import yaml

from core.store.reference import reference_ids
from core.store.runs import load_run
from dashboard import glossary
from tests.helpers import REPO

SHIPPED = REPO / "checkpoints"
DOCS = REPO / "docs"


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name == "id" and value)


def page_ids(page: str) -> set[str]:
    """The element ids of a docs page as MkDocs renders it: Python-Markdown with the toc extension
    mkdocs.yml configures (the same code makes the headings' anchors in the built site)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert "toc" in str(config["markdown_extensions"])
    parser = _Ids()
    parser.feed(markdown.markdown((DOCS / page).read_text(), extensions=["toc", "tables"]))
    return parser.ids


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return [p for item in node for p in nav_pages(item)]


def test_every_entry_links_to_an_existing_docs_section():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert glossary.PAGE in nav_pages(config["nav"]), "the glossary page is in the docs' navigation"
    assert config.get("use_directory_urls", True), "the links assume MkDocs' page/ URLs"
    ids = page_ids(glossary.PAGE)
    for key, entry in glossary.ENTRIES.items():
        address = urlparse(glossary.url(key))
        assert f"{address.scheme}://{address.netloc}" == glossary.DOCS_URL
        assert address.path == "/glossary/" and address.fragment == entry.anchor
        assert entry.anchor in ids, f"{key}: docs/glossary.md has no section #{entry.anchor} (it has {sorted(ids)})"
        # the section says what the page says: its first paragraph starts with the same sentence
        assert entry.sentence in " ".join((DOCS / glossary.PAGE).read_text().split()), key


def test_the_docs_address_follows_the_environment(monkeypatch):
    monkeypatch.setenv("MNIST_LAB_DOCS_URL", "https://lab.example/docs/")
    assert glossary.url("eps") == "https://lab.example/docs/glossary/#eps"
    assert glossary.link("eps") == "[what is this?](https://lab.example/docs/glossary/#eps)"


def test_eps_in_words():
    assert glossary.eps_words(0.1) == "each pixel may move by at most a tenth of its range"
    assert glossary.eps_words(0.3) == "each pixel may move by at most three tenths of its range"
    assert glossary.eps_words(0.15) == "each pixel may move by at most 0.15 of its range"


# --- the pages ---------------------------------------------------------------------------------

def shown(at) -> str:
    """Every caption, Markdown and widget help on the page, whitespace collapsed."""
    parts = [str(e.value) for kind in ("caption", "markdown", "info") for e in getattr(at, kind)]
    parts += [str(getattr(w, "help", "") or "") for kind in ("metric", "toggle", "select_slider") for w in getattr(at, kind)]
    return " ".join(" ".join(parts).split())


def says(text: str, key: str) -> bool:
    """The page shows the entry's sentence with its "what is this?" link."""
    return glossary.sentence(key) in text and glossary.url(key) in text


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Copies of the shipped reference runs of mlp and lenet (reports, calibration, checks kept)."""
    root = tmp_path_factory.mktemp("glossary-runs")
    ids = {}
    for run_id in reference_ids(SHIPPED):
        run = load_run(run_id, SHIPPED)
        if run.arch in ("mlp", "lenet") and not run.config.get("sweep"):
            shutil.copytree(SHIPPED / run_id, root / run_id)
            ids[run.arch] = run_id
    assert set(ids) == {"mlp", "lenet"}
    return root, ids


def test_evaluate_says_what_ece_temperature_and_the_interval_are(lab_env, shipped):
    from tests.test_app import open_page
    root, ids = shipped
    lab_env(root)
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(ids["lenet"]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = shown(at)
    for key in ("ece", "temperature", "interval"):
        assert says(text, key), key


def test_robustness_says_what_eps_the_attacks_and_corruptions_are(lab_env, shipped):
    from tests.test_app import open_page
    root, ids = shipped
    lab_env(root)
    at = open_page("robustness")
    assert not at.exception, [e.value for e in at.exception]
    text = shown(at)
    for key in ("eps", "fgsm", "pgd", "corruption", "margin_loss"):
        assert says(text, key), key
    assert "eps 0.1: each pixel may move by at most a tenth of its range." in text  # the gallery's default eps


def test_compare_says_what_a_p_value_holms_correction_and_the_interval_are(lab_env, shipped):
    from tests.test_app import open_page
    root, _ = shipped
    lab_env(root)
    at = open_page("compare")
    assert not at.exception, [e.value for e in at.exception]
    text = shown(at)
    for key in ("p_value", "holm", "interval"):
        assert says(text, key), key


def test_sketch_says_not_a_digit_in_words_and_flags_the_weak_check(lab_env, shipped, drawn):
    """A drawn hash: lenet's check (measured at 94.5%) is trusted, mlp's (62.5%) is flagged weak on
    its row; a row that says "Not a digit to this model" comes with the sentence saying what that
    means; the measurements' table says what AUROC and FPR at 95% TPR are."""
    from core.notadigit import detector as ood
    from core.notadigit.nondigits import make_set
    from dashboard.notadigit import WEAK_BELOW, held_out_flagged
    from tests.test_app import open_page, pad_drawing
    root, ids = shipped
    lab_env(root)
    others = make_set(b"")
    drawn.value = pad_drawing((others.images[list(others.names).index("shape hash #0")] * 255).astype(np.uint8))
    at = open_page("sketch")
    assert not at.exception, [e.value for e in at.exception]
    bodies = " ".join(element.proto.body for element in at.get("html"))
    rows = re.findall(r'<div class="sk-card[^"]*">(.*?)</p>', bodies)
    assert len(rows) == 2, rows
    for arch, run_id in ids.items():
        found, _ = ood.read_kept(run_id, root)
        weak = held_out_flagged(found) < WEAK_BELOW   # the oracle: the check's own kept measurement
        assert weak == (arch == "mlp")
        [row] = [r for r in rows if f" · {arch} · " in r]
        assert ('class="sk-flag"' in row and "weak check" in row) == weak, (arch, row)
    text = shown(at)
    assert says(text, "weak_check")
    assert ("Not a digit to this model" in bodies) == says(text, "ood_score")
    assert "Not a digit to this model" in bodies  # a hash is not a digit to one of them at least
    for key in ("auroc", "fpr95"):
        assert says(text, key), key
