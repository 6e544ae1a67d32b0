"""Adam, the same maths and defaults as ``torch.optim.Adam`` (Kingma & Ba, 2015, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten


def adam_update(
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (``step`` counts from 1) on a flat vector; returns (update, m, v)."""
    exp_avg = exp_avg.lerp(grad, 1 - beta1)  # m_t = beta1 m_{t-1} + (1 - beta1) g_t
    exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)  # v_t
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
    # -lr * m_hat / (sqrt(v_hat) + eps), with torch.optim's fused op and rounding order.
    update = torch.addcdiv(torch.zeros_like(grad), exp_avg, denom, value=-lr / bias_correction1)
    return update, exp_avg, exp_avg_sq


class Adam(StepOptimizer):
    """theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not lr >= 0.0:
            raise InvalidInput(f"Invalid learning rate: {lr} (must be >= 0)")
        if not eps >= 0.0:
            raise InvalidInput(f"Invalid epsilon: {eps} (must be >= 0)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise InvalidInput(
                    f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))"
                )
        self.lr, self.betas, self.eps = lr, tuple(betas), eps

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        zeros = flatten(params).detach().mul(0)
        return {"step": 0, "exp_avg": zeros, "exp_avg_sq": zeros}

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        step = state["step"] + 1
        update, exp_avg, exp_avg_sq = adam_update(
            flatten(grads),
            state["exp_avg"],
            state["exp_avg_sq"],
            step,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            eps=self.eps,
        )
        new_state = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        return unflatten(update, grads), new_state

    def spec(self) -> dict:
        return {"kind": "adam", "lr": self.lr, "betas": list(self.betas), "eps": self.eps}

    def extra_repr(self) -> str:
        return f"lr={self.lr:g}, betas={self.betas}, eps={self.eps:g}"
