"""SGD with optional (Nesterov) momentum, the same maths and defaults as ``torch.optim.SGD``.

NAG (Nesterov's accelerated gradient, the paper's baseline) is ``SGD(lr, momentum, nesterov=True)``;
the ``NAG`` helper below spells that out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten


def sgd_update(
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> tuple[Tensor, Tensor | None]:
    """One SGD step on a flat vector; returns (update, new momentum buffer)."""
    direction = grad
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = grad.clone()  # torch.optim starts the buffer at the first gradient
        else:
            momentum_buffer = torch.add(momentum_buffer * momentum, grad, alpha=1 - dampening)
        direction = (
            torch.add(grad, momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
        )
    return direction * -lr, momentum_buffer


class SGD(StepOptimizer):
    """theta <- theta - lr * d, with d the gradient, the momentum buffer, or Nesterov's lookahead."""

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__()
        if not lr >= 0.0:
            raise InvalidInput(f"Invalid learning rate: {lr} (must be >= 0)")
        if not 0.0 <= momentum < 1.0:
            raise InvalidInput(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise InvalidInput(
                f"Nesterov momentum needs momentum > 0 and dampening = 0, "
                f"got momentum={momentum}, dampening={dampening}"
            )
        self.lr, self.momentum, self.dampening, self.nesterov = lr, momentum, dampening, nesterov

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        return {"step": 0, "momentum_buffer": None}

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        update, buffer = sgd_update(
            flatten(grads),
            state["momentum_buffer"],
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
        )
        return unflatten(update, grads), {"step": state["step"] + 1, "momentum_buffer": buffer}

    def spec(self) -> dict:
        return {
            "kind": "sgd",
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
        }

    def extra_repr(self) -> str:
        return f"lr={self.lr:g}, momentum={self.momentum:g}, nesterov={self.nesterov}"


def NAG(
    lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0, nesterov: bool = True
) -> SGD:
    """Nesterov's accelerated gradient: SGD with Nesterov momentum, 0.9 unless told (SGD's
    options, which a parameter group of ``kind = "nag"`` may set)."""
    return SGD(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov)
