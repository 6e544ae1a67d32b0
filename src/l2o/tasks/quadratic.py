"""The paper's first experiment (section 3.1): f(theta) = ||W theta - y||^2, 10-dimensional,
with W and y drawn from N(0, 1). Fresh functions for meta-training and for testing.

Many functions are solved at once: W has shape (n, d, d), theta and y (n, d).
The ``tf`` variant follows DeepMind's original code (W, y ~ U[0, 1), theta_0 ~ N(0, 0.01^2)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_choice, check_positive_int
from l2o.errors import InvalidInput
from l2o.tasks.base import Task, TaskFamily, generator

VARIANTS = ("paper", "tf")


class QuadraticTask(Task):
    """n independent quadratics ||W_k theta_k - y_k||^2, k = 1..n."""

    param_names = ["theta"]

    def __init__(self, W: Tensor, y: Tensor, theta0: Tensor) -> None:
        if W.ndim != 3 or W.shape[1:] != (y.shape[-1], theta0.shape[-1]):
            raise InvalidInput(
                f"shapes do not fit: W {tuple(W.shape)}, y {tuple(y.shape)}, "
                f"theta0 {tuple(theta0.shape)}; need (n, m, d), (n, m), (n, d)"
            )
        self.W, self.y, self.theta0 = W, y, theta0
        self.num_problems = W.shape[0]

    def init_params(self) -> list[Tensor]:
        return [self.theta0.clone()]

    def loss(self, params: Sequence[Tensor], batch: Any = None) -> Tensor:
        (theta,) = params
        residual = torch.einsum("nij,nj->ni", self.W, theta) - self.y
        return residual.pow(2).sum(-1)


@dataclass(frozen=True)
class QuadraticFamily(TaskFamily):
    """Random quadratics: ``dim`` unknowns, ``num_problems`` solved at once."""

    name = "quadratic"
    dim: int = 10  # unknowns d of each quadratic ||W theta - y||^2 (the paper: 10)
    num_problems: int = 128  # independent quadratics solved at once (one task, one batch)
    # "paper": W, y, theta_0 ~ N(0, 1); "tf": DeepMind's code, W, y ~ U[0, 1), theta_0 ~ N(0, 0.01^2)
    variant: str = "paper"

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim)
        check_positive_int("num_problems", self.num_problems)
        check_choice("variant", self.variant, VARIANTS)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> QuadraticTask:
        g = generator(seed)
        n, d = self.num_problems, self.dim
        if self.variant == "paper":
            W = torch.randn(n, d, d, generator=g, dtype=dtype)
            y = torch.randn(n, d, generator=g, dtype=dtype)
            theta0 = torch.randn(n, d, generator=g, dtype=dtype)
        else:
            W = torch.rand(n, d, d, generator=g, dtype=dtype)
            y = torch.rand(n, d, generator=g, dtype=dtype)
            theta0 = 0.01 * torch.randn(n, d, generator=g, dtype=dtype)
        return QuadraticTask(W.to(device), y.to(device), theta0.to(device))
