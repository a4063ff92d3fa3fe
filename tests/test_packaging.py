"""A wheel built from the project carries the Hydra config tree and runs ``python -m qtha.run`` from any
directory, with nothing of the checkout on the path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from qtha.compose import CONF_DIR


def test_the_wheel_carries_the_configs_and_runs_from_elsewhere(tmp_path, python_process):
    if int(metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("building the wheel offline needs setuptools >= 77 in this environment")
    built = python_process(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(REPO)], cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("qtha-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    wanted = {f"qtha/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert len(wanted) > 30 and wanted <= names, sorted(wanted - names)[:5]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = archive_text(wheel, entry_points)
    assert all(f"qtha-{tool} = qtha." in scripts for tool in ("run", "eval", "report", "params", "export")), scripts

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**clean_env(tmp_path), "PYTHONPATH": str(tmp_path / "site")}
    where = python_process(["-c", "import qtha, qtha.compose as c; print(qtha.__file__); print(c.CONF_DIR)"],
                           cwd=elsewhere, env=env)
    assert where.returncode == 0 and all(line.startswith(str(tmp_path / "site")) for line in where.stdout.split())
    run = python_process(["-m", "qtha.run", "experiment=smoke", "logger=none", "trainer.max_steps=2",
                          "eval.max_new_tokens=4", "trainer.enable_progress_bar=false"], cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1][len("qtha: "):])
    assert summary["status"] == "ok" and summary["steps"] == 2
    assert (elsewhere / summary["record"]).is_file() and summary["record"].startswith(f"workspace{os.sep}runs")


def archive_text(wheel, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode()


@pytest.mark.parametrize("tool", ["run", "eval", "report", "params", "export"])
def test_console_scripts_are_installed_and_answer_help(tool, tmp_path, python_process):
    """``pip install`` puts ``qtha-<tool>`` beside the interpreter; each is its ``python -m qtha.<tool>`` command.
    (``python_process`` marks the test slow: it starts one.)"""
    script = Path(sys.executable).parent / f"qtha-{tool}"
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e . installs it)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=clean_env(tmp_path), stdin=subprocess.DEVNULL)
    out = done.stdout.lower()
    assert done.returncode == 0 and ("usage" in out or "powered by hydra" in out), done.stderr[-1000:]
