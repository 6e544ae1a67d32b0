"""Meta-gradients by truncated backpropagation through time (paper, section 2).

The horizon of T steps is cut into truncations of K steps. In each, the meta-loss of the K steps
is differentiated with respect to phi through the unroll; then theta and the optimizer state
are detached, so no graph crosses the boundary and memory stays O(K).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from l2o.meta.unroll import UnrollState, unroll
from l2o.optimizers.base import StepOptimizer
from l2o.tasks.base import Task


@dataclass
class MetaGradient:
    grads: list[Tensor]  # d meta_loss / d phi, one per optimizer.parameters(), zeros if unused
    meta_loss: float
    losses: Tensor  # (K, num_problems) f(theta_t) over the truncation
    state: UnrollState  # detached: ready for the next truncation

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(torch.tensor(self.meta_loss))) and all(
            bool(torch.isfinite(g).all()) for g in self.grads
        )


@dataclass(frozen=True)
class TruncatedBPTT:
    """Gradient estimator: exact gradient of the truncated meta-loss (biased for the full T)."""

    second_order: bool = False
    meta_loss: str = "plain"  # "plain" (the paper), "relative" or "log": see l2o.meta.unroll

    def meta_gradient(
        self,
        optimizer: StepOptimizer,
        task: Task,
        state: UnrollState,
        weights: Sequence[float],
    ) -> MetaGradient:
        """Unroll ``len(weights)`` steps from ``state`` and return d(meta-loss)/d(phi).

        Returns gradients instead of writing ``.grad``, so that callers can average them
        across processes or tasks before the meta-optimizer steps.
        """
        phi = list(optimizer.parameters())
        result = unroll(
            task,
            optimizer,
            state,
            weights,
            second_order=self.second_order,
            meta_loss=self.meta_loss,
        )
        if result.meta_loss.requires_grad:
            grads = torch.autograd.grad(result.meta_loss, phi, allow_unused=True)
        else:  # every weight was 0 in this truncation
            grads = (None,) * len(phi)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(phi, grads)]
        return MetaGradient(
            grads, float(result.meta_loss.detach()), result.losses, result.state.detached()
        )
