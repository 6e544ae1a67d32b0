"""Meta-gradients by evolution strategies, beside truncated BPTT (``l2o.meta.truncated_bptt``).

Both estimators treat the unroll as a black box: they run it with perturbed optimizer
parameters phi + eps and phi - eps (antithetic pairs, eps ~ N(0, sigma^2 I)) and need no
autograd through the unroll, so they are indifferent to the unroll's length, to chaotic or
exploding meta-gradients and to whether f is differentiable twice. Like ``TruncatedBPTT`` they
return gradients instead of writing ``.grad``, so callers can average them across processes.

**ES** (``ES``): over the steps it is given (a whole unroll, or one truncation: "truncated ES")

    g = 1 / (2 N sigma^2) sum_i eps_i (L(phi + eps_i) - L(phi - eps_i)),

an unbiased estimate of the gradient of the Gaussian-smoothed meta-loss
E_eps[L(phi + eps)] of those steps. Over a truncation it starts every particle from the same
state, as truncated BPTT does, so it ignores how phi moved theta and the optimizer's state
before the truncation: biased for the whole unroll, like truncated BPTT.

**PES** (``PES``; Vicol, Metz and Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", ICML 2021, and learned_optimization's
``outer_trainers/truncated_pes.py``): N antithetic pairs of particles, each with its own inner
state (theta, optimizer state) that persists across the truncations of an unroll. Truncation j
draws fresh eps_i^j, runs particle i+ with phi + eps_i^j and i- with phi - eps_i^j for the
truncation's K steps, and returns

    xi_i <- xi_i + eps_i^j,    g_j = 1 / (2 N sigma^2) sum_i xi_i (L_j(i+) - L_j(i-)),

where L_j is the truncation's meta-loss. Summed over the truncations of an unroll (phi held
fixed), E[sum_j g_j] is the gradient of the smoothed meta-loss of the whole unroll,
E[L(phi + eps^1, ..., phi + eps^J)], with its own perturbation for each truncation's phi: no
truncation bias. A new unroll (``PES.init`` on the next task) restarts every particle from
theta_0 and resets xi to 0.

The meta-loss of K steps from s is the unroll's (``l2o.meta.unroll``), in its three forms
(``META_LOSSES``): "plain" L = sum_k w_k mean f(theta_{s+k}) (the paper), "log" with log f,
"relative" divided by the mean f(theta_s) at the truncation's start (each particle's own start
for PES).

Besides the 2N particles both run the unperturbed phi, at the cost of one more unroll: its
meta-loss, losses and state are what the ``MetaGradient`` reports, the same quantities truncated
BPTT reports, so logs and the next truncation's state mean the same thing for every estimator.
Particles run one after the other, each a whole task's unroll with ``torch.no_grad``: a
truncation costs 2N + 1 forward unrolls and no backward pass.

Random numbers come from the ``generator`` argument (CPU, then moved to phi's device, as tasks
are drawn), so a seed gives the same perturbations on every device.

**Across processes** (``l2o.distributed``): ``share`` runs only some of the pairs (their
indices): every process draws all N perturbations from the same generator and runs its share,
and the gradient it returns is its pairs' part of the sum above, still divided by 2 N sigma^2,
so the sum over processes whose shares partition the pairs is the single process's estimate.
A PES state then holds the particles of its share alone (``PES.init(..., share=)``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import vector_to_parameters

from l2o.checks import check_choice, check_positive_int, check_real
from l2o.errors import InvalidInput
from l2o.meta.truncated_bptt import MetaGradient
from l2o.meta.unroll import (
    META_LOSSES,
    UnrollResult,
    UnrollState,
    differentiable,
    init_unroll,
    inner_step,
    task_loss,
)
from l2o.optimizers.base import StepOptimizer, flatten, unflatten
from l2o.tasks.base import Task


def _check_options(sigma: float, pairs: int, meta_loss: str) -> None:
    check_real("sigma", sigma, lambda s: 0 < s < float("inf"), "a number > 0, e.g. 0.01")
    check_positive_int("pairs", pairs)
    check_choice("meta_loss", meta_loss, META_LOSSES)


@dataclass(frozen=True)
class ES:
    """Antithetic evolution strategies over the steps given: a whole unroll (unbiased for the
    smoothed meta-loss) or one truncation (truncated ES: biased, as truncated BPTT)."""

    sigma: float = 0.01  # standard deviation of each coordinate of eps (learned_optimization's)
    pairs: int = 8  # N antithetic pairs (phi + eps_i, phi - eps_i): 2N perturbed unrolls
    meta_loss: str = META_LOSSES[0]  # "plain" (the paper), "relative" or "log": see unroll

    def __post_init__(self) -> None:
        _check_options(self.sigma, self.pairs, self.meta_loss)

    def meta_gradient(
        self,
        optimizer: StepOptimizer,
        task: Task,
        state: UnrollState,
        weights: Sequence[float],
        generator: torch.Generator | None = None,
        share: Sequence[int] | None = None,
    ) -> MetaGradient:
        """Unroll ``len(weights)`` steps from ``state`` with phi and with each phi +- eps_i;
        return g = 1 / (2 N sigma^2) sum_i eps_i (L(phi + eps_i) - L(phi - eps_i)), shaped
        like ``optimizer.parameters()``, and phi's meta-loss, losses and (detached) state.
        ``share``: the indices i of the pairs to run (default all; see the module doc)."""
        with torch.no_grad():
            phi = flatten(list(optimizer.parameters()))
            eps = _share(_perturbations(optimizer, phi, self.pairs, self.sigma, generator), share)
            center = _truncation(task, optimizer, state, weights, self.meta_loss)
            perturbed = _FrozenCopy(optimizer)

            def loss(perturbed_phi: Tensor) -> Tensor:
                at = perturbed.at(perturbed_phi)
                return _truncation(task, at, state, weights, self.meta_loss).meta_loss

            delta = [loss(phi + e) - loss(phi - e) for e in eps]
            grads = _es_gradient(eps, delta, self.sigma, optimizer, self.pairs)
        return MetaGradient(grads, float(center.meta_loss), center.losses, center.state)


@dataclass
class PESState:
    """Where PES's particles stand in the current unroll (all detached, all at the same step)."""

    center: UnrollState  # the unperturbed phi's trajectory
    positive: list[UnrollState]  # particle i+, run with phi + eps_i^j in every truncation j
    negative: list[UnrollState]  # its antithetic twin i-, run with phi - eps_i^j
    xi: Tensor  # (N, P): xi_i = sum_j eps_i^j over the truncations so far; P = phi's size


