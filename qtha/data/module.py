"""LightningDataModule: seeded nested subsample of the pool, tokenisation, loaders."""
from __future__ import annotations

import random
from dataclasses import replace
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from qtha.config import DataConfig
from qtha.data import Example, check_size, load_splits
from qtha.data.batching import LengthGroups
from qtha.data.formatting import IGNORE_INDEX, Encoded, collate, encode_chat
from qtha.data.resumable import EpochSampler, ResumableLoader


def subsample(pool: list[Example], size: int, seed: int, name: str = "pool") -> list[Example]:
    """The first ``size`` of a seeded permutation: same seed ⇒ 300 ⊂ 3000 (nested sizes)."""
    check_size(size, len(pool), name)
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return [pool[i] for i in order[:size]]


def carve(pool: list[Example], size: int, data_seed: int) -> tuple[list[Example], list[Example]]:
    """(selection split, the rest of the pool): ``size`` rows drawn with ``data_seed``, both in pool order."""
    if size <= 0:
        return [], pool
    order = list(range(len(pool)))
    random.Random(f"selection split {data_seed}").shuffle(order)
    chosen = set(order[:size])
    return [pool[i] for i in sorted(chosen)], [r for i, r in enumerate(pool) if i not in chosen]


class ChatDataModule(L.LightningDataModule):
    """Training rows = ``data.size`` of the pool (by ``seed``); validation = the test split, and the selection
    split carved from the pool (``data.val_size``) as a second validation loader.

    An evaluation-only set (empty pool, e.g. CMATH) sets up with no training rows; asking for
    them (``trainer.fit``) is a one-line :class:`ConfigError`.
    """

    def __init__(self, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int,
                 batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_rows: list[Example] = []
        self.test_rows: list[Example] = []
        self.heldout_rows: list[Example] = []
        self.train_set: list[Encoded] = []
        self.test_set: list[Encoded] = []
        self.heldout_set: list[Encoded] = []

    def setup(self, stage: str | None = None) -> None:
        if self.test_set:
            return
        pool, test = load_splits(self.cfg)
        self.heldout_rows, pool = carve(pool, self.cfg.val_size, self.cfg.data_seed) if pool else ([], pool)
        self.train_rows = subsample(pool, self.cfg.size, self.seed, self.cfg.name) if pool else []
        self.test_rows = test[: self.cfg.test_size]

        def encode(rows: list[Example]) -> list[Encoded]:
            return [replace(encode_chat(self.tokenizer, r["messages"], self.cfg.max_length), index=i)
                    for i, r in enumerate(rows)]

        self.train_set, self.test_set = encode(self.train_rows), encode(self.test_rows)
        self.heldout_set = encode(self.heldout_rows)

    def summary(self) -> dict[str, Any]:
        """Rows, tokens, truncation rate and assistant turns: logged once so a reader can judge the data.

        ``assistant_turns`` counts the targets in the conversations, ``target_turns`` those still
        labelled after left truncation (multi-turn dialogues lose their oldest turns first).
        """
        def stats(rows: list[Encoded]) -> dict[str, Any]:
            n_tok = sum(len(e.input_ids) for e in rows)
            n_resp = sum(sum(1 for t in e.labels if t != IGNORE_INDEX) for e in rows)
            return {"rows": len(rows), "tokens": n_tok, "response_tokens": n_resp,
                    "mean_tokens": round(n_tok / max(len(rows), 1), 1),
                    "truncation_rate": round(sum(e.truncated for e in rows) / max(len(rows), 1), 4),
                    "assistant_turns": sum(e.turns for e in rows), "target_turns": sum(e.targets for e in rows)}
        out = {"train": stats(self.train_set), "test": stats(self.test_set)}
        return out | ({"heldout": stats(self.heldout_set)} if self.heldout_set else {})

    def _loader_kwargs(self) -> dict[str, Any]:
        """Each loader owns a seeded generator (worker seeds come from it), so iterating one never
        draws from the global RNG that dropout uses: a resumed run continues the same random stream."""
        return {"batch_size": self.batch_size, "generator": torch.Generator().manual_seed(self.seed),
                "num_workers": self.num_workers, "collate_fn": partial(collate, pad_id=self.tokenizer.pad_token_id)}

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffle per epoch (``data.batching=length``: regrouped into length-sorted batches); its position
        is saved in checkpoints (:mod:`qtha.data.resumable`)."""
        groups = LengthGroups([len(e.input_ids) for e in self.train_set], self.batch_size, self.cfg.bucket_batches) \
            if self.cfg.batching == "length" else None
        return ResumableLoader(self.train_set, sampler=EpochSampler(len(self.train_set), self.seed, groups),
                               **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test split; with a selection split, a second loader (``dataloader_idx`` 1) over it."""
        test = DataLoader(self.test_set, **self._loader_kwargs())
        return [test, DataLoader(self.heldout_set, **self._loader_kwargs())] if self.heldout_set else test
