"""`python -m qtha.params`: exact counts on the meta device, no weights, no download."""
from __future__ import annotations

import json

import pytest

from conftest import sampled
from qtha.params import count, main


def test_lora_on_qwen2_7b_matches_the_spec_without_weights():
    out = count(["model=qwen2_7b", "adapter=lora"])
    assert out["total_trainable"] == 1_261_568
    assert out["per_module"] == {"q_proj": 28 * 4 * (3584 + 3584), "v_proj": 28 * 4 * (3584 + 512)}
    assert out["base_params"] == 7_615_616_512
    assert out["versus_lora"]["r4"] == {"total_trainable": 1_261_568, "ratio": 1.0, "fewer_pct": 0.0}
    assert out["versus_lora"]["r8"]["total_trainable"] == 2_523_136


def test_the_76_percent_question_at_7b():
    """SPEC §1.6: the authors' QTHA (L = r) is 54.6 % smaller than LoRA r = 4 and 77.3 % smaller than r = 8."""
    out = count(["model=qwen2_7b", "adapter=qtha"])
    assert out["total_trainable"] == 572_544
    assert out["versus_lora"]["r4"]["fewer_pct"] == 54.62 and out["versus_lora"]["r8"]["fewer_pct"] == 77.31
    assert count(["model=qwen2_7b", "adapter=quanta"])["total_trainable"] == 1_376_256  # the authors' QuanTA


@pytest.mark.parametrize("preset,models", [("qtha_match_smollm2", ["smollm2_135m"]),
                                           pytest.param("qtha_match_7b", ["qwen2_7b", "deepseek_r1_distill_qwen_7b"],
                                                        marks=pytest.mark.slow)])  # two 7B meta models
def test_the_parameter_matched_presets_are_within_10_percent_of_lora_r4(preset, models):
    for model in models:
        assert 0.9 <= count([f"model={model}", f"adapter={preset}"])["versus_lora"]["r4"]["ratio"] <= 1.1


def test_counts_equal_the_injected_trainable_parameters_of_the_real_model():
    out = count(["model=smollm2_135m", "adapter=lora", "adapter.rank=8"])
    assert out["total_trainable"] == 30 * 8 * ((576 + 576) + (576 + 192))
    assert out["base_params"] == 134_515_008  # same as the dequantised GGUF (tests/test_backbone.py)


def test_cli_json_schema_and_bad_input(capsys):
    assert main(["model=tiny_llama", "adapter=lora", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"total_trainable", "per_module", "base_params"} <= set(data)
    assert isinstance(data["total_trainable"], int) and data["total_trainable"] == sum(data["per_module"].values())
    assert main(["model=qwen2_7b", "adapter.rank=0"]) == 2
    assert capsys.readouterr().err.strip() == "qtha: error: adapter.rank=0 must be > 0"


@pytest.mark.parametrize("model", sampled(["qwen2_7b", "deepseek_r1_distill_qwen_7b", "qwen2_0_5b"], 3))
def test_hub_models_count_offline(model):
    assert count([f"model={model}"])["total_trainable"] > 0
