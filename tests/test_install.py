"""The project is installed (`make install` runs `pip install -e .`): the `mnist-lab` command is
`python -m core`, and `core` and `dashboard` import from this checkout whatever the working
directory, with nothing on PYTHONPATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DATA, REPO

BIN = Path(sys.executable).parent  # the venv's bin/, where pip puts console scripts


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**clean, "COLUMNS": "100", **env})


@pytest.fixture(scope="module")
def mnist_lab() -> str:
    script = BIN / "mnist-lab"
    if not script.is_file():
        pytest.fail(f"{script} is missing: `make install` installs the project (pip install -e .)")
    return str(script)


@pytest.mark.slow
def test_mnist_lab_models_is_python_m_core_models(mnist_lab, tmp_path):
    installed = run([mnist_lab, "models"], cwd=tmp_path)  # elsewhere: only the install can serve it
    module = run([sys.executable, "-m", "core", "models"], cwd=REPO)
    assert installed.returncode == module.returncode == 0, installed.stderr + module.stderr
    assert installed.stdout == module.stdout and "lenet" in installed.stdout


@pytest.mark.slow
def test_mnist_lab_help_is_python_m_core_help(mnist_lab, tmp_path):
    installed = run([mnist_lab, "--help"], cwd=tmp_path)
    module = run([sys.executable, "-m", "core", "--help"], cwd=REPO)
    assert installed.returncode == module.returncode == 0
    assert installed.stdout == module.stdout
    for command in ("fetch", "models", "train", "runs", "predict", "sweep", "bench"):
        assert command in installed.stdout


@pytest.mark.slow
def test_mnist_lab_exits_with_the_clis_status(mnist_lab, tmp_path):
    proc = run([mnist_lab, "--checkpoints", str(tmp_path), "train", "--arch", "alexnet"], cwd=tmp_path)
    assert proc.returncode == 2  # core.cli.main's return value, not 0 or 1
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1 and "lenet" in proc.stderr


def test_packages_import_from_this_checkout_anywhere(tmp_path):
    """The editable install points at this checkout (a venv shared by two clones must not serve
    the other one's code), and installs only `core` and `dashboard`, not `tests`."""
    code = ("import importlib.util, core, dashboard\n"
            "print(core.__file__); print(dashboard.__file__)\n"
            "print(importlib.util.find_spec('tests'))")
    proc = run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    core_file, dashboard_file, tests_spec = proc.stdout.splitlines()
    stale = f"the install serves {core_file}, not this checkout's: run `make install`"
    assert Path(core_file) == REPO / "core" / "__init__.py", stale
    assert Path(dashboard_file) == REPO / "dashboard" / "__init__.py", stale
    assert tests_spec == "None"


@pytest.mark.slow
def test_the_dashboard_starts_from_another_directory(tmp_path):
    """`streamlit run /path/to/dashboard/app.py` from elsewhere: the router and the first page
    import `core` and `dashboard` from the install (AppTest in a fresh process, cwd elsewhere)."""
    (tmp_path / "checkpoints").mkdir()
    code = ("from streamlit import config\n"
            "config.set_option('server.address', '127.0.0.1')\n"  # as `streamlit run --server.address 127.0.0.1`
            "from streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({str(REPO / 'dashboard' / 'app.py')!r}, default_timeout=120).run()\n"
            "assert not at.exception, [e.value for e in at.exception]\n"
            "print(at.title[0].value)")
    # no .streamlit/config.toml there: the address is given as `--server.address` would (without one
    # Streamlit listens on every interface, and the lab stays closed with no owner password)
    proc = run([sys.executable, "-c", code], cwd=tmp_path, MNIST_LAB_CHECKPOINTS=str(tmp_path / "checkpoints"),
               MNIST_LAB_DATA=str(DATA), MNIST_LAB_HANDWRITING=str(tmp_path / "handwriting"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "MNIST Lab"  # the first page, at "/"