@dataclass(frozen=True)
class PES:
    """Persistent evolution strategies: unbiased over an unroll cut into truncations."""

    sigma: float = 0.01  # standard deviation of each coordinate of eps (learned_optimization's)
    pairs: int = 8  # N antithetic pairs of particles, each pair with its own persistent states
    meta_loss: str = META_LOSSES[0]  # "plain" (the paper), "relative" or "log": see unroll

    def __post_init__(self) -> None:
        _check_options(self.sigma, self.pairs, self.meta_loss)

    def init(
        self, optimizer: StepOptimizer, task: Task, share: Sequence[int] | None = None
    ) -> PESState:
        """The start of an unroll of ``task``: every particle at theta_0 with a fresh optimizer
        state, xi = 0. Call it for every new task (the end of a horizon). ``share``: the pairs
        this state holds (default all; see the module doc)."""
        start = init_unroll(task, optimizer).detached()
        size = sum(p.numel() for p in optimizer.parameters())
        ref = next(optimizer.parameters())
        n = self.pairs if share is None else len(share)
        xi = torch.zeros(n, size, dtype=ref.dtype, device=ref.device)
        return PESState(start, [start] * n, [start] * n, xi)

    def meta_gradient(
        self,
        optimizer: StepOptimizer,
        task: Task,
        state: PESState,
        weights: Sequence[float],
        generator: torch.Generator | None = None,
        share: Sequence[int] | None = None,
    ) -> tuple[MetaGradient, PESState]:
        """The next truncation, ``len(weights)`` steps: fresh eps_i, xi_i += eps_i, each
        particle continues from its own state; returns g = 1 / (2 N sigma^2) sum_i xi_i
        (L(i+) - L(i-)) with phi's meta-loss, losses and state, and the particles' new state.
        ``share``: the pairs to run, those ``state`` holds (default all; see the module doc)."""
        with torch.no_grad():
            phi = flatten(list(optimizer.parameters()))
            n = self.pairs if share is None else len(share)
            if state.xi.shape != (n, phi.numel()):
                raise InvalidInput(
                    f"PESState for {state.xi.shape[0]} pairs and {state.xi.shape[1]} optimizer "
                    f"parameters, given {n} pairs and {phi.numel()}: call PES.init"
                )
            eps = _share(_perturbations(optimizer, phi, self.pairs, self.sigma, generator), share)
            xi = state.xi + eps
            center = _truncation(task, optimizer, state.center, weights, self.meta_loss)
            perturbed = _FrozenCopy(optimizer)
            positive = [
                _truncation(task, perturbed.at(phi + e), s, weights, self.meta_loss)
                for e, s in zip(eps, state.positive)
            ]
            negative = [
                _truncation(task, perturbed.at(phi - e), s, weights, self.meta_loss)
                for e, s in zip(eps, state.negative)
            ]
            delta = [p.meta_loss - n.meta_loss for p, n in zip(positive, negative)]
            grads = _es_gradient(xi, delta, self.sigma, optimizer, self.pairs)
        result = MetaGradient(grads, float(center.meta_loss), center.losses, center.state)
        return result, PESState(
            center.state, [p.state for p in positive], [n.state for n in negative], xi
        )


