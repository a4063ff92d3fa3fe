"""Shared fixtures: compose the real configs and shrink them (lightning-hydra-template style)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests never touch the network or prompt for a W&B login.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A few-second run on the random tiny Llama, writing only under ``tmp_path``."""
    return [
        "model=tiny_llama", "logger=csv",
        "data.size=16", "data.test_size=4", "data.pool_size=64", "data.max_length=96",
        "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.batch_size=2",
        "trainer.warmup_steps=1", "trainer.enable_progress_bar=false", "eval.max_new_tokens=8",
        f"results_dir={tmp_path / 'results'}", f"work_dir={tmp_path / 'outputs'}", *extra,
    ]


def run_cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m qtha.run <args>`` in a clean environment: no W&B key, no hub, HOME under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "HF_"))}
    env.update(HOME=str(tmp_path / "home"), WANDB_API_KEY="", PYTHONPATH=str(REPO / "tests"))
    return subprocess.run([sys.executable, "-m", "qtha.run", *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data slices not found at {SHARED_DATA} (only CI and the team's machines have them)")
    return SHARED_DATA
