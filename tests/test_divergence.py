"""The divergence guard turns finite collapses into failures, and leaves healthy or random-start runs alone."""
from __future__ import annotations

import math

import pytest
import torch

from qtha.divergence import PATIENCE, DivergedError, DivergenceGuard, check_gradients

V = 49_152
UNIFORM = math.log(V)


def feed(guard: DivergenceGuard, losses: list[float]) -> None:
    for step, loss in enumerate(losses):
        guard.update(step, loss)


def test_a_loss_pinned_at_the_uniform_value_fails_after_patience_steps():
    guard = DivergenceGuard(V)
    feed(guard, [1.5] + [UNIFORM] * (PATIENCE - 1))  # not yet
    with pytest.raises(DivergedError, match=rf"diverged at step {PATIENCE}: .*uniform-distribution value ln\|V\| = "
                                            rf"{UNIFORM:.3f}"):
        guard.update(PATIENCE, UNIFORM * 1.01)


def test_a_random_model_starting_at_the_uniform_value_is_not_judged_by_it():
    feed(DivergenceGuard(V), [UNIFORM] * (3 * PATIENCE))


def test_a_blown_up_loss_fails_and_a_recovering_one_does_not():
    feed(DivergenceGuard(None), [1.0, 1.2, 3.0, 3.0, 3.0, 3.0, 0.9, 3.0, 0.8])  # never PATIENCE in a row
    with pytest.raises(DivergedError, match=r"above 2× its first value \(1.0000\)"):
        feed(DivergenceGuard(None), [1.0] + [2.5] * PATIENCE)


def test_a_healthy_run_passes():
    feed(DivergenceGuard(V), [2.0 * 0.97 ** k for k in range(100)])


def test_replay_resumes_the_streak():
    guard = DivergenceGuard(V)
    guard.replay([(0, 1.5), *((k, UNIFORM) for k in range(1, PATIENCE))])
    with pytest.raises(DivergedError):
        guard.update(PATIENCE, UNIFORM)


def test_non_finite_gradients_fail_and_finite_ones_pass():
    good = torch.nn.Parameter(torch.ones(3))
    good.grad = torch.ones(3)
    check_gradients([good], 4)
    bad = torch.nn.Parameter(torch.ones(2))
    bad.grad = torch.tensor([1.0, float("inf")])
    with pytest.raises(DivergedError, match="diverged at step 4: a gradient became non-finite"):
        check_gradients([good, bad], 4)
