"""Every config composes; a bad value in a sweep fails before any job (each bad input: test_bad_inputs.py)."""
from __future__ import annotations

import itertools

import pytest
import torch
from conftest import experiment_text

from qtha import compose
from qtha.compose import check_jobs, compose_checked, expand_sweeps, group_options
from qtha.errors import ConfigError


# model, adapter, data and experiment (~50 compositions) run in the full suite; the fast tier composes their defaults
# everywhere and each adapter in tests/adapters/.
@pytest.mark.parametrize("group", ["trainer", "logger",
                                   *(pytest.param(g, marks=pytest.mark.slow) for g in ("model", "adapter", "data", "experiment"))])
def test_every_option_of_every_group_composes(group, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(4)))
    needs = {"jsonl": [f"data.path={chat}", "data.size=1", "data.holdout_size=1", "data.test_size=1"], "cmath": ["adapter=none"]}
    for option in group_options(group):
        if group == "experiment" and "qtha.selected" in experiment_text(option):
            continue  # reads a selection's records: composed against fake ones in test_experiments.py
        job = [f"{group}={option}", "allow_hub=true", *needs.get(option, [])]
        if group == "trainer" and option == "gpu" and not torch.cuda.is_available():  # checked against the machine
            with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no such device"):
                compose_checked(job)
            continue
        assert compose_checked(job, needs_weights=False) is not None  # composition, not the hub's reachability


@pytest.mark.parametrize("launcher", ["basic", *(pytest.param(n, marks=pytest.mark.slow)
                                                 for n in ("joblib", "submitit_slurm", "joblib_local", "slurm"))])
def test_hydra_launchers_compose(launcher):
    assert check_jobs([f"hydra/launcher={launcher}"], multirun=True) == 1


@pytest.mark.slow  # every adapter × model pair (the fast tier composes each option of each group alone)
def test_adapter_model_grid_composes():
    for model, adapter in itertools.product(group_options("model"), group_options("adapter")):
        cfg = compose_checked([f"model={model}", f"adapter={adapter}", "allow_hub=true"], needs_weights=False)
        assert cfg.model.name == model and adapter.startswith(cfg.adapter.name)  # a preset names its method first


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


def test_a_registered_ansatz_is_a_valid_config_value():
    """Validation reads the ansatz registry, so register_ansatz is enough to use a new circuit."""
    from qtha.quantum import ANSATZE, register_ansatz
    from qtha.quantum.circuit import hea_ansatz, hea_weight_shape

    with pytest.raises(ConfigError, match="adapter.ansatz='hea_copy' is not allowed"):
        compose_checked(["model=tiny_llama", "adapter=qtha", "adapter.ansatz=hea_copy"])
    register_ansatz("hea_copy", hea_ansatz, hea_weight_shape)
    try:
        assert compose_checked(["model=tiny_llama", "adapter=qtha", "adapter.ansatz=hea_copy"]).adapter.ansatz == "hea_copy"
    finally:
        ANSATZE.pop("hea_copy")


def test_one_job_is_validated_once_and_its_data_file_read_once(tmp_path, monkeypatch):
    """What ``python -m qtha.run`` does per job: compose and check (once), then train (no second check)."""
    import qtha.data.source as source
    from conftest import tiny_overrides
    from qtha.train import train

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(8)))
    reads, checks = [], []
    monkeypatch.setattr(source, "read_rows", lambda p, real=source.read_rows: reads.append(p) or real(p))
    monkeypatch.setattr(compose, "check_data", lambda *a, real=compose.check_data, **k: checks.append(1) or real(*a, **k))
    args = tiny_overrides(tmp_path, "data=jsonl", f"data.path={data}", "data.size=4", "data.holdout_size=2", "data.test_size=2",
                          "trainer.max_steps=1", "eval.enabled=false")
    train(compose_checked(args), args)
    assert len(checks) == 1 and reads == [data]


def test_the_authors_recipe_trains_epochs_as_steps():
    """trainer=authors: 3 epochs over data.size rows at batch 4 x 8, 10 % warm-up (the resolved config holds steps)."""
    cfg = compose_checked(["model=tiny_llama", "trainer=authors", "data.size=3000"])
    assert (cfg.trainer.max_steps, cfg.trainer.warmup_steps, cfg.trainer.lr) == (282, 28, 5e-5)
    assert compose_checked(["model=tiny_llama", "trainer=authors", "data.size=300"]).trainer.max_steps == 29
