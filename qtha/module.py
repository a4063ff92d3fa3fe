"""LightningModule: response-only causal-LM loss, AdamW over trainable params, adapter-only ckpt."""
from __future__ import annotations

import inspect
import math
import statistics
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states  # Lightning's own, for its spawns
from torch import nn

from qtha.adapters import adapter_state_dict
from qtha.config import TrainerConfig
from qtha.data.formatting import IGNORE_INDEX
from qtha.divergence import DivergenceGuard, check_gradients


VALIDATION_SPLITS = ("val", "heldout")  # dataloader 0: the test split; 1: the selection split


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy (fp32) and the mask of scored tokens, both (B, T-1)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="none").view_as(shift_labels)
    return loss, shift_labels != IGNORE_INDEX


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class AdapterLM(L.LightningModule):
    """Trains only what ``requires_grad`` (the adapters); checkpoints hold only that."""

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.strict_loading = False
        self.history: list[dict[str, float]] = []
        self.step_times: list[float] = []
        self._val: dict[int, list[torch.Tensor]] = {}
        self._batch_start = 0.0
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.guard = DivergenceGuard(getattr(getattr(model, "config", None), "vocab_size", None))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.step_times.append(time.perf_counter() - self._batch_start)

    def median_step_time(self) -> float | None:
        """Median forward+backward+optimiser time per batch, first (warm-up) batch excluded."""
        times = self.step_times[1:] or self.step_times
        return statistics.median(times) if times else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token losses and mask at the positions some row of the batch scores (B, K).

        The LM head runs only there (``logits_to_keep``): prompts are not scored, and the head
        (576 × 49,152 for SmolLM2) plus an fp32 cross-entropy over every vocabulary entry at every
        position was a fifth of the step; per position the logits are the same.
        """
        labels = batch["labels"]
        keep = torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(0)).flatten()  # logits at t score label t+1
        if not self._keeps_logits or keep.numel() == labels.shape[1] - 1:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return token_losses(logits, labels)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            logits_to_keep=keep).logits  # (B, K, V)
        scored = labels[:, 1:].index_select(1, keep)
        loss = F.cross_entropy(logits.float().flatten(0, 1), scored.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="none").view_as(scored)
        return loss, scored != IGNORE_INDEX

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, mask = self(batch)
        total, count = (loss * mask).sum(), mask.sum()
        mean = total / count.clamp(min=1)
        # The recorded loss is over every process's batch (token-weighted), and every process sees the
        # same value, so a non-finite loss stops them all at once instead of leaving the others waiting.
        seen = torch.stack([total.detach(), count.to(total.dtype)])
        if self.trainer.world_size > 1:
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        step_loss = float(seen[0] / seen[1].clamp(min=1))
        if not math.isfinite(step_loss):  # stop here: every later step would be trained on garbage
            raise FloatingPointError(f"loss became {step_loss} at step {self.global_step}")
        self.guard.update(self.global_step, step_loss)  # collapses that stay finite (qtha.divergence)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/loss", step_loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        self.log("train/lr", lr, batch_size=batch["input_ids"].size(0))
        self.history.append({"step": self.global_step, "train_loss": step_loss, "lr": lr})
        return mean

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        check_gradients([p for g in optimizer.param_groups for p in g["params"]], self.global_step)

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, mask = self(batch)
        per_sample_sum = (loss * mask).sum(1).double()
        per_sample_n = mask.sum(1).double()
        rows = torch.stack([batch["index"].double(), per_sample_sum, per_sample_n], 1).detach()
        self._val.setdefault(dataloader_idx, []).append(rows)

    def on_validation_epoch_end(self) -> None:
        """Loss and both perplexities of each validation split: ``val/*`` the test split, ``heldout/*`` the
        selection split carved from the training pool (``data.val_size``), when there is one."""
        logged: dict[str, torch.Tensor] = {}
        for idx, prefix in enumerate(VALIDATION_SPLITS):
            if idx not in self._val:
                continue
            rows = self._whole_set(torch.cat(self._val[idx]))
            rows = rows[rows[:, 2] > 0]
            token_mean = rows[:, 1].sum() / rows[:, 2].sum()
            # Two perplexity definitions (SPEC §3): exp of the token-mean loss, and the authors'
            # mean over samples of exp(per-sample mean loss). Every process holds the same values.
            logged.update({f"{prefix}/loss": token_mean.float(), f"{prefix}/ppl": torch.exp(token_mean).float(),
                           f"{prefix}/ppl_sample": torch.exp(rows[:, 1] / rows[:, 2]).mean().float()})
        self.log_dict(logged, prog_bar=True, sync_dist=True)
        if self.trainer.state.fn == "fit":
            self.history.append({"step": self.global_step,
                                 **{f"{p}_loss": float(logged[f"{p}/loss"]) for p in VALIDATION_SPLITS
                                    if f"{p}/loss" in logged}})

    def _whole_set(self, rows: torch.Tensor) -> torch.Tensor:
        """(index, loss sum, tokens) of every validation row, on every process: each process scored its
        shard, and the distributed sampler pads the shards to equal length by repeating rows, so the
        gathered rows are deduplicated by index. One process: the rows as they are."""
        if self.trainer.world_size == 1:
            return rows
        gathered = self.all_gather(rows).reshape(-1, rows.shape[-1])
        _, first = np.unique(gathered[:, 0].cpu().numpy(), return_index=True)
        return gathered[torch.as_tensor(first, device=gathered.device)]

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters: adapter=none cannot be trained (set trainer.max_steps=0)")
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.cfg.warmup_steps, self.cfg.max_steps, self.cfg.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only adapter weights (a checkpoint of a 7B run stays a few MB), plus what Lightning does not
        save but a resumed run needs to match an uninterrupted one: the RNG streams and the history so far.
        Lightning itself keeps the optimiser, scheduler, loop counters and the data position."""
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in adapter_state_dict(self.model).items()}
        checkpoint["qtha"] = {"history": self.history, "step_times": self.step_times, "rng": _collect_rng_states()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("qtha", {})
        self.history = list(saved.get("history", []))
        self.step_times = list(saved.get("step_times", []))
        self.guard = DivergenceGuard(self.guard.vocab_size)
        self.guard.replay((h["step"], h["train_loss"]) for h in self.history if "train_loss" in h)
        if "rng" in saved:
            _set_rng_states(saved["rng"])
