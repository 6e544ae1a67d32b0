"""Run an optimizer on a task without building a meta-graph: the evaluation loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2o.optimizers.base import StepOptimizer, call_step
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

    The optimizer runs exactly as in meta-training (same ``step`` code) but under no_grad, so
    nothing is kept for backpropagation. Diverging runs are recorded as they are (inf / NaN).
    """
    start = time.perf_counter()
    params = [p.detach() for p in task.init_params()]
    state = optimizer.init_state(params)
    # Buffers of tasks with running statistics, updated once per step as in l2o.meta.unroll.
    buffers = list(task.init_buffers()) if hasattr(task, "init_buffers") else []
    losses = []
    for t in range(steps + 1):
        leaves = [p.requires_grad_() for p in params]
        with torch.enable_grad():
            if buffers:
                loss, after = task.loss_and_buffers(leaves, buffers, task.batch(t))
            else:
                loss, after = task.loss(leaves, task.batch(t)), buffers
            losses.append(loss.detach())
            if t == steps:
                break
            grads = torch.autograd.grad(loss.sum(), leaves)  # works inside torch.no_grad() too
        with torch.no_grad():
            updates, state = call_step(optimizer, grads, state, loss.detach(), leaves)
            params = [p.detach() + u for p, u in zip(leaves, updates)]
        buffers = after
    curve = torch.stack(losses).float().cpu()  # .cpu() also waits for an accelerator
    return Rollout(curve, time.perf_counter() - start, [p.detach() for p in params], buffers)
