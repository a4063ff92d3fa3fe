"""The adapter contract (SPEC §1), checked generically.

Every ``Case`` runs through every check, on a bare ``nn.Linear`` and on a tiny Llama, so a
new adapter only appends to ``CASES``. Nothing here knows how an adapter computes Δ.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import yaml
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from qtha.adapters import (
    ADAPTERS,
    AdapterLayer,
    AdapterMergeError,
    adapter_layers,
    adapter_state_dict,
    count_total,
    count_trainable,
    expected_trainable,
    inject_adapters,
    load_adapter_file,
    load_adapter_state_dict,
    merge_adapters,
    save_adapter_file,
    unmerge_adapters,
)
from qtha.adapters.base import AdapterConfig
from qtha.adapters.dora import DoRAConfig
from qtha.adapters.lora import LoRAConfig
from qtha.adapters.none import NoAdapterConfig
from qtha.adapters.qtha import QTHA_VARIANTS, QTHAConfig
from qtha.adapters.quanta import QuanTAConfig
from qtha.compose import CONF_DIR

TINY = LlamaConfig(
    vocab_size=300, hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
)  # k_proj / v_proj: 64 -> 32
ALL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MERGE_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}
UNMERGE_TOL = {torch.float32: dict(rtol=0.0, atol=1e-6), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-3)}


@dataclass(frozen=True)
class Case:
    """One adapter configuration; ``d_in``/``d_out`` shape the bare-Linear subject."""

    id: str
    cfg: AdapterConfig
    d_in: int
    d_out: int
    dtype: torch.dtype = torch.float32  # dtype of the frozen base model


CASES = [
    Case("lora-r4-square", LoRAConfig(rank=4, alpha=8.0, target_modules=["q_proj", "v_proj"]), 64, 64),
    Case("lora-r1-rect", LoRAConfig(rank=1, alpha=2.0, target_modules=["k_proj", "down_proj"]), 64, 32),
    Case("lora-r4-all-dropout", LoRAConfig(rank=4, alpha=16.0, dropout=0.1, target_modules=ALL_LINEARS), 48, 80),
    Case("lora-r4-bf16", LoRAConfig(rank=4, target_modules=["q_proj", "k_proj", "v_proj"]), 64, 32, torch.bfloat16),
    Case("dora-r4-square", DoRAConfig(rank=4, alpha=8.0, target_modules=["q_proj", "v_proj"]), 64, 64),
    Case("dora-r1-rect", DoRAConfig(rank=1, alpha=2.0, target_modules=["k_proj", "down_proj"]), 64, 32),
    Case("dora-r4-all-dropout", DoRAConfig(rank=4, alpha=16.0, dropout=0.1, target_modules=ALL_LINEARS), 48, 80),
    Case("dora-r4-bf16", DoRAConfig(rank=4, target_modules=["q_proj", "k_proj", "v_proj"]), 64, 32, torch.bfloat16),
    # QuanTA, exact layout: tiny-Llama dims 64 = 2^6, 32 = 2^5, 128 = 2^7 factor into 3 or 5 axes automatically
    Case("quanta-n3-square", QuanTAConfig(layout="exact", n_axes=3, alpha=1.0, target_modules=["q_proj", "v_proj"]),
         64, 64),
    Case("quanta-n5-rect-all-dropout", QuanTAConfig(layout="exact", n_axes=5, alpha=2.0, dropout=0.1,
                                                    target_modules=ALL_LINEARS), 96, 48),
    Case("quanta-explicit-axes-rect", QuanTAConfig(layout="exact", axes_in=[2, 8, 4], axes_out=[4, 2, 4],
                                                   target_modules=["k_proj", "v_proj"]), 64, 32),
    Case("quanta-n4-widen", QuanTAConfig(layout="exact", n_axes=4, alpha=0.5, target_modules=["gate_proj", "up_proj"]),
         24, 128),
    Case("quanta-n3-bf16", QuanTAConfig(layout="exact", n_axes=3, target_modules=["q_proj", "k_proj", "v_proj"]),
         64, 32, torch.bfloat16),
    # QuanTA, padded layout (official, the default): rank-many equal axes, padded input, cropped output
    Case("quanta-padded-rank4-rect", QuanTAConfig(rank=4, target_modules=["q_proj", "v_proj"]), 64, 32),
    Case("quanta-padded-n3-all-dropout", QuanTAConfig(n_axes=3, alpha=2.0, dropout=0.1, target_modules=ALL_LINEARS),
         48, 80),
    # QTHA: small bottleneck/cores so the tiny Llama's 64/32/128 dims factorise; every ablation variant
    *[Case(f"qtha-{v}-rect", QTHAConfig(variant=v, rank=4, bottleneck=16, n_cores=2, bond_dim=4,
                                        target_modules=["q_proj", "v_proj"]), 64, 32) for v in QTHA_VARIANTS],
    Case("qtha-full-3q-2layers-hea-dropout", QTHAConfig(rank=4, n_qubits=3, qnn_layers=2, ansatz="hea", dropout=0.1,
                                                        bottleneck=16, n_cores=2, bond_dim=[3],
                                                        target_modules=ALL_LINEARS), 64, 128),
    Case("qtha-full-bf16", QTHAConfig(rank=2, bottleneck=16, n_cores=2, bond_dim=4,
                                      target_modules=["q_proj", "k_proj", "v_proj"]), 64, 32, torch.bfloat16),
    Case("qtha-spec_v1-rect", QTHAConfig(rank=4, qnn_layers=1, init="spec_v1", bottleneck=16, n_cores=2, bond_dim=4,
                                         target_modules=["q_proj", "v_proj"]), 64, 32),
    # the classical controls of the quantum branch: k-layer SiLU MLPs (the authors' BD/BE/BF on mlp_qnn)
    *[Case(f"qtha-{v}-silu{k}-rect", QTHAConfig(variant=v, branch="silu_mlp", mlp_layers=k, rank=4, bottleneck=16,
                                                n_cores=2, bond_dim=4, target_modules=["q_proj", "v_proj"]), 64, 32)
      for v, k in (("mlp_qnn", 2), ("mlp_qnn", 3), ("mlp_qnn", 4), ("full", 2), ("qnn", 3))],
]


class _Proj(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


@dataclass(frozen=True)
class Subject:
    """A case applied to a model kind: builds identical bases, injects, runs."""

    case: Case
    kind: str  # "linear" | "llama"

    @property
    def cfg(self) -> AdapterConfig:
        return replace(self.case.cfg, target_modules=["proj"]) if self.kind == "linear" else self.case.cfg

    def base(self) -> nn.Module:
        """Same weights on every call, so two builds differ only in their adapters."""
        torch.manual_seed(0)
        model = _Proj(self.case.d_in, self.case.d_out) if self.kind == "linear" else LlamaForCausalLM(TINY)
        return model.to(self.case.dtype)

    def adapted(self, seed: int = 1) -> nn.Module:
        model = self.base()
        torch.manual_seed(seed)
        inject_adapters(model, self.cfg)
        return model

    def run(self, model: nn.Module) -> Tensor:
        g = torch.Generator().manual_seed(123)
        if self.kind == "linear":
            return model(torch.randn(2, 5, self.case.d_in, generator=g).to(self.case.dtype))
        return model(input_ids=torch.randint(0, TINY.vocab_size, (2, 7), generator=g)).logits


SUBJECTS = [Subject(c, k) for c in CASES for k in ("linear", "llama")]
# The fast tier runs every case inside the Llama (what the adapters are for) and every fourth one on the bare
# linear as well; the full suite runs both for all.
subjects = pytest.mark.parametrize("s", [
    pytest.param(s, id=f"{s.case.id}-{s.kind}", marks=() if s.kind == "llama" or i % 8 == 0 else pytest.mark.slow)
    for i, s in enumerate(SUBJECTS)])
cases = pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)


def adapter_param_names(model: nn.Module) -> set[str]:
    """The contract's definition: parameters of adapter layers outside the wrapped base."""
    return {
        f"{name}.{key}"
        for name, layer in adapter_layers(model)
        for key, _ in layer.named_parameters()
        if not key.startswith("base.")
    }


