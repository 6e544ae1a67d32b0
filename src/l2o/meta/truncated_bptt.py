"""Meta-gradients by truncated backpropagation through time (paper, section 2).

The horizon of T steps is cut into truncations of K steps. In each, the meta-loss of the K steps
is differentiated with respect to phi through the unroll; then theta and the optimizer state
are detached, so no graph crosses the boundary and memory stays O(K).

First-order meta-gradients (the paper's: grad_t is an input that does not depend on phi) need no
graph through the task. The meta-loss L = sum_t w_t l(f(theta_t)) (l the identity for "plain",
log for "log") depends on phi only through the thetas, theta_{t+1} = theta_t + g_t, so

    dL/dphi = sum_t (dtheta_t/dphi)^T c_t,    c_t = w_t l'(f(theta_t)) df(theta_t)/dtheta_t,

where each c_t is a constant, made of the gradient that the inner loop computes at theta_t
anyway: one vector-Jacobian product through the optimizer's steps and the additions
theta_t + g_t (``first_order_meta_gradient``), with each f evaluated on a copy of theta_t cut
from the graph. Backpropagating through the task's graph, as ``unroll`` and autograd do, gives
the same numbers within float rounding (tests/test_meta.py) at the cost of a second pass through
every f(theta_t) and of keeping its graph in memory; it remains the path of second-order
meta-training (where d grad_t / d phi counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from l2o.meta.unroll import (
    UnrollState,
    checked_meta_loss,
    differentiable,
    task_loss,
    unroll,
)
from l2o.optimizers.base import StepOptimizer, call_step
from l2o.optimizers.problems import for_task
from l2o.tasks.base import Task


@dataclass
class MetaGradient:
    grads: list[Tensor]  # d meta_loss / d phi, one per optimizer.parameters(), zeros if unused
    meta_loss: float
    losses: Tensor  # (K, num_problems) f(theta_t) over the truncation
    state: UnrollState  # detached: ready for the next truncation

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(torch.tensor(self.meta_loss))) and all(
            bool(torch.isfinite(g).all()) for g in self.grads
        )


@dataclass(frozen=True)
class TruncatedBPTT:
    """Gradient estimator: exact gradient of the truncated meta-loss (biased for the full T)."""

    second_order: bool = False
    meta_loss: str = "plain"  # "plain" (the paper), "relative" or "log": see l2o.meta.unroll
    # True: first-order meta-gradients too backpropagate through the task's graph (``unroll``:
    # the reference that the default, ``first_order_meta_gradient``, is tested against).
    through_task: bool = False

    def meta_gradient(
        self,
        optimizer: StepOptimizer,
        task: Task,
        state: UnrollState,
        weights: Sequence[float],
    ) -> MetaGradient:
        """Unroll ``len(weights)`` steps from ``state`` and return d(meta-loss)/d(phi).

        Returns gradients instead of writing ``.grad``, so that callers can average them
        across processes or tasks before the meta-optimizer steps.
        """
        if not (self.second_order or self.through_task):
            return first_order_meta_gradient(optimizer, task, state, weights, self.meta_loss)
        phi = list(optimizer.parameters())
        result = unroll(
            task,
            optimizer,
            state,
            weights,
            second_order=self.second_order,
            meta_loss=self.meta_loss,
        )
        if result.meta_loss.requires_grad:
            grads = _grad(result.meta_loss, phi)
        else:  # every weight was 0 in this truncation
            grads = [None] * len(phi)
        return MetaGradient(
            _zeros_for_unused(phi, grads),
            float(result.meta_loss.detach()),
            result.losses,
            result.state.detached(),
        )


def first_order_meta_gradient(
    optimizer: StepOptimizer,
    task: Task,
    state: UnrollState,
    weights: Sequence[float],
    meta_loss: str = "plain",
) -> MetaGradient:
    """The first-order meta-gradient of ``len(weights)`` steps from ``state`` (module doc): the
    inner loop of ``unroll``, with f and grad_t evaluated on copies of theta_t cut from the graph,
    then one vector-Jacobian product of the thetas with the constants c_t. The same
    MetaGradient as through ``unroll``."""
    meta_loss = checked_meta_loss(meta_loss)
    phi = list(optimizer.parameters())
    stepper = for_task(optimizer, task)
    state = differentiable(state)
    f = task_loss(task, state)
    # "relative": the whole truncation's meta-loss divided by its (constant) starting loss
    norm = f.loss.detach().mean().clamp_min(1e-30) if meta_loss == "relative" else 1.0
    # grad_t = df/dtheta_t, an input that does not depend on phi
    grads = torch.autograd.grad(f.loss.sum(), state.params)
    theta = state.params  # theta_t, with its graph to phi through the updates
    total = f.loss.new_zeros(())
    losses, outputs, cotangents = [], [], []
    for w in weights:
        with torch.enable_grad():
            # [g_t, h_{t+1}] = m(grad_t, h_t; phi),  theta_{t+1} = theta_t + g_t
            update, opt_state = call_step(stepper, grads, state.opt_state, f.loss.detach(), theta)
            theta = [p + u for p, u in zip(theta, update)]
        # f(theta_{t+1}) and its gradient, on a copy of theta_{t+1} cut from the graph
        state = UnrollState(
            [p.detach().requires_grad_() for p in theta], opt_state, state.step + 1, f.buffers
        )
        f = task_loss(task, state)
        loss = f.loss.detach()
        log_term = meta_loss == "log" and w != 0
        grads = torch.autograd.grad(f.loss.sum(), state.params, retain_graph=log_term)
        losses.append(loss)
        if w == 0:
            continue
        # the term w_t l(f(theta_{t+1})), averaged over the problems, and c_{t+1}
        if log_term:
            clamped = loss.clamp_min(1e-30)
            total = total + w * clamped.log().mean()
            scale = torch.where(loss >= 1e-30, w / (loss.numel() * clamped), 0.0)  # l' = 1/f
            c = torch.autograd.grad(f.loss, state.params, grad_outputs=scale)
        else:
            total = total + w * loss.mean()
            c = [g * (w / loss.numel() / norm) for g in grads]
        outputs += theta
        cotangents += c
    grads = (
        _grad(outputs, phi, cotangents)
        if outputs and phi
        else [None] * len(phi)  # every weight was 0, or a hand-designed optimizer
    )
    return MetaGradient(
        _zeros_for_unused(phi, grads),
        float(total / norm),
        torch.stack(losses) if losses else f.loss.new_zeros(0, f.loss.numel()),
        state.detached(),
    )


def _grad(
    outputs: Tensor | Sequence[Tensor],
    phi: Sequence[Tensor],
    cotangents: Sequence[Tensor] | None = None,
) -> list[Tensor | None]:
    """d outputs / d phi (a vector-Jacobian product with ``cotangents``), None for every
    parameter the outputs do not use or that is not meta-trained (``requires_grad`` False:
    ``meta.train_only``)."""
    trained = [p for p in phi if p.requires_grad]
    if not trained:
        return [None] * len(phi)
    found = iter(torch.autograd.grad(outputs, trained, cotangents, allow_unused=True))
    return [next(found) if p.requires_grad else None for p in phi]


def _zeros_for_unused(phi: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for p, g in zip(phi, grads)]
