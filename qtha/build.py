"""The one build from a checked config to a model ready to fit or measure: seed, frozen LM, adapters,
data, LightningModule, Trainer. ``qtha.train`` and ``qtha.eval`` both call :func:`build`, as
lightning-hydra-template's ``train.py`` / ``eval.py`` share their instantiation."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch import Callback
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qtha import adapters
from qtha.backbone import load_backbone
from qtha.config import RunConfig
from qtha.data import fingerprint
from qtha.data.module import ChatDataModule
from qtha.module import AdapterLM
from qtha.trainer import build_trainer


@dataclass
class Built:
    """Everything a run needs, built once."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    data: ChatDataModule
    module: AdapterLM
    trainer: L.Trainer
    trainable_params: int
    total_params: int
    trainable_per_module: dict[str, int]
    data_fingerprint: str
    load_s: float


def build_model(cfg: RunConfig, adapter_path: Optional[str] = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Seed, load the frozen LM, inject the adapters and (``adapter_path``) load trained weights strictly: the
    model part of :func:`build`, alone for what needs no data or Trainer (``qtha.export``). The seed comes
    first because the tiny model's random weights and every adapter's initialisation draw from it."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer = load_backbone(cfg.model)
    adapters.inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    if adapter_path:
        adapters.load_adapter_file(model, adapter_path, strict=True)
    return model, tokenizer


def build(cfg: RunConfig, *, logger: Optional[Any] = None, callbacks: Sequence[Callback] = (),
          adapter_path: Optional[str] = None) -> Built:
    """Seed, load the frozen LM, inject the adapters (``adapter_path``: load trained weights, strictly),
    set up the data and the Trainer. Adapters start in training mode (dropout on while fitting;
    Lightning switches to eval around validation)."""
    start = time.perf_counter()
    model, tokenizer = build_model(cfg, adapter_path)
    model.train()
    data = ChatDataModule(cfg.data, tokenizer, cfg.seed, cfg.trainer.batch_size, cfg.trainer.num_workers)
    data.setup()
    return Built(model=model, tokenizer=tokenizer, data=data, module=AdapterLM(model, cfg.trainer),
                 trainer=build_trainer(cfg, logger, callbacks), trainable_params=adapters.count_trainable(model),
                 total_params=adapters.count_total(model),
                 trainable_per_module=adapters.expected_trainable(model, cfg.adapter),
                 data_fingerprint=fingerprint(cfg.data), load_s=round(time.perf_counter() - start, 3))