def adapter_state_names(model: nn.Module) -> set[str]:
    """What a checkpoint must hold: adapter parameters plus persistent adapter buffers
    (e.g. QuanTA's frozen T0), never anything of the wrapped base."""
    names = set(adapter_param_names(model))
    for name, layer in adapter_layers(model):
        for mod_name, mod in layer.named_modules():
            if mod_name == "base" or mod_name.startswith("base."):
                continue
            for key, buf in mod.named_buffers(recurse=False):
                if buf is not None and key not in mod._non_persistent_buffers_set:
                    names.add(".".join(filter(None, (name, mod_name, key))))
    return names


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 7, std: float = 0.1) -> None:
    """Randomise every adapter parameter so Δ ≠ 0 and every parameter is on the gradient path."""
    g = torch.Generator().manual_seed(seed)
    names = adapter_param_names(model)
    for name, p in model.named_parameters():
        if name in names:
            p.copy_(torch.randn(p.shape, generator=g) * std)


def base_weights(model: nn.Module) -> dict[str, Tensor]:
    return {n: layer.base.weight.detach().clone() for n, layer in adapter_layers(model)}


# --------------------------------------------------------------------------- registry
def test_every_registered_method_has_a_yaml_and_a_contract_case() -> None:
    """A method = one module (registered), one conf/adapter YAML, and a case in CASES."""
    yamls = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "adapter").glob("*.yaml")}
    cased = {c.cfg.name for c in CASES}
    for name, spec in ADAPTERS.items():
        assert spec.name == name == spec.config.name and issubclass(spec.config, AdapterConfig), name
        assert name in yamls, f"conf/adapter/{name}.yaml is missing"
        if spec.layer is not None:
            assert issubclass(spec.layer, AdapterLayer) and isinstance(spec.layer.mergeable, bool), name
            assert name in cased, f"no contract case for adapter {name!r}"
    for stem, body in yamls.items():  # every YAML (a method's or a preset of one) extends a registered schema
        (schema,) = body["defaults"]
        assert schema.endswith("_schema") and schema[: -len("_schema")] in ADAPTERS, stem


