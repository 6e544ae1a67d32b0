"""Helpers of the coupled optimizers' tests (LSTM+GAC, NTM-BFGS, L-BFGS): a task whose problems
each have two parameter tensors, and the same run through one torch.optim front-end per
problem, which must match the batched unroll."""

import torch

from l2o.optim import LearnedOptimizer
from l2o.tasks.base import Task


class TwoTensorTask(Task):
    """``num_problems`` problems, each f(a, b) = sum_i w_i (a_i - c_i)^2 + (sum b - sum a / 2)^2
    with a (4, 2) and b (3,): two tensors coupled through the loss."""

    param_names = ["a", "b"]

    def __init__(self, num_problems: int = 3, dtype: torch.dtype = torch.float32) -> None:
        g = torch.Generator().manual_seed(11)
        self.num_problems = num_problems
        self.w = torch.rand(num_problems, 4, 2, generator=g, dtype=dtype) + 0.5
        self.c = torch.randn(num_problems, 4, 2, generator=g, dtype=dtype)
        self.a0 = torch.randn(num_problems, 4, 2, generator=g, dtype=dtype)
        self.b0 = torch.randn(num_problems, 3, generator=g, dtype=dtype)

    def init_params(self) -> list[torch.Tensor]:
        return [self.a0.clone(), self.b0.clone()]

    def loss(self, params, batch=None) -> torch.Tensor:
        a, b = params
        fit = (self.w * (a - self.c) ** 2).flatten(1).sum(1)
        return fit + (b.sum(1) - a.flatten(1).sum(1) / 2) ** 2


def run_per_problem(optimizer, task: Task, steps: int) -> list[torch.Tensor]:
    """theta_steps of every problem, each stepped by its own ``LearnedOptimizer`` on its own
    slices of the task's tensors (one problem's tensors, shaped as a model's); stacked back."""
    slices = [
        [p[k].clone().requires_grad_() for p in task.init_params()]
        for k in range(task.num_problems)
    ]
    fronts = [LearnedOptimizer(s, optimizer=optimizer) for s in slices]
    for t in range(steps):
        params = [torch.stack([s[i] for s in slices]) for i in range(len(slices[0]))]
        task.loss(params, task.batch(t)).sum().backward()
        for front in fronts:
            front.step()
            front.zero_grad()
    return [torch.stack([s[i] for s in slices]).detach() for i in range(len(slices[0]))]
