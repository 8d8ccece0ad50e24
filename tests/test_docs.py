"""The documentation: the MkDocs site builds with --strict (no broken link, anchor, page or included
table), and the README stays a short page whose relative links all lead somewhere."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

README = REPO / "README.md"
MAX_README_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def test_the_docs_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is missing: `make install-dev` installs requirements-dev.txt")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, f"`python -m mkdocs build --strict` failed:\n{build.stdout}{build.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    # the generated tables are included into their pages, not left as include lines
    training = (tmp_path / "site" / "training" / "index.html").read_text()
    assert "--8&lt;--" not in training and "--8<--" not in training and "speedrun995" in training


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, \
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the detail into docs/"


def test_every_relative_link_in_the_readme_leads_to_a_file():
    targets = [t for t in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:|#", t)]
    assert targets, "the README links to no docs page"
    missing = [t for t in targets if not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to paths that do not exist: {missing}"
