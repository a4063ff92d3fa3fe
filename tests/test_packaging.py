"""A wheel built from the project carries the Hydra config tree and runs ``python -m qtha.run`` from any
directory, with nothing of the checkout on the path."""
from __future__ import annotations

import json
import os
import zipfile
from importlib import metadata

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
