"""The divergence guard: a run whose training collapsed without a NaN ends ``failed``, not ``ok``.

A non-finite loss already stops a run (:class:`qtha.module.AdapterLM`); these are the collapses that
stay finite. An extreme learning rate can pin the loss at the uniform-distribution value ln|V| from the
first update on (every token equally likely: the model has forgotten everything), or drive it far above
where it started. A selection sweep over learning rates meets both on purpose, and a collapsed run
recorded ``ok`` would be read as a (bad but valid) result. The guard sees one loss per optimiser step:

* **stuck at uniform**: |loss − ln|V|| ≤ ``UNIFORM_TOL`` · ln|V| for ``PATIENCE`` consecutive steps, when
  the first step's loss was clearly below it (< ``UNIFORM_START`` · ln|V|: a model that knew something —
  a randomly initialised model starts at ln|V| and is not judged by this);
* **blown up**: loss > ``BLOWUP`` × the first step's loss for ``PATIENCE`` consecutive steps;
* **non-finite gradients** (checked before each optimiser step): the update would write NaN/inf into
  every adapter weight.

The thresholds are constants, not config: they only ever turn a collapsed run into a failed one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

PATIENCE = 5
UNIFORM_TOL = 0.02
UNIFORM_START = 0.9
BLOWUP = 2.0


class DivergedError(FloatingPointError):
    """Training collapsed; the message says at which step and how."""


@dataclass
class DivergenceGuard:
    """Feed it each step's loss (:meth:`update`); it raises :class:`DivergedError` once a rule has held for
    :data:`PATIENCE` steps. ``vocab_size`` None: the uniform rule is off."""

    vocab_size: Optional[int]
    first: Optional[float] = None
    streaks: dict[str, int] = field(default_factory=lambda: {"uniform": 0, "blowup": 0})

    def update(self, step: int, loss: float) -> None:
        if self.first is None:
            self.first = loss
        uniform = math.log(self.vocab_size) if self.vocab_size and self.vocab_size > 1 else None
        broken = {
            "uniform": uniform is not None and self.first < UNIFORM_START * uniform
            and abs(loss - uniform) <= UNIFORM_TOL * uniform,
            "blowup": self.first > 0 and loss > BLOWUP * self.first,
        }
        for rule, now in broken.items():
            self.streaks[rule] = self.streaks[rule] + 1 if now else 0
        if self.streaks["uniform"] >= PATIENCE:
            raise DivergedError(f"diverged at step {step}: the loss has been at the uniform-distribution value "
                                f"ln|V| = {uniform:.3f} (|V| = {self.vocab_size}) for {PATIENCE} steps "
                                f"(first step: {self.first:.4f}, now {loss:.4f}); lower trainer.lr")
        if self.streaks["blowup"] >= PATIENCE:
            raise DivergedError(f"diverged at step {step}: the loss has been above {BLOWUP:g}× its first value "
                                f"({self.first:.4f}) for {PATIENCE} steps (now {loss:.4f}); lower trainer.lr")

    def replay(self, losses: Iterable[tuple[int, float]]) -> None:
        """The state after the given (step, loss) history (a resumed run continues where it stopped)."""
        for step, loss in losses:
            self.update(step, loss)


def check_gradients(params: list[torch.Tensor], step: int) -> None:
    """:class:`DivergedError` if any gradient holds a NaN/inf (one fused norm over all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
    if not torch.isfinite(total):
        raise DivergedError(f"diverged at step {step}: a gradient became non-finite ({float(total)}); "
                            "lower trainer.lr or set trainer.gradient_clip_val")
