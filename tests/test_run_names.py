"""Run names (and other text from run folders) are shown as typed, never as Markdown (issue 19):
dashboard.text.md_text, and the pages' Markdown sources seen through AppTest. What the
browser makes of those sources is tested in tests/e2e/test_names_browser.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.text import md_text
from tests.helpers import REPO, shown

HOSTILE = "[click me](https://evil.example/x) :red[!] **bold** <b>x</b> $x$"
MLP = "20261123-223318-mlp-reference"
LENET = "20261123-223418-lenet-reference"  # created after MLP: the Train page's newest run
APP = REPO / "dashboard" / "app.py"
TIMEOUT = 60


@pytest.mark.parametrize("text", [
    HOSTILE,
    ":smile: :material/star: :material_star: :streamlit: a -> b -- c >= d <-> e",
    "www.evil.example, WWW.x.com, a@b.com, https://evil.example, mailto:a@b.c, <https://a.b>",
    "# heading", "- item", "1. item", "2) item", "> quote", "---", "===", "| a | b |",
    r"a\b `code` ~~strike~~ _em_ *em* &amp; :blue-badge[x] ::x:: a\: b end:",
    "line one\n1. second\n- third",
    "t10k-labels-idx1-ubyte, member_archs, 'quoted' (10000, 9) 50% a/b",
])
def test_md_text_reads_as_typed(text):
    escaped = md_text(text)
    assert shown(escaped) == text
    assert "](" not in escaped.replace("\\](", "")       # no link
    assert "<" not in escaped.replace("\\<", "")         # no tag, no <autolink>
    assert "://" not in escaped and "www." not in escaped.lower()  # no bare address either


def test_md_text_keeps_plain_text_plain():
    """Words, digits and the punctuation that cannot start anything stay as they are, so a
    message keeps its wording in the page's source (and in the other tests' substring checks)."""
    for text in ("lenet reference", "tiny mlp", "20261123-223418-lenet-reference",
                 "left out run 'x': it was tested on (10000, 9) images", "member_archs, 0.01; 50% a/b?"):
        assert md_text(text) == text
    assert md_text(HOSTILE) == (r"\[click me\](https\::small[]//evil.example/x) \::small[]red\[\!\] "
                                r"\*\*bold\*\* \<b\>x\</b\> \$x\$")


def hostile_copy(root: Path, name: str = HOSTILE) -> Path:
    """Copies of the shipped mlp and lenet reference runs in `root`; the lenet copy is made the
    user's own (no reference.json) and renamed to `name`."""
    from core.store.runs import rename_run
    for run_id in (MLP, LENET):
        shutil.copytree(REPO / "checkpoints" / run_id, root / run_id)
    (root / LENET / "reference.json").unlink()
    rename_run(LENET, name, root)
    return root


@pytest.fixture
def store(lab_env, tmp_path) -> Path:
    return lab_env(hostile_copy(tmp_path / "runs"))


def open_page(page: str, run: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if run:
        at.query_params["run"] = run
    at.switch_page(f"views/{page}.py").run()  # "/" is the first page
    assert not at.exception, [e.value for e in at.exception]
    return at


def sources(at: AppTest) -> list[str]:
    """Every Markdown source on the page: text elements, alerts, tab labels, toasts."""
    out = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success", "toast"):
        out += [str(element.value) for element in getattr(at, kind)]
    return out + [t.label for t in at.tabs]


def assert_no_raw(at: AppTest, raw: str = "[click me](https://evil.example/x)") -> None:
    leaked = [s for s in sources(at) if raw in s]
    assert not leaked, leaked


def test_mistakes_against_another_run_escapes_both_names(store):
    at = open_page("mistakes", run=LENET)
    assert at.selectbox(key="mis_run").value == LENET
    escaped, other = md_text(HOSTILE), "mlp reference"
    labels = [t.label for t in at.tabs]
    assert labels[0].startswith(f"{escaped} wrong, {other} right (")
    assert labels[1].startswith(f"{other} wrong, {escaped} right (")
    assert shown(labels[0]).startswith(f"{HOSTILE} wrong, {other} right (")  # reads as typed
    assert any(f"what changes from **{escaped}** to **{other}**" in s for s in sources(at))
    assert any(s.startswith("Mistakes: ") and f" for {escaped}, " in s for s in sources(at))
    assert_no_raw(at)


def test_train_names_the_newest_run_as_text(store):
    at = open_page("train")
    assert any(s.startswith(f"#### {md_text(HOSTILE)}\n") for s in sources(at))
    assert_no_raw(at)


def test_compare_delete_warning_and_rename_toast_show_the_name_as_text(store):
    at = open_page("compare")
    assert at.selectbox(key="compare_manage_run").value == LENET  # the only run of the user's own
    next(b for b in at.button if b.label == "Delete…").click().run()
    assert any(w.value.startswith(f"Delete **{md_text(HOSTILE)}** (`{LENET}`)") for w in at.warning)
    next(b for b in at.button if b.label == "Keep it").click().run()
    at.text_input(key=f"compare_name_{LENET}").set_value(HOSTILE + " 2")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert [t.value for t in at.toast] == [f"Renamed to {md_text(HOSTILE + ' 2')}"]
    assert_no_raw(at)


def test_embedding_names_a_run_without_a_map_as_text(store):
    (store / LENET / "embedding-umap.safetensors").unlink()
    at = open_page("embedding", run=LENET)
    assert any(f"map of **{md_text(HOSTILE)}** is not computed yet" in i.value for i in at.info)
    assert_no_raw(at)


def test_run_folder_warnings_quote_values_as_text(store):
    """config.json's value quoted in the damaged-runs warning is shown as text."""
    path = store / MLP / "config.json"
    config = json.loads(path.read_text())
    config["epochs"] = "[x](https://evil.example/y)"
    path.write_text(json.dumps(config))
    at = open_page("compare")
    (warning,) = [w.value for w in at.warning if MLP in w.value]
    quoted = "config.json's epochs is '[x](https://evil.example/y)', not a whole number"
    assert md_text(quoted) in warning and quoted in shown(warning)
    assert_no_raw(at, "[x](https://evil.example/y)")


def test_ensemble_save_error_quotes_the_rejected_name_as_text(store):
    at = open_page("evaluate")
    at.multiselect(key="eval_ens_members").set_value([MLP, LENET]).run()
    bad = "[x](https://evil.example/z)\tname"  # a tab: not printable, so refused by name
    at.text_input(key="eval_ens_name").set_value(bad)
    next(b for b in at.button if b.key == "eval_ens_save").click().run()
    (error,) = [e.value for e in at.error]
    assert error.startswith("Could not save the ensemble: ") and repr(bad) in shown(error)
    assert_no_raw(at, "[x](https://evil.example/z)")


def report_script():
    from core.errors import LabError
    from dashboard.notices import report
    report(LabError("run '[x](https://evil.example/w)' is bad"), "**a run**")


def test_report_shows_a_lab_errors_message_as_text():
    at = AppTest.from_function(report_script, default_timeout=TIMEOUT).run()
    assert [w.value for w in at.warning] == [r"**a run**: run '\[x\](https\::small[]//evil.example/w)' is bad"]
