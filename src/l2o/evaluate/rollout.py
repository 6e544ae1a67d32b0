"""Run an optimizer on a task without building a meta-graph: the evaluation loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2o.meta.unroll import differentiable, init_unroll, inner_step, task_loss
from l2o.optimizers.base import StepOptimizer
from l2o.tasks.base import Task


@dataclass
class Rollout:
    losses: Tensor  # (steps + 1, num_problems): f(theta_t) for t = 0 .. steps, on the CPU
    seconds: float  # wall-clock of the whole rollout (gradients + optimizer steps)
    params: list[Tensor] = field(default_factory=list)  # theta_T, detached, on the task's device
    # The task's buffers after T steps (batch norm running statistics; see l2o.meta.unroll).
    buffers: list[Tensor] = field(default_factory=list)


def rollout(optimizer: StepOptimizer, task: Task, steps: int) -> Rollout:
    """Optimize ``task`` for ``steps`` steps from a fresh optimizer state.

    The optimizer runs exactly as in meta-training (the same ``inner_step``) but without a
    meta-graph, so nothing is kept for backpropagation; it works inside torch.no_grad() too.
    Diverging runs are recorded as they are (inf / NaN).
    """
    start = time.perf_counter()
    state = differentiable(init_unroll(task, optimizer))
    f = task_loss(task, state)
    losses = [f.loss.detach()]
    for _ in range(steps):
        step = inner_step(task, optimizer, state, f, meta_graph=False)
        state, f = step.state, step.f
        losses.append(f.loss.detach())
    curve = torch.stack(losses).float().cpu()  # .cpu() also waits for an accelerator
    params = [p.detach() for p in state.params]
    return Rollout(curve, time.perf_counter() - start, params, state.buffers)
