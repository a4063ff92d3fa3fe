"""Dataset registry: ``data.name`` → a loader returning (training pool, fixed test split).

Each example is ``{"messages": [...chat turns, last one the assistant's...], "lang": "zh"|"en",
"id": ...}`` plus ``answer`` for maths. Every assistant turn is a training target (multi-turn
dialogues included, see :mod:`qtha.data.formatting`). Adding a dataset = one module with a
:class:`~qtha.data.source.FileDataset` + one entry here + one YAML in ``conf/data/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from qtha.config import DataConfig
from qtha.errors import ConfigError, one_of, positive
from qtha.data import ch_r1_math, cmath, cpsycound, formats, gsm8k, jsonl, r1_distill_sft, synthetic_math
from qtha.data.rows import Example
from qtha.data.source import FileDataset

__all__ = ["DATASETS", "FILE_DATASETS", "Example", "check_data", "check_size", "fingerprint", "load_splits", "local_test_rows"]

Loader = Callable[[DataConfig], tuple[list[Example], list[Example]]]
BATCHINGS = ("random", "length")  # data.batching (qtha.data.batching)


def _synthetic_math(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    train, test = synthetic_math.make_splits(cfg.pool_size, cfg.test_size, cfg.data_seed, cfg.languages,
                                             cfg.difficulty)
    as_example = lambda p: {"messages": synthetic_math.to_messages(p), "answer": p.answer, "lang": p.lang}  # noqa: E731
    return [as_example(p) for p in train], [as_example(p) for p in test]


FILE_DATASETS: dict[str, FileDataset] = {
    d.name: d for d in (cpsycound.DATASET, r1_distill_sft.DATASET, ch_r1_math.DATASET, gsm8k.DATASET,
                        cmath.DATASET, jsonl.DATASET)
}
DATASETS: dict[str, Loader] = {
    "synthetic_math": _synthetic_math,
    **{name: d.load for name, d in FILE_DATASETS.items()},
}


def _known(cfg: DataConfig) -> None:
    if cfg.name not in DATASETS:
        raise ConfigError(f"data.name={cfg.name!r} is unknown; allowed: {', '.join(sorted(DATASETS))}")


def _with_system_prompt(example: Example, prompt: str) -> Example:
    """Prepend ``data.system_prompt``; a row that brings its own system turn keeps it."""
    if example["messages"][0]["role"] == "system":
        return example
    return {**example, "messages": [{"role": "system", "content": prompt}, *example["messages"]]}


_LOADED: OrderedDict[str, tuple[list[Example], list[Example], str]] = OrderedDict()
_LOADED_MAX = 4  # data configs kept in memory per process (a sweep's jobs share one)


def _load(cfg: DataConfig) -> tuple[list[Example], list[Example], str]:
    """Load once per process: the up-front check, the build and the record's fingerprint share one read.

    The cache key is the data config plus the size and mtime of every local file it reads, so an
    edited file is read again.
    """
    _known(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dataclasses.asdict(cfg)
    stamp = FILE_DATASETS[cfg.name].stamp(cfg) if cfg.name in FILE_DATASETS else []
    key = json.dumps([plain, stamp], sort_keys=True, default=str)
    if key not in _LOADED:
        pool, test = DATASETS[cfg.name](cfg)
        if cfg.system_prompt:
            pool, test = ([_with_system_prompt(e, cfg.system_prompt) for e in rows] for rows in (pool, test))
        digest = hashlib.sha256(json.dumps([pool, test], sort_keys=True, ensure_ascii=False, default=str).encode())
        _LOADED[key] = (pool, test, digest.hexdigest())
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def load_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """The training pool and the fixed test split of ``cfg.name`` (pool empty: evaluation-only set)."""
    pool, test, _ = _load(cfg)
    return list(pool), list(test)


def local_test_rows(cfg: DataConfig) -> list[Example] | None:
    """The test rows a run of ``cfg`` evaluates, when they can be had without the hub (else None)."""
    if cfg.name != "synthetic_math" and not FILE_DATASETS[cfg.name].has_local(cfg):
        return None
    return load_splits(cfg)[1][: cfg.test_size]


def fingerprint(cfg: DataConfig) -> str:
    """sha256 of every example the config yields (pool and test split, as the run sees them).

    Content, not paths: the same rows read from another folder give the same fingerprint, an edited
    file or a changed generator a different one. Records store it, so a finished run is never reused
    for data that changed under its config.
    """
    return _load(cfg)[2]


SYNTHETIC_MAX_ROWS = 1_000_000  # generated rows (pool + test): about 20 s; a slipped digit beyond it would never end


def check_size(size: int, pool: int, name: str, val_size: int = 0) -> None:
    """``data.size`` must fit the pool left after the selection split: a silent smaller run would be
    mislabelled in every table."""
    if val_size < 0 or val_size >= pool:
        raise ConfigError(f"data.val_size={val_size} does not fit the training pool of data={name} ({pool} rows); "
                          f"allowed: 0..{pool - 1}")
    left = pool - val_size
    if size <= 0 or size > left:
        extra = f" less data.val_size={val_size}" if val_size else ""
        raise ConfigError(f"data.size={size} is outside the training pool of data={name} ({pool} rows{extra}); "
                          f"allowed: 1..{left}")


def check_data(cfg: DataConfig, allow_hub: bool, trains: bool = True) -> None:
    """Pre-model data checks, each a one-line :class:`ConfigError`.

    Local files are read in full (a few MB: well under a second, and cached for the run that
    follows, see :func:`load_splits`), so a malformed row or a ``data.size`` beyond the pool fails
    here rather than after a model is loaded. Hub data is only checked for reachability: sizing it
    needs the download.
    """
    _known(cfg)
    for key in ("size", "test_size", "pool_size", "holdout_size", "max_length"):
        positive(f"data.{key}", getattr(cfg, key))
    if not 0 <= cfg.data_seed < 2**32:
        raise ConfigError(f"data.data_seed={cfg.data_seed} is out of range; allowed: 0..{2**32 - 1}")
    if cfg.max_length < 16:
        raise ConfigError(f"data.max_length={cfg.max_length} is too short; allowed: >= 16 tokens")
    one_of("data.batching", cfg.batching, BATCHINGS)
    formats.check_format(cfg.format, formats.given(cfg.columns), formats.given(cfg.tags))
    if cfg.format != "qtha" and not (cfg.name in FILE_DATASETS and FILE_DATASETS[cfg.name].formats):
        readers = sorted(n for n, d in FILE_DATASETS.items() if d.formats)
        raise ConfigError(f"data.format={cfg.format} needs a dataset that reads any rows; allowed: data={'|'.join(readers)} "
                          f"(data={cfg.name} has its own fields)")
    if isinstance(cfg.bucket_batches, bool) or not isinstance(cfg.bucket_batches, int) or cfg.bucket_batches < 1:
        raise ConfigError(f"data.bucket_batches={cfg.bucket_batches!r} is not allowed; allowed: an int >= 1 "
                          "(batches per length-sorted window)")
    if cfg.name == "synthetic_math":
        try:
            synthetic_math.check_languages(list(cfg.languages))
        except ValueError as exc:
            raise ConfigError(f"data.languages={list(cfg.languages)}: {exc}") from exc
        one_of("data.difficulty", cfg.difficulty, synthetic_math.DIFFICULTIES)
        if cfg.pool_size + cfg.test_size > SYNTHETIC_MAX_ROWS:
            raise ConfigError(f"data.pool_size={cfg.pool_size} + data.test_size={cfg.test_size} rows is above the "
                              f"ceiling of the generator; allowed: at most {SYNTHETIC_MAX_ROWS:,} together")
        check_size(cfg.size, cfg.pool_size, cfg.name, cfg.val_size)
        return
    dataset = FILE_DATASETS[cfg.name]
    if dataset.eval_only and trains:
        others = ", ".join(n for n, d in FILE_DATASETS.items() if not d.eval_only)
        raise ConfigError(f"data={cfg.name} is an evaluation-only set (no solutions to train on); allowed: "
                          "trainer.max_steps=0 or adapter=none to evaluate zero-shot, `python -m qtha.eval "
                          f"<record> data.name={cfg.name} data.path=<folder>` for a trained adapter, or a training "
                          f"set: {others}, synthetic_math")
    if not dataset.has_local(cfg):
        if not cfg.hub_id:
            raise dataset.missing(cfg, "the dataset has no hub_id")
        if not allow_hub:
            raise dataset.missing(cfg, "the hub is off")
        return
    pool, test = load_splits(cfg)
    if not dataset.eval_only:
        check_size(cfg.size, len(pool), cfg.name, cfg.val_size)
    if cfg.test_size > len(test):  # a silently shorter test split would be mislabelled in every table
        raise ConfigError(f"data.test_size={cfg.test_size} is more than the {len(test)} test rows of data={cfg.name}; "
                          f"allowed: 1..{len(test)}")
