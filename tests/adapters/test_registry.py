"""A new adapter is one module (config dataclass + layer + checks, registered once) and one YAML: nothing
else in qtha lists adapters. Shown with a toy method registered at test time."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from qtha import compose
from qtha.adapters import ADAPTERS, AdapterConfig, AdapterLayer, count_trainable, inject_adapters, register_adapter
from qtha.backbone import meta_model
from qtha.compose import compose_checked
from qtha.errors import ConfigError


@dataclass
class ToyConfig(AdapterConfig):
    name: str = "toy"
    width: int = 2


class ToyLayer(AdapterLayer):
    mergeable: ClassVar[bool] = False

    def __init__(self, base: nn.Linear, cfg: ToyConfig, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(base, cfg, dtype=dtype)
        self.down = nn.Linear(self.in_features, cfg.width, bias=False, **self.factory_kwargs())
        self.up = nn.Linear(cfg.width, self.out_features, bias=False, **self.factory_kwargs())
        nn.init.zeros_(self.up.weight)

    def delta(self, x: Tensor) -> Tensor:
        return self.up(torch.tanh(self.down(x)))

    @classmethod
    def num_params(cls, cfg: Any, d_in: int, d_out: int) -> int:
        return cfg.width * (d_in + d_out)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.width < 1:
            raise ConfigError(f"adapter.width={cfg.width} must be >= 1")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(compose.CONF_DIR, conf)
    (conf / "adapter" / "toy.yaml").write_text("defaults: [toy_schema]\n")
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    register_adapter("toy", ToyConfig, ToyLayer)
    yield
    ADAPTERS.pop("toy")


def test_a_registered_method_composes_validates_and_injects(toy):
    cfg = compose_checked(["model=tiny_llama", "adapter=toy", "adapter.width=3"])
    assert cfg.adapter.name == "toy" and cfg.adapter.width == 3
    with pytest.raises(ConfigError, match=r"^adapter.width=0 must be >= 1$"):
        compose_checked(["model=tiny_llama", "adapter=toy", "adapter.width=0"])
    with pytest.raises(ConfigError, match="adapter.widht is not a config key"):
        compose_checked(["model=tiny_llama", "adapter=toy", "adapter.widht=3"])
    model = meta_model(cfg.model)
    inject_adapters(model, cfg.adapter)
    layers, d = cfg.model.arch.num_hidden_layers, cfg.model.arch.hidden_size
    kv = d * cfg.model.arch.num_key_value_heads // cfg.model.arch.num_attention_heads
    assert count_trainable(model) == layers * 3 * ((d + d) + (d + kv))


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="adapter 'lora' is already registered"):
        register_adapter("lora", ToyConfig, ToyLayer)
