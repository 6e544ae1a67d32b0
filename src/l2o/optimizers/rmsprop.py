"""RMSprop, the same maths and defaults as ``torch.optim.RMSprop`` (Tieleman & Hinton, 2012)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten


def rmsprop_update(
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    momentum: float,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """One RMSprop step on a flat vector; returns (update, square_avg, grad_avg, momentum_buffer).

    ``grad_avg`` is only kept for the centered variant (None otherwise).
    """
    # The same fused ops as torch.optim, so trajectories agree to the last bit where possible.
    square_avg = torch.addcmul(square_avg * alpha, grad, grad, value=1 - alpha)
    if grad_avg is not None:  # centered: divide by an estimate of the gradient's variance
        grad_avg = grad_avg.lerp(grad, 1 - alpha)
        avg = torch.addcmul(square_avg, grad_avg, grad_avg, value=-1).sqrt() + eps
    else:
        avg = square_avg.sqrt() + eps
    if momentum > 0:
        momentum_buffer = torch.addcdiv(momentum_buffer * momentum, grad, avg)
        return momentum_buffer * -lr, square_avg, grad_avg, momentum_buffer
    update = torch.addcdiv(torch.zeros_like(grad), grad, avg, value=-lr)
    return update, square_avg, grad_avg, momentum_buffer


class RMSprop(StepOptimizer):
    """theta <- theta - lr * g / (sqrt(E[g^2]) + eps)."""

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__()
        if not lr >= 0.0:
            raise InvalidInput(f"Invalid learning rate: {lr} (must be >= 0)")
        if not 0.0 <= alpha < 1.0:
            raise InvalidInput(f"Invalid alpha: {alpha} (must be in [0, 1))")
        if not eps >= 0.0:
            raise InvalidInput(f"Invalid epsilon: {eps} (must be >= 0)")
        if not 0.0 <= momentum < 1.0:
            raise InvalidInput(f"Invalid momentum: {momentum} (must be in [0, 1))")
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.momentum, self.centered = momentum, centered

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        zeros = flatten(params).detach().mul(0)
        return {
            "step": 0,
            "square_avg": zeros,
            "grad_avg": zeros if self.centered else None,
            "momentum_buffer": zeros if self.momentum > 0 else None,
        }

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        update, square_avg, grad_avg, buffer = rmsprop_update(
            flatten(grads),
            state["square_avg"],
            state["grad_avg"],
            state["momentum_buffer"],
            lr=self.lr,
            alpha=self.alpha,
            eps=self.eps,
            momentum=self.momentum,
        )
        new_state = {
            "step": state["step"] + 1,
            "square_avg": square_avg,
            "grad_avg": grad_avg,
            "momentum_buffer": buffer,
        }
        return unflatten(update, grads), new_state

    def spec(self) -> dict:
        return {
            "kind": "rmsprop",
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def extra_repr(self) -> str:
        return f"lr={self.lr:g}, alpha={self.alpha:g}, eps={self.eps:g}, momentum={self.momentum:g}"
