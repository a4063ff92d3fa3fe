"""Run identity = experiment + hash of the resolved semantic config (SPEC §6), never the command's spelling."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path


from conftest import tiny_overrides
from qtha import compose
from qtha.compose import compose_checked
from qtha.identity import LABEL_CHARS, config_hash, label, semantic
from qtha.train import train


@functools.lru_cache(maxsize=None)  # a pure function of its overrides: each spelling composed once
def _hash(*overrides: str) -> str:
    return config_hash(compose_checked(["model=tiny_llama", *overrides]))


def test_two_spellings_of_one_config_are_one_identity():
    assert _hash("adapter=qtha", "data.size=300") == _hash("data.size=300", "adapter=qtha")
    assert _hash("data.size=11", "data.size=16") == _hash("data.size=16")     # the last value is the one used
    assert _hash("trainer.max_steps=60") == _hash()                            # the default, spelled out
    assert _hash("experiment=smoke") == _hash("experiment=smoke", "model=tiny_llama", "trainer.max_steps=10")


def test_what_changes_a_number_changes_the_identity():
    assert _hash("data.size=11", "data.size=16") != _hash("data.size=16", "data.size=11")
    assert _hash("seed=1") != _hash("seed=2")
    assert _hash("adapter=qtha", "adapter.qnn_layers=2") != _hash("adapter=qtha")
    # two Chinese system prompts of the same length (a lossy file-name key once merged them)
    a, b = _hash("data.system_prompt='你是心理咨询师'"), _hash("data.system_prompt='你是数学老师啊'")
    assert a != b and len("你是心理咨询师") == len("你是数学老师啊")


def test_where_and_how_a_run_is_logged_is_not_identity(tmp_path: Path):
    plain = _hash()
    assert plain == _hash("logger=csv") == _hash("logger=none") == _hash(f"work_dir={tmp_path}")
    assert plain == _hash(f"results_dir={tmp_path}") == _hash("trainer.enable_progress_bar=false", "name=other")
    assert plain == _hash("trainer.checkpoint_every=5", "trainer.kill_at_step=3", "force=true") == _hash("resume=true")


def test_smoke_named_default_is_not_the_default():
    smoke = compose_checked(["experiment=smoke", "name=default"])
    default = compose_checked([])
    assert smoke.name == default.name == "default" and config_hash(smoke) != config_hash(default)


def test_long_configs_keep_their_seeds_apart():
    long = [f"data.system_prompt={'x' * 300}", "adapter=qtha", "adapter.bond_dim=[2,3,4]", "data.size=16"]
    one, two = (compose_checked(["model=tiny_llama", *long, f"seed={s}"]) for s in (1, 2))
    assert config_hash(one) != config_hash(two)
    names = [label(c, [*long, f"seed={s}"]) for c, s in ((one, 1), (two, 2))]
    assert names[0] != names[1] and all(len(n) <= LABEL_CHARS for n in names)


def test_label_shows_resolved_values_and_hides_secrets():
    cfg = compose_checked(["model=tiny_llama", "data.size=11", "data.size=16", "adapter=qtha"])
    assert label(cfg, ["model=tiny_llama", "data.size=11", "data.size=16", "adapter=qtha", "logger=csv",
                       "experiment=smoke", "seed=42"]) == "adapter=qtha__data.size=16__model=tiny_llama__seed=42"
    assert "hf_secret" not in label(cfg, ["+model.hf_token=hf_secret"])
    preset = compose_checked(["model=tiny_llama", "adapter=qtha_match_smollm2"])  # a preset of the qtha adapter
    assert label(preset, ["adapter=qtha_match_smollm2"]) == "adapter=qtha_match_smollm2__seed=42"
    assert "logger" not in semantic(cfg) and "work_dir" not in semantic(cfg)


def test_an_edited_experiment_file_is_a_new_run_and_an_unchanged_one_is_reused(tmp_path: Path, monkeypatch):
    """What ``rerunning math_main after editing conf/experiment/math.yaml`` used to skip."""
    conf = tmp_path / "conf"
    shutil.copytree(compose.CONF_DIR, conf)
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    args = [a for a in tiny_overrides(tmp_path, "experiment=smoke", "eval.enabled=false")
            if not a.startswith("trainer.max_steps=")]  # the experiment file decides the steps
    first = train(compose_checked(args), args)
    again = train(compose_checked(args), args)
    assert again.reused and again.path == first.path
    smoke = conf / "experiment" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("max_steps: 10", "max_steps: 3"))
    edited = train(compose_checked(args), args)
    assert not edited.reused and edited.path != first.path
    assert edited.record.metrics["steps"] == 3 and first.record.metrics["steps"] == 10
    assert sorted(p.name for p in first.path.parent.glob("*.json")) == sorted([first.path.name, edited.path.name])
