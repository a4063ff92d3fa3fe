"""Every config composes; a bad value in a sweep fails before any job (each bad input: test_bad_inputs.py)."""
from __future__ import annotations

import itertools

import pytest

from qtha.compose import check_jobs, compose_checked, expand_sweeps, group_options
from qtha.errors import ConfigError


@pytest.mark.parametrize("group", ["model", "adapter", "data", "trainer", "logger", "experiment"])
def test_every_option_of_every_group_composes(group, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(4)))
    needs = {"jsonl": [f"data.path={chat}", "data.size=1", "data.holdout_size=1"], "cmath": ["adapter=none"]}
    for option in group_options(group):
        cfg = compose_checked([f"{group}={option}", "allow_hub=true", *needs.get(option, [])])
        assert cfg is not None


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_slurm", "joblib_local", "slurm"])
def test_hydra_launchers_compose(launcher):
    assert check_jobs([f"hydra/launcher={launcher}"], multirun=True) == 1


def test_adapter_model_grid_composes():
    for model, adapter in itertools.product(group_options("model"), group_options("adapter")):
        cfg = compose_checked([f"model={model}", f"adapter={adapter}", "allow_hub=true"])
        assert cfg.model.name == model and cfg.adapter.name == adapter


def test_defaults_are_the_embedded_offline_run():
    cfg = compose_checked([])
    assert cfg.model.name == "smollm2_135m" and cfg.model.source == "gguf"
    assert cfg.adapter.name == "lora" and list(cfg.adapter.target_modules) == ["q_proj", "v_proj"]
    assert cfg.adapter.rank == 4 and cfg.data.name == "synthetic_math"
    assert cfg.logger.kind == "wandb" and cfg.logger.mode == "offline"
    assert cfg.trainer.max_steps > 0


def test_sweep_expansion_matches_hydra_order():
    jobs = expand_sweeps(["adapter=lora,none", "data.size=300,3000"])
    assert jobs == [["adapter=lora", "data.size=300"], ["adapter=lora", "data.size=3000"],
                    ["adapter=none", "data.size=300"], ["adapter=none", "data.size=3000"]]


def test_bad_value_in_the_middle_of_a_sweep_fails_before_any_job():
    with pytest.raises(ConfigError, match="adapter='bogus' is unknown"):
        check_jobs(["adapter=lora,bogus,none", "data.size=300"], multirun=True)
