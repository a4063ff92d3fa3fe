"""`python -m qtha.params`: exact counts on the meta device, no weights, no download."""
from __future__ import annotations

import json

import pytest

from qtha.params import count, main


def test_lora_on_qwen2_7b_matches_the_spec_without_weights():
    out = count(["model=qwen2_7b", "adapter=lora"])
    assert out["total_trainable"] == 1_261_568
    assert out["per_module"] == {"q_proj": 28 * 4 * (3584 + 3584), "v_proj": 28 * 4 * (3584 + 512)}
    assert out["base_params"] == 7_615_616_512
    assert out["ratio_to_lora"] == 1.0


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


@pytest.mark.parametrize("model", ["qwen2_7b", "deepseek_r1_distill_qwen_7b", "qwen2_0_5b"])
def test_hub_models_count_offline(model):
    assert count([f"model={model}"])["total_trainable"] > 0
