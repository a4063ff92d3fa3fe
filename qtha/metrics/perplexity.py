"""The two perplexity definitions of SPEC §3, from per-sample losses the eval stage already has."""
from __future__ import annotations

import math


def perplexities(per_sample_mean_losses: list[float], per_sample_token_counts: list[int]) -> dict[str, float]:
    """``ppl`` = exp of the token-weighted mean loss over the set; ``ppl_sample`` = mean over
    samples of exp(per-sample mean loss) (the authors' script). Same formulas as the training
    module's ``val/ppl`` and ``val/ppl_sample``."""
    if len(per_sample_mean_losses) != len(per_sample_token_counts):
        raise ValueError(f"{len(per_sample_mean_losses)} losses but {len(per_sample_token_counts)} token counts")
    if not per_sample_mean_losses:
        raise ValueError("perplexities needs at least one sample")
    if any(n <= 0 for n in per_sample_token_counts):
        raise ValueError("every token count must be positive")
    tokens = sum(per_sample_token_counts)
    token_mean = sum(l * n for l, n in zip(per_sample_mean_losses, per_sample_token_counts)) / tokens
    return {"ppl": math.exp(token_mean),
            "ppl_sample": sum(math.exp(l) for l in per_sample_mean_losses) / len(per_sample_mean_losses)}
