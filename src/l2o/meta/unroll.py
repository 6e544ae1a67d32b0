"""The inner loop: optimize a task step by step (paper, section 2 and Figure 2),

    theta_{t+1} = theta_t + g_t,    [g_t, h_{t+1}] = m(grad_t, h_t; phi),    grad_t = df/dtheta_t

written once, in ``inner_step``, for the three loops that run it: ``unroll`` (meta-training:
the autograd graph from the optimizer's parameters phi to every loss along the way is kept),
``rollout`` (evaluation and validation: no graph; ``l2o.evaluate`` re-exports it) and
``l2o.evaluate.behaviour`` (evaluation that also keeps gradients, updates and states).

``unroll`` returns the meta-loss of the steps taken (paper, eq. 3):

    L(phi) = sum_t w_t f(theta_t)

``grad_t`` is treated as an input that does not depend on phi (the paper drops these second
derivatives of f) unless ``second_order`` is set.

``meta_loss`` chooses the form of each term: "plain" is the paper's f(theta_t); "relative"
divides the truncation's meta-loss by the (constant) mean loss at its start, so that late
truncations, whose losses are orders of magnitude smaller, get meta-gradients of the same
scale as the first one; "log" uses log f(theta_t). ("plain" was called "sum", which code may
still pass here with a DeprecationWarning; a config's meta.meta_loss must say "plain".)

Tasks with running statistics (batch norm; see ``l2o.tasks.conv``) also have buffers: a task
that defines ``init_buffers()`` and ``loss_and_buffers(params, buffers, batch)`` gets them
carried in ``UnrollState.buffers``. They are not meta-trained and do not change f (the training
loss uses batch statistics); each step's forward pass updates them once: the state at step t
holds the buffers after the forward passes of steps 0..t-1, so the forward at theta_t that
ends a truncation and the one that starts the next count once. Other tasks have no buffers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from l2o.devices import flush_denormals
from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, call_step, detach_state
from l2o.optimizers.problems import for_task
from l2o.tasks.base import Task

META_LOSSES = ("plain", "relative", "log")


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


@dataclass
class TaskLoss:
    """One forward pass of the task at theta_t, on batch t."""

    loss: Tensor  # (num_problems,): f(theta_t), with its graph to theta_t
    buffers: list[Tensor]  # the task's buffers after this forward pass ([] for tasks without)


@dataclass
class InnerStep:
    """What one inner step from theta_t computed."""

    grads: list[Tensor]  # grad_t = df/dtheta_t, shaped like theta_t
    updates: list[Tensor]  # g_t, shaped like theta_t
    state: UnrollState  # at theta_{t+1}: h_{t+1}, t + 1, the buffers after steps 0..t
    f: TaskLoss  # f(theta_{t+1}) on batch t + 1: a meta-loss term and the next step's loss


def init_unroll(task: Task, optimizer: StepOptimizer) -> UnrollState:
    params = task.init_params()
    return UnrollState(params, for_task(optimizer, task).init_state(params), 0, init_buffers(task))


def init_buffers(task: Task) -> list[Tensor]:
    """The task's initial buffers (running statistics); [] for tasks without."""
    init = getattr(task, "init_buffers", None)
    return list(init()) if init is not None else []


def differentiable(state: UnrollState) -> UnrollState:
    """The same point with theta_t ready to differentiate f at: tensors without autograd
    history become leaves that require grad; the others keep their history."""
    params = [p if p.requires_grad else p.detach().requires_grad_() for p in state.params]
    return UnrollState(params, state.opt_state, state.step, state.buffers)


def task_loss(task: Task, state: UnrollState) -> TaskLoss:
    """f(theta_t) on batch t, and the buffers after this forward pass (unchanged if none)."""
    batch = task.batch(state.step)
    with torch.enable_grad():  # also under torch.no_grad(): f is differentiated at theta_t
        if not state.buffers:
            return TaskLoss(task.loss(state.params, batch), state.buffers)
        # Only tasks with buffers define loss_and_buffers (see the module doc).
        loss, buffers = task.loss_and_buffers(  # type: ignore[attr-defined]
            state.params, state.buffers, batch
        )
        return TaskLoss(loss, buffers)


