"""Shared fixtures: compose the real configs and shrink them (lightning-hydra-template style)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data slices not found at {SHARED_DATA} (only CI and the team's machines have them)")
    return SHARED_DATA