# --------------------------------------------------------------------------- generic checks
@subjects
def test_identity_at_init(s: Subject) -> None:
    expected = s.run(s.base())
    model = s.adapted()
    model.train()  # dropout on the adapter branch must not disturb the base path either
    assert torch.equal(s.run(model), expected)
    model.eval()
    assert torch.equal(s.run(model), expected)


@subjects
def test_trainable_set_is_exactly_the_adapter(s: Subject) -> None:
    model = s.base()
    expected = expected_trainable(model, s.cfg)
    wrapped = inject_adapters(model, s.cfg)

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapter_param_names(model) != set()
    assert [n for n, _ in adapter_layers(model)] == wrapped
    assert set(expected) == {n.rpartition(".")[2] for n in wrapped}
    per_layer = sum(type(l).num_params(s.cfg, l.in_features, l.out_features) for _, l in adapter_layers(model))
    assert count_trainable(model) == sum(expected.values()) == per_layer
    assert expected_trainable(model, s.cfg) == expected  # same answer after injection
    for _, layer in adapter_layers(model):
        assert layer.base.weight.dtype == s.case.dtype
        assert {p.dtype for n, p in layer.named_parameters() if not n.startswith("base.")} == {torch.float32}


@subjects
def test_gradients_reach_adapter_only(s: Subject) -> None:
    model = s.adapted()
    perturb(model)
    model.train()
    s.run(model).float().square().mean().backward()
    names = adapter_param_names(model)
    for name, p in model.named_parameters():
        if name in names:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@cases
