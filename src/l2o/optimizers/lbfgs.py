"""L-BFGS with a fixed step, in the step interface: the maths of ``torch.optim.LBFGS`` with
``max_iter=1`` and no line search, one gradient per step (Nocedal & Wright, 2006, Algorithm 7.4
and 7.5, the two-loop recursion).

At step t = 1, 2, ... with gradient g_t of a problem's coordinates (all its parameter tensors
as one vector, as torch.optim.LBFGS flattens them):

    s = d_{t-1} step_{t-1},  y = g_t - g_{t-1}                 the newest pair, kept if y.s > 1e-10
    (the last ``history_size`` kept pairs; gamma = y.s / y.y of the newest kept pair, else 1)
    d_t = -H_t g_t                                              the two-loop recursion, H_0 = gamma I
    theta_{t+1} = theta_t + step_t d_t,   step_t = lr            (step_1 = min(1, 1 / |g_1|_1) lr,
                                                                 d_1 = -g_1)

As in torch.optim.LBFGS, a problem whose gradient has max |g| <= ``tolerance_grad`` is not
stepped and keeps its state (it has converged), and a direction that does not descend
(g.d > -``tolerance_change``) is not taken (but is kept as the next pair's s, as torch does).
The updates are torch.optim.LBFGS(max_iter=1)'s, step for step (tested), except in one corner:
torch does not count a step at which it found the problem converged, so a problem converged at
its very first gradient would take its first real step as torch's first (d_1 = -g, the 1/|g|_1
scaling); here every call counts.

``lr`` is the fixed step that evaluation tunes as it tunes the other baselines' learning rates
(``make_baseline("lbfgs", lr)``); L-BFGS with torch's strong-Wolfe line search, which evaluates
f and its gradient several times per step, runs as a closure on a task in
``l2o.evaluate.classical``, where every evaluation is counted.

Batched problems never share: every dot product runs over one problem's coordinates
(``l2o.optimizers.coupling``, share "all"). State per coordinate: its entries of the last
``history_size`` pairs s and y, the previous gradient and the previous step d step: 2 history_size
+ 2 floats (202 at torch's default history of 100). Work per step: the two-loop recursion,
4 min(t, history_size) dot products and vector updates of N coordinates, over the pairs kept as
rows (the state's (N, history) tensors are transposed views of (history, N) ones, so a pair is
contiguous), and one shift of the history (a copy of 2 history_size N floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_positive_int, is_real
from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.coupling import segments


class LBFGS(StepOptimizer):
    """theta <- theta - lr H_t g_t, H_t the L-BFGS inverse-Hessian estimate (module doc).

    State: ``"step"`` (t), ``"s"`` and ``"y"`` (N, history_size): the kept pairs, oldest first
    (zero columns before the history fills), ``"prev_grad"`` (N,), ``"prev_step"`` (N,): the last
    step d step, and ``"problems"`` (how many problems lead the tensors,
    ``l2o.optimizers.coupling``).
    """

    couples_coordinates = True  # dot products over each problem's coordinates (coupling.py)

    def __init__(
        self,
        lr: float = 1.0,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
    ) -> None:
        super().__init__()
        if not (is_real(lr) and lr >= 0.0):
            raise InvalidInput(f"Invalid learning rate: {lr} (must be >= 0)")
        check_positive_int("history_size", history_size)
        for name, value in (
            ("tolerance_grad", tolerance_grad),
            ("tolerance_change", tolerance_change),
        ):
            if not (is_real(value) and value >= 0.0):
                raise InvalidInput(f"Invalid {name}: {value!r} (must be a number >= 0)")
        self.lr, self.history_size = float(lr), history_size
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)

    def init_state(self, params: Sequence[Tensor], problems: int = 1) -> OptState:
        """An empty history; ``problems``: how many problems lead every tensor (1: the tensors
        are one problem's, as a model's parameters)."""
        check_positive_int("problems", problems)
        flat = flatten(params).detach()
        pairs = flat.new_zeros(flat.numel(), self.history_size)
        zeros = torch.zeros_like(flat)
        return {
            "step": 0,
            "s": pairs,
            "y": pairs,
            "prev_grad": zeros,
            "prev_step": zeros,
            "problems": problems,
        }

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        g = flatten(grads)
        shared = segments(grads, state["problems"], "all")

        def dot(u: Tensor, v: Tensor) -> Tensor:  # per problem: (P,) (or (P, K) for (K, N))
            return shared.sum(u * v, -1)

        def spread(per_problem: Tensor) -> Tensor:  # (P,) -> (N,)
            return shared.spread(per_problem, 0)

        t = state["step"]
        # The pairs as rows, (history, N): the state keeps them as (N, history), one row per
        # coordinate (l2o.optimizers.base), and returns the transposed view of this layout, so
        # that from the second step on the two-loop recursion reads contiguous rows.
        s_hist, y_hist = state["s"].t(), state["y"].t()
        size = s_hist.shape[0]
        if t == 0:
            d = -g
            first = shared.sum(g.abs(), 0).reciprocal().clamp(max=1.0) * self.lr
            step_len: Tensor | float = spread(first)
        else:
            s, y = state["prev_step"], g - state["prev_grad"]
            keep = spread(dot(y, s) > 1e-10)
            shifted_s = torch.cat([s_hist[1:], s.unsqueeze(0)])
            shifted_y = torch.cat([y_hist[1:], y.unsqueeze(0)])
            if bool(keep.all()):  # (a branch only for speed: the same numbers either way)
                s_hist, y_hist = shifted_s, shifted_y
            else:
                s_hist = torch.where(keep, shifted_s, s_hist)
                y_hist = torch.where(keep, shifted_y, y_hist)
            # Only the last min(t, history) pairs can be kept by now; the older rows are zero.
            used = min(t, size)
            recent_s, recent_y = s_hist[size - used :], y_hist[size - used :]
            ys = dot(recent_s, recent_y)  # (used, P): y_i . s_i of every pair
            kept = ys > 1e-10  # a history not yet full (zero rows) and skipped pairs are not
            rho = torch.where(kept, ys.reciprocal(), torch.zeros_like(ys))
            gamma = torch.where(kept[-1], ys[-1] / dot(recent_y[-1], recent_y[-1]), 1.0)
            # the two-loop recursion, newest pair first
            q, alphas = -g, {}
            for i in reversed(range(used)):
                alphas[i] = dot(recent_s[i], q) * rho[i]
                q = q - spread(alphas[i]) * recent_y[i]
            d = q * spread(gamma)
            for i in range(used):
                beta = dot(recent_y[i], d) * rho[i]
                d = d + recent_s[i] * spread(alphas[i] - beta)
            step_len = self.lr
        taken = step_len * d
        converged = spread(shared.amax(g.abs()) <= self.tolerance_grad)
        moves = spread(dot(g, d) <= -self.tolerance_change) & ~converged
        update = torch.where(moves, taken, torch.zeros_like(taken))
        if bool(converged.any()):
            s_hist = torch.where(converged, state["s"].t(), s_hist)
            y_hist = torch.where(converged, state["y"].t(), y_hist)
        new_state = {
            "step": t + 1,
            "s": s_hist.t(),
            "y": y_hist.t(),
            "prev_grad": torch.where(converged, state["prev_grad"], g),
            "prev_step": torch.where(converged, state["prev_step"], taken),
            "problems": state["problems"],
        }
        return unflatten(update, grads), new_state

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "lbfgs",
            "lr": self.lr,
            "history_size": self.history_size,
            "tolerance_grad": self.tolerance_grad,
            "tolerance_change": self.tolerance_change,
        }

    def extra_repr(self) -> str:
        return f"lr={self.lr:g}, history_size={self.history_size}"
