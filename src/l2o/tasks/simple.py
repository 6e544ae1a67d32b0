"""The smallest sanity problems: f(x) = x^2 from x_0 = 1, and the 2-d Rosenbrock function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_positive_int
from l2o.tasks.base import Task, TaskFamily, generator


class SquareTask(Task):
    """f(x) = x^2 for each of ``num_problems`` independent scalars, starting from x_0."""

    param_names = ["x"]

    def __init__(self, x0: Tensor) -> None:
        self.x0 = x0
        self.num_problems = x0.shape[0]

    def init_params(self) -> list[Tensor]:
        return [self.x0.clone()]

    def loss(self, params: Sequence[Tensor], batch: Any = None) -> Tensor:
        (x,) = params
        return x.pow(2).sum(-1)


@dataclass(frozen=True)
class SimpleFamily(TaskFamily):
    """f(x) = x^2, x_0 = 1: every seed gives the same problem."""

    name = "simple"
    num_problems: int = 1  # copies of f(x) = x^2 solved at once (all the same problem)

    def __post_init__(self) -> None:
        check_positive_int("num_problems", self.num_problems)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> SquareTask:
        generator(seed)  # validates the seed like every other family
        return SquareTask(torch.ones(self.num_problems, 1, dtype=dtype, device=device))


class RosenbrockTask(Task):
    """f(x, y) = (a - x)^2 + b (y - x^2)^2 for each of ``num_problems`` starting points."""

    param_names = ["xy"]

    def __init__(self, xy0: Tensor, a: float = 1.0, b: float = 100.0) -> None:
        self.xy0, self.a, self.b = xy0, a, b
        self.num_problems = xy0.shape[0]

    def init_params(self) -> list[Tensor]:
        return [self.xy0.clone()]

    def loss(self, params: Sequence[Tensor], batch: Any = None) -> Tensor:
        (xy,) = params
        x, y = xy[:, 0], xy[:, 1]
        return (self.a - x).pow(2) + self.b * (y - x.pow(2)).pow(2)


@dataclass(frozen=True)
class RosenbrockFamily(TaskFamily):
    """Rosenbrock's banana valley from random starts x_0 ~ U[-2, 2], y_0 ~ U[-1, 3]."""

    name = "rosenbrock"
    num_problems: int = 128  # random starting points solved at once

    def __post_init__(self) -> None:
        check_positive_int("num_problems", self.num_problems)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> RosenbrockTask:
        u = torch.rand(self.num_problems, 2, generator=generator(seed), dtype=dtype)
        xy0 = torch.stack([4 * u[:, 0] - 2, 4 * u[:, 1] - 1], dim=-1)
        return RosenbrockTask(xy0.to(device))