def test_autocast_input_changes_no_bit(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a bf16 autocast a layer with ``autocast_input`` skips the round trip of x through its dtype; the
    output and every gradient are those of the casting path, bit for bit (dropout drawn from the same seed)."""
    s = Subject(case, "linear")
    model = s.adapted()
    perturb(model)
    model.train()

    def run() -> list[Tensor]:
        model.zero_grad()
        x = torch.randn(2, 5, case.d_in, generator=torch.Generator().manual_seed(5)).bfloat16().requires_grad_()
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        y.float().square().sum().backward()
        return [y, x.grad, *(p.grad for p in model.parameters() if p.requires_grad)]

    fast = run()
    for _, layer in adapter_layers(model):
        monkeypatch.setattr(type(layer), "autocast_input", False)
    for a, b in zip(fast, run(), strict=True):
        assert torch.equal(a, b)


@subjects
def test_outputs_finite_with_base_dtype(s: Subject) -> None:
    model = s.adapted()
    perturb(model)
    out = s.run(model)
    assert out.dtype == s.case.dtype
    assert torch.isfinite(out).all()
    assert not torch.equal(out, s.run(s.base()))  # the perturbation is visible


@subjects
def test_adapter_only_save_load_roundtrip(s: Subject, tmp_path) -> None:
    trained = s.adapted(seed=1).eval()
    perturb(trained)
    path = tmp_path / "adapter.safetensors"
    save_adapter_file(trained, path)
    assert set(adapter_state_dict(trained)) == adapter_state_names(trained)  # no LM weight saved

    fresh = s.adapted(seed=2).eval()
    assert not torch.equal(s.run(fresh), s.run(trained))
    result = load_adapter_file(fresh, path)
    assert result.missing == result.unexpected == []
    assert torch.equal(s.run(fresh), s.run(trained))


@subjects
def test_merge_equals_unmerged_and_unmerge_restores(s: Subject) -> None:
    model = s.adapted().eval()
    perturb(model)
    if not all(layer.mergeable for _, layer in adapter_layers(model)):
        pytest.skip("non-mergeable adapter")
    before, w0 = s.run(model), base_weights(model)

    assert merge_adapters(model) == [n for n, _ in adapter_layers(model)]
    merged = s.run(model)
    torch.testing.assert_close(merged, before, **MERGE_TOL[s.case.dtype])
    model.train()
    model.eval()  # mode switches never merge or unmerge
    assert all(layer.merged for _, layer in adapter_layers(model))
    assert torch.equal(s.run(model), merged)
    with pytest.raises(AdapterMergeError, match="already merged"):
        merge_adapters(model)

    unmerge_adapters(model)
    for name, w in base_weights(model).items():
        torch.testing.assert_close(w, w0[name], **UNMERGE_TOL[s.case.dtype])
    torch.testing.assert_close(s.run(model), before, **MERGE_TOL[s.case.dtype])
    with pytest.raises(AdapterMergeError, match="not merged"):
        unmerge_adapters(model)


@subjects
def test_safe_merge_rejects_nonfinite_and_rolls_back(s: Subject) -> None:
    model = s.adapted()
    layers = adapter_layers(model)
    if not all(layer.mergeable for _, layer in layers):
        pytest.skip("non-mergeable adapter")
    perturb(model)
    w0 = base_weights(model)
    bad_name, bad = layers[-1]
    with torch.no_grad():
        for n, p in bad.named_parameters():
            if not n.startswith("base."):
                p.fill_(float("nan"))
    with pytest.raises(AdapterMergeError, match=bad_name):
        merge_adapters(model)
    assert not any(layer.merged for _, layer in layers)
    for name, w in base_weights(model).items():
        torch.testing.assert_close(w, w0[name], **UNMERGE_TOL[s.case.dtype])


@cases
def test_meta_device_counting(case: Case) -> None:
    s = Subject(case, "llama")
    with torch.device("meta"):
        meta = LlamaForCausalLM(TINY)
    expected = expected_trainable(meta, case.cfg)
    real = s.adapted()
    assert sum(expected.values()) == count_trainable(real)
    inject_adapters(meta, case.cfg)
    assert count_trainable(meta) == count_trainable(real)
    assert count_total(meta) == count_total(real)
    assert all(p.is_meta for p in meta.parameters())


# --------------------------------------------------------------------------- injection edge cases
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(TINY)


def test_none_freezes_everything() -> None:
    model = tiny_llama()
    assert inject_adapters(model, NoAdapterConfig()) == []
    assert count_trainable(model) == 0 < count_total(model)
    assert expected_trainable(model, NoAdapterConfig()) == {}


def test_no_match_raises_useful_message_and_leaves_model_untouched() -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"\['qproj'\].*q_proj") as err:
        inject_adapters(model, LoRAConfig(target_modules=["qproj"]))
    assert "\n" not in str(err.value)
    assert count_trainable(model) == count_total(model) and not adapter_layers(model)


def test_empty_targets_raise() -> None:
    with pytest.raises(ValueError, match="target_modules"):
        inject_adapters(tiny_llama(), LoRAConfig(target_modules=[]))


def test_unknown_adapter_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match="'loraa'.*lora.*none"):
        inject_adapters(tiny_llama(), AdapterConfig(name="loraa"))


def test_regex_target_matches_full_name() -> None:
    cfg = LoRAConfig(target_modules=[r"re:model\.layers\.0\.self_attn\.[qv]_proj"])
    wrapped = inject_adapters(tiny_llama(), cfg)
    assert wrapped == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]


def test_second_injection_raises() -> None:
    model = tiny_llama()
    inject_adapters(model, LoRAConfig())
    with pytest.raises(ValueError, match="already"):
        inject_adapters(model, LoRAConfig())


def test_bad_rank_raises() -> None:
    with pytest.raises(ValueError, match="rank"):
        inject_adapters(tiny_llama(), LoRAConfig(rank=0))


def test_load_rejects_mismatched_state() -> None:
    model = tiny_llama()
    inject_adapters(model, LoRAConfig())
    sd = adapter_state_dict(model)
    key = next(iter(sd))

    with pytest.raises(ValueError, match="1 missing"):
        load_adapter_state_dict(model, {k: v for k, v in sd.items() if k != key})
    with pytest.raises(ValueError, match="1 unexpected.*extra"):
        load_adapter_state_dict(model, {**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=f"shape mismatch.*{key}"):
        load_adapter_state_dict(model, {**sd, key: torch.zeros(1, 1)})
    result = load_adapter_state_dict(model, {k: v for k, v in sd.items() if k != key}, strict=False)
    assert result.missing == [key] and result.unexpected == []


def test_load_into_merged_model_raises() -> None:
    model = tiny_llama()
    inject_adapters(model, LoRAConfig())
    merge_adapters(model)
    with pytest.raises(AdapterMergeError, match="unmerge"):
        load_adapter_state_dict(model, adapter_state_dict(model))


class _TanhAdapter(AdapterLayer):
    """A nonlinear branch, standing in for QTHA: merging must refuse with a clear reason."""

    mergeable: ClassVar[bool] = False

    def __init__(self, base: nn.Linear, cfg: AdapterConfig):
        super().__init__(base, cfg)
        self.down = nn.Linear(self.in_features, self.rank, bias=False, **self.factory_kwargs())

    def delta(self, x: Tensor) -> Tensor:
        return torch.tanh(self.down(x)).sum(-1, keepdim=True).expand(*x.shape[:-1], self.out_features)

    @classmethod
    def num_params(cls, cfg: AdapterConfig, d_in: int, d_out: int) -> int:
        return cfg.rank * d_in


def test_non_mergeable_adapter_says_why() -> None:
    model = _Proj(8, 4)
    model.proj = _TanhAdapter(model.proj, LoRAConfig(rank=2))
    with pytest.raises(AdapterMergeError, match="_TanhAdapter cannot be merged: .*not linear"):
        model.proj.merge()
    with pytest.raises(AdapterMergeError, match="proj: _TanhAdapter cannot be merged"):
        merge_adapters(model)
    assert not model.proj.merged
