"""The lr schedule of stages/training/trainer.py as a pure function: a linear warm-up, then a half
cosine to zero, both stepped per batch."""

from __future__ import annotations

import math

import pytest
import torch

import stages.training.trainer


def lr_factors(warmup_steps: int, total_steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = stages.training.trainer.warmup_cosine(optimizer, warmup_steps, total_steps)
    factors = []
    for _ in range(total_steps):
        factors.append(scheduler.get_last_lr()[0] / 2.0)
        optimizer.step()
        scheduler.step()
    return factors


def test_warmup_rises_linearly_then_the_cosine_decays_to_zero():
    factors = lr_factors(4, 12)
    assert factors[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # step 4 starts the cosine
    assert factors[4 + 4] == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert factors[4:] == sorted(factors[4:], reverse=True) and 0 < factors[-1] < 0.05


def test_warmup_as_long_as_training_only_rises():
    assert lr_factors(4, 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_no_warmup_is_a_plain_per_step_cosine():
    factors = lr_factors(0, 10)
    assert factors == pytest.approx([0.5 * (1 + math.cos(math.pi * step / 10)) for step in range(10)])
