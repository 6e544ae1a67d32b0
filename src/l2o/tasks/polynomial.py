"""Recover the coefficients of a polynomial from noisy samples (a least-squares problem).

For each problem: true coefficients c* ~ N(0, 1) of a degree-``degree`` polynomial (7
coefficients by default), sample points x ~ U[-1, 1], targets y = sum_j c*_j x^j + noise.
f(c) = mean_i (sum_j c_j x_i^j - y_i)^2, starting from c = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_positive_int, check_real
from l2o.tasks.base import Task, TaskFamily, generator


class PolynomialTask(Task):
    param_names = ["coefficients"]

    def __init__(self, x: Tensor, y: Tensor, degree: int) -> None:
        self.powers = x.unsqueeze(-1) ** torch.arange(degree + 1, device=x.device)  # (n, m, d+1)
        self.y = y
        self.num_problems = x.shape[0]

    def init_params(self) -> list[Tensor]:
        n, _, k = self.powers.shape
        return [torch.zeros(n, k, dtype=self.y.dtype, device=self.y.device)]

    def loss(self, params: Sequence[Tensor], batch: Any = None) -> Tensor:
        (c,) = params
        prediction = torch.einsum("nmk,nk->nm", self.powers, c)
        return (prediction - self.y).pow(2).mean(-1)


@dataclass(frozen=True)
class PolynomialFamily(TaskFamily):
    """Noisy samples of random polynomials (coefficients ~ N(0, 1)); f(c) is the mean squared
    error of the coefficients c, from c = 0."""

    name = "polynomial"
    degree: int = 6  # degree of the polynomial: degree + 1 coefficients to recover
    num_samples: int = 20  # sample points x ~ U[-1, 1] of each problem
    noise_std: float = 0.1  # standard deviation of the Gaussian noise added to the targets
    num_problems: int = 128  # independent polynomials solved at once

    def __post_init__(self) -> None:
        check_positive_int("degree", self.degree)
        check_positive_int("num_samples", self.num_samples)
        check_positive_int("num_problems", self.num_problems)
        check_real("noise_std", self.noise_std, lambda s: 0 <= s < math.inf, "must be >= 0")

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> PolynomialTask:
        g = generator(seed)
        n, m, k = self.num_problems, self.num_samples, self.degree + 1
        coefficients = torch.randn(n, k, generator=g, dtype=dtype)
        x = torch.rand(n, m, generator=g, dtype=dtype) * 2 - 1
        powers = x.unsqueeze(-1) ** torch.arange(k)
        y = torch.einsum("nmk,nk->nm", powers, coefficients)
        y = y + self.noise_std * torch.randn(n, m, generator=g, dtype=dtype)
        return PolynomialTask(x.to(device), y.to(device), self.degree)