class _FrozenCopy:
    """A copy of an optimizer whose parameters are set to any phi, the original untouched."""

    def __init__(self, optimizer: StepOptimizer) -> None:
        self.module = copy.deepcopy(optimizer).requires_grad_(False)

    def at(self, phi: Tensor) -> StepOptimizer:
        """The copy with its parameters set to the flat vector ``phi`` (shape (P,))."""
        vector_to_parameters(phi, self.module.parameters())
        return self.module


def _perturbations(
    optimizer: StepOptimizer,
    phi: Tensor,
    pairs: int,
    sigma: float,
    generator: torch.Generator | None,
) -> Tensor:
    """eps_i ~ N(0, sigma^2 I), shape (pairs, P), drawn on the CPU then moved to phi's device;
    0 on the coordinates of parameters that are not meta-trained (``requires_grad`` False:
    ``meta.train_only``), so that only the others are perturbed and estimated (drawn all the
    same, so that a seed gives the trained coordinates the same numbers either way)."""
    z = sigma * torch.randn(pairs, phi.numel(), generator=generator, dtype=phi.dtype)
    params = list(optimizer.parameters())
    if not all(p.requires_grad for p in params):
        z *= torch.cat([torch.full((p.numel(),), float(p.requires_grad)) for p in params])
    return z.to(phi.device)


def _share(eps: Tensor, share: Sequence[int] | None) -> Tensor:
    """The rows of ``eps`` (all N pairs' perturbations) of the pairs in ``share``."""
    if share is None:
        return eps
    if any(not 0 <= i < len(eps) for i in share):
        raise InvalidInput(f"Invalid share: {list(share)} (pair indices 0..{len(eps) - 1})")
    return eps[list(share)]


def _es_gradient(
    directions: Tensor,
    delta: Sequence[Tensor],
    sigma: float,
    optimizer: StepOptimizer,
    pairs: int,
) -> list[Tensor]:
    """1 / (2 N sigma^2) sum_i directions_i delta_i over the pairs run (N = ``pairs``, all of
    them): directions (n, P), delta the n antithetic differences L(+) - L(-); split like
    ``optimizer.parameters()``. No pairs: zeros."""
    if not delta:
        return [torch.zeros_like(p) for p in optimizer.parameters()]
    delta = torch.stack(list(delta))
    flat = (directions * delta.unsqueeze(1)).sum(0) / (2 * pairs * sigma**2)
    return unflatten(flat, list(optimizer.parameters()))


def _truncation(
    task: Task,
    optimizer: StepOptimizer,
    state: UnrollState,
    weights: Sequence[float],
    meta_loss: str,
) -> UnrollResult:
    """``unroll``'s meta-loss and losses of ``len(weights)`` steps from ``state``, computed
    without a meta-graph (the inner loop of ``rollout``); the state is detached."""
    state = differentiable(state.detached())
    f = task_loss(task, state)
    start_loss = f.loss.detach().mean()
    total = start_loss.new_zeros(())
    losses = []
    for w in weights:
        step = inner_step(task, optimizer, state, f, meta_graph=False)
        state, f = step.state, step.f
        loss = f.loss.detach()
        losses.append(loss)
        if w != 0:
            term = loss.clamp_min(1e-30).log() if meta_loss == "log" else loss
            total = total + w * term.mean()
    if meta_loss == "relative":
        total = total / start_loss.clamp_min(1e-30)
    return UnrollResult(total, torch.stack(losses), state.detached())
