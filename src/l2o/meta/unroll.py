"""The differentiable inner loop: optimize a task for a few steps, keeping the autograd graph
from the optimizer's parameters phi to every loss along the way (paper, section 2 and Figure 2).

    theta_{t+1} = theta_t + g_t,    [g_t, h_{t+1}] = m(grad_t, h_t; phi)

and the meta-loss of the steps taken (paper, eq. 3):

    L(phi) = sum_t w_t f(theta_t)

``grad_t`` is treated as an input that does not depend on phi (the paper drops these second
derivatives of f) unless ``second_order`` is set.

``meta_loss`` chooses the form of each term: "sum" is the paper's f(theta_t); "relative"
divides the truncation's meta-loss by the (constant) mean loss at its start, so that late
truncations, whose losses are orders of magnitude smaller, get meta-gradients of the same
scale as the first one; "log" uses log f(theta_t).

Tasks with running statistics (batch norm; see ``l2o.tasks.conv``) also have buffers: a task
that defines ``init_buffers()`` and ``loss_and_buffers(params, buffers, batch)`` gets them
carried in ``UnrollState.buffers``. They are not meta-trained and do not change f (the training
loss uses batch statistics); each step's forward pass updates them once: the state at step t
holds the buffers after the forward passes of steps 0..t-1, so the forward at theta_t that
ends a truncation and the one that starts the next count once. Other tasks have no buffers
and run exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, call_step, detach_state
from l2o.tasks.base import Task

META_LOSSES = ("sum", "relative", "log")


@dataclass
class UnrollState:
    """Where an unroll stands: theta_t, the optimizer's state h_t, t, and the task's buffers
    (running statistics after steps 0..t-1; empty for tasks without)."""

    params: list[Tensor]
    opt_state: OptState
    step: int
    buffers: list[Tensor] = field(default_factory=list)

    def detached(self) -> UnrollState:
        """The same point with no autograd history: a truncation boundary."""
        return UnrollState(
            [p.detach() for p in self.params],
            detach_state(self.opt_state),
            self.step,
            [b.detach() for b in self.buffers],
        )


@dataclass
class UnrollResult:
    meta_loss: Tensor  # scalar: sum_t w_t mean_k f_k(theta_t), t = s+1 .. s+K
    losses: Tensor  # (K, num_problems): f(theta_t) for t = s+1 .. s+K, no graph
    state: UnrollState  # at theta_{s+K}, still attached to the graph


def init_unroll(task: Task, optimizer: StepOptimizer) -> UnrollState:
    params = task.init_params()
    return UnrollState(params, optimizer.init_state(params), 0, init_buffers(task))


def init_buffers(task: Task) -> list[Tensor]:
    """The task's initial buffers (running statistics); [] for tasks without."""
    init = getattr(task, "init_buffers", None)
    return list(init()) if init is not None else []


def loss_and_buffers(
    task: Task, params: list[Tensor], buffers: list[Tensor], batch: Any
) -> tuple[Tensor, list[Tensor]]:
    """f(theta) on ``batch`` and the buffers after this forward pass (unchanged if none)."""
    if not buffers:
        return task.loss(params, batch), buffers
    return task.loss_and_buffers(params, buffers, batch)  # type: ignore[attr-defined]


def unroll(
    task: Task,
    optimizer: StepOptimizer,
    state: UnrollState,
    weights: Sequence[float],
    second_order: bool = False,
    meta_loss: str = "sum",
) -> UnrollResult:
    """Take ``len(weights)`` steps from ``state``; weights[k] is w_t of f(theta_{s+k+1})."""
    if meta_loss not in META_LOSSES:
        raise InvalidInput(f"Invalid meta_loss: {meta_loss!r} (valid: {', '.join(META_LOSSES)})")
    # theta_s must be differentiable so that f can be differentiated with respect to it.
    params = [p if p.requires_grad else p.detach().requires_grad_() for p in state.params]
    opt_state, start, buffers = state.opt_state, state.step, state.buffers
    total = params[0].new_zeros(())
    losses = []
    # ``after``: the buffers once the forward pass that gives grad_t counts (see the module doc).
    loss, after = loss_and_buffers(task, params, buffers, task.batch(start))
    start_loss = loss.detach().mean()
    for k, w in enumerate(weights):
        # grad_t = df/dtheta_t. Without create_graph the result carries no history, so the
        # optimizer sees it as a constant input: the paper's first-order approximation.
        grads = torch.autograd.grad(
            loss.sum(), params, create_graph=second_order, retain_graph=True
        )
        # The loss reaches optimizers that read it as an input, like the gradient; theta_t
        # reaches those that read it as it is (its history through the earlier updates is
        # part of the meta-gradient, as the updates' own).
        step_loss = loss if second_order else loss.detach()
        updates, opt_state = call_step(optimizer, grads, opt_state, step_loss, params)
        params = [p + u for p, u in zip(params, updates)]
        buffers = after
        # f(theta_{t+1}) is both a meta-loss term and the loss whose gradient drives the next step.
        loss, after = loss_and_buffers(task, params, buffers, task.batch(start + k + 1))
        losses.append(loss.detach())
        if w != 0:
            term = loss.clamp_min(1e-30).log() if meta_loss == "log" else loss
            total = total + w * term.mean()
    if meta_loss == "relative":
        total = total / start_loss.clamp_min(1e-30)
    return UnrollResult(
        total,
        torch.stack(losses),
        UnrollState(params, opt_state, start + len(weights), buffers),
    )