def inner_step(
    task: Task,
    optimizer: StepOptimizer,
    state: UnrollState,
    f: TaskLoss,
    *,
    meta_graph: bool,
    second_order: bool = False,
) -> InnerStep:
    """One step of the inner loop (paper, eq. 1 and section 2.1),

        grad_t = df/dtheta_t,   [g_t, h_{t+1}] = m(grad_t, h_t; phi),   theta_{t+1} = theta_t + g_t,

    then f(theta_{t+1}) on batch t + 1: the next step's loss, and a term of the unroll's
    meta-loss.

    ``state``: theta_t (tensors that require grad: see ``differentiable``), h_t, t and the
    buffers before the forward pass at theta_t; ``f``: that forward pass, ``task_loss(task,
    state)``: f(theta_t) of every problem, shape (num_problems,), and the buffers after it.

    ``meta_graph=True`` (the meta-training unroll): autograd records the step, so that the
    meta-loss reaches phi through g_t and through theta_t's own history. ``second_order``
    (with ``meta_graph`` only) keeps the graph of grad_t and of the loss handed to optimizers
    that read it: d grad_t / d phi is then part of the meta-gradient.
    ``meta_graph=False`` (evaluation): the optimizer steps under no_grad and nothing keeps a
    history; theta_{t+1} are fresh leaves, h_{t+1} plain tensors.
    """
    # grad_t = df/dtheta_t. Without create_graph the result carries no history, so the optimizer
    # sees it as a constant input: the paper's first-order approximation.
    with torch.enable_grad():  # also under torch.no_grad(), as task_loss
        grads = torch.autograd.grad(
            f.loss.sum(), state.params, create_graph=second_order, retain_graph=meta_graph
        )
    # The loss reaches optimizers that read it as an input, like the gradient; theta_t reaches
    # those that read it as it is (its history through the earlier updates is part of the
    # meta-gradient, as the updates' own).
    loss = f.loss if second_order else f.loss.detach()
    with torch.set_grad_enabled(meta_graph):
        # [g_t, h_{t+1}] = m(grad_t, h_t; phi)
        # (optimizers that read whole tensors step a task's batched problems apart)
        stepper = for_task(optimizer, task)
        updates, opt_state = call_step(stepper, grads, state.opt_state, loss, state.params)
        # theta_{t+1} = theta_t + g_t
        params = [p + u for p, u in zip(state.params, updates)]
    if not meta_graph:
        params = [p.requires_grad_() for p in params]
    after = UnrollState(params, opt_state, state.step + 1, f.buffers)
    return InnerStep(list(grads), updates, after, task_loss(task, after))


def checked_meta_loss(meta_loss: str) -> str:
    """``meta_loss`` if valid ("sum", the old name of "plain", with a DeprecationWarning)."""
    if meta_loss == "sum":
        warnings.warn(
            'meta_loss="sum" is now "plain" (each term is f(theta_t); "sum" is a value of '
            'loss_weights); pass meta_loss="plain"',
            DeprecationWarning,
            stacklevel=3,
        )
        return "plain"
    if meta_loss not in META_LOSSES:
        raise InvalidInput(f"Invalid meta_loss: {meta_loss!r} (valid: {', '.join(META_LOSSES)})")
    return meta_loss


def unroll(
    task: Task,
    optimizer: StepOptimizer,
    state: UnrollState,
    weights: Sequence[float],
    second_order: bool = False,
    meta_loss: str = "plain",
) -> UnrollResult:
    """Take ``len(weights)`` steps from ``state``; weights[k] is w_t of f(theta_{s+k+1})."""
    meta_loss = checked_meta_loss(meta_loss)
    state = differentiable(state)
    total = state.params[0].new_zeros(())
    losses = []
    f = task_loss(task, state)
    start_loss = f.loss.detach().mean()
    for w in weights:
        step = inner_step(task, optimizer, state, f, meta_graph=True, second_order=second_order)
        state, f = step.state, step.f
        losses.append(f.loss.detach())
        if w != 0:
            term = f.loss.clamp_min(1e-30).log() if meta_loss == "log" else f.loss
            total = total + w * term.mean()
    if meta_loss == "relative":
        total = total / start_loss.clamp_min(1e-30)
    return UnrollResult(total, torch.stack(losses), state)


@dataclass
class Rollout:
    losses: Tensor  # (steps + 1, num_problems): f(theta_t) for t = 0 .. steps, on the CPU
    seconds: float  # wall-clock of the whole rollout (gradients + optimizer steps)
    params: list[Tensor] = field(default_factory=list)  # theta_T, detached, on the task's device
    # The task's buffers after T steps (batch norm running statistics; see the module doc).
    buffers: list[Tensor] = field(default_factory=list)


def rollout(optimizer: StepOptimizer, task: Task, steps: int) -> Rollout:
    """Optimize ``task`` for ``steps`` steps from a fresh optimizer state.

    The optimizer runs exactly as in meta-training (the same ``inner_step``) but without a
    meta-graph, so nothing is kept for backpropagation; it works inside torch.no_grad() too.
    Diverging runs are recorded as they are (inf / NaN). CPU maths flushes denormals to zero
    meanwhile, as in meta-training (``l2o.devices.flush_denormals``: saturated gates make them,
    and they slow a learned step many times).
    """
    start = time.perf_counter()
    with flush_denormals():
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
