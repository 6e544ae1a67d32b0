"""Polyak averaging of phi: an exponential moving average of the meta-training iterates.

Meta-gradients from one sampled task are noisy, and the average of the recent iterates is
usually a better optimizer than the last one. After meta-update n,

    phi_avg <- d phi_avg + (1 - d) phi,    d = min(ema_decay, (1 + n) / (10 + n)),

the warm-up (1 + n) / (10 + n) letting the first iterates count less than a plain EMA would.
"""

from __future__ import annotations

import copy

import torch

from l2o.optimizers.base import StepOptimizer


class PolyakAverage:
    """The EMA of ``optimizer``'s parameters with ``decay``; ``average`` is an optimizer of the
    same architecture that holds it (what validation scores and ``best`` keeps)."""

    def __init__(self, optimizer: StepOptimizer, decay: float) -> None:
        self.decay = decay
        self.average = copy.deepcopy(optimizer).requires_grad_(False)

    @torch.no_grad()
    def update(self, optimizer: StepOptimizer, n: int) -> None:
        """Fold in ``optimizer``'s parameters after meta-update ``n`` (0-based)."""
        decay = min(self.decay, (1 + n) / (10 + n))
        for avg, p in zip(self.average.parameters(), optimizer.parameters()):
            avg.lerp_(p, 1 - decay)
