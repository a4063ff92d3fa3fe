"""The training loss runs the LM head only where some row is scored: same losses as full logits."""
from __future__ import annotations

import torch

from qtha.backbone import load_backbone
from qtha.compose import compose_checked
from qtha.config import TrainerConfig
from qtha.data.formatting import IGNORE_INDEX
from qtha.module import AdapterLM, token_losses


def test_scored_positions_only_give_the_full_logit_losses() -> None:
    model, _ = load_backbone(compose_checked(["model=tiny_llama"]).model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=gen)
    labels = ids.clone()
    labels[0, :7] = IGNORE_INDEX  # prompts of different lengths, one padded tail
    labels[1, :4] = IGNORE_INDEX
    labels[2, :9] = IGNORE_INDEX
    labels[2, 11:] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    lm = AdapterLM(model, TrainerConfig())
    assert lm._keeps_logits
    loss, scored = lm(batch)
    full, full_mask = token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert loss.shape[1] == 12 - 1 - 3  # positions 0..2 score no row: the head never sees them
    torch.testing.assert_close((loss * scored).sum(1), (full * full_mask).sum(1), rtol=1e-6, atol=1e-6)
    assert torch.equal(scored.sum(1), full_mask.sum(1))
