"""Classical optimizers that evaluate more than one gradient per step, run on a task with every
evaluation counted: L-BFGS with torch's strong-Wolfe line search, and conjugate gradient.

The step interface gives an optimizer one gradient per step, so its curves are indexed by
gradient evaluations: f(theta_t) after t of them. These methods evaluate f and its gradient (or
a Hessian-vector product) several times per iteration, so the same budget of evaluations
buys them fewer iterations. Their runs are indexed the same way, by evaluations, so they can
stand in one table with the step-interface optimizers (scored at "step" T = after T
evaluations):

    losses[e] = f of the iterate held after e evaluations, e = 0 .. budget

(the latest iterate whose iteration finished within e evaluations; losses[0] = f(theta_0)).
The fixed-step L-BFGS of the step interface (``l2o.optimizers.LBFGS``, baseline ``"lbfgs"``) is
one gradient per step and is run and tuned like any baseline.

* ``lbfgs_wolfe``: ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``, one problem at a time
  (its dot products must not mix a task's batched problems), one iteration per ``step()`` call
  so that iteration k sees batch k. Each closure call is one evaluation of f and its gradient.
  torch evaluates the closure again at the start of each call, at the point the line search
  accepted and already evaluated: that repeat is served from a cache and not counted (as
  torch's own multi-iteration loop reuses the line search's values).
* ``conjugate_gradient``: for quadratics. Each iteration evaluates the gradient g_k at theta_k
  and the Hessian-vector product H d_k by double backward (Pearlmutter's trick; it costs about
  one more gradient), both counted, and takes the exact line-search step of a quadratic,
  alpha_k = -g_k.d_k / d_k.H d_k, with Fletcher-Reeves directions d_k = -g_k + beta_k d_{k-1},
  beta_k = |g_k|^2 / |g_{k-1}|^2. On a quadratic this is linear conjugate gradient: a d-dim
  quadratic is solved in d iterations (2 d evaluations), up to rounding. Elsewhere it is
  nonlinear CG with a Newton step along each direction (H d at the current point).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.evaluate.compare import OptimizerResult
from l2o.meta.seeds import task_seed
from l2o.tasks.base import Task, TaskFamily


@dataclass
class EvaluationRun:
    """One classical run on a task's problems, indexed by evaluations (module doc)."""

    losses: Tensor  # (budget + 1, num_problems): f of the iterate held after e evaluations
    iterations: Tensor  # (num_problems,): iterations completed within the budget
    evaluations: Tensor  # (num_problems,): evaluations used (at most the budget)
    seconds: float  # wall-clock of the whole run


def _curve(f0: float, reached: Sequence[tuple[int, float]], budget: int) -> Tensor:
    """losses[e] for e = 0..budget from f(theta_0) and (evaluations used, f) per iteration."""
    curve = torch.full((budget + 1,), f0, dtype=torch.float64)
    for used, f in reached:
        curve[used:] = f
    return curve


def lbfgs_wolfe(
    task: Task,
    budget: int,
    lr: float = 1.0,
    history_size: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
) -> EvaluationRun:
    """``torch.optim.LBFGS`` with its strong-Wolfe line search on every problem of ``task``,
    within ``budget`` evaluations of f and its gradient each (module doc). ``lr`` is the initial
    step the line search tries (1: the quasi-Newton step)."""
    if budget < 1:
        raise InvalidInput(f"Invalid budget: {budget} (must be >= 1 evaluation)")
    start = time.perf_counter()
    params0 = [p.detach() for p in task.init_params()]
    curves, iterations, used_all = [], [], []
    for problem in range(task.num_problems):
        theta = [p[problem].clone().requires_grad_() for p in params0]
        opt = torch.optim.LBFGS(
            theta,
            lr=lr,
            max_iter=1,
            history_size=history_size,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            line_search_fn="strong_wolfe",
        )
        cache: dict[Any, tuple[Tensor, list[Tensor]]] = {}
        counter = {"evaluations": 0}

        def loss_at(
            batch_index: int, problem=problem, theta=theta, cache=cache, counter=counter
        ) -> Tensor:
            """f and its gradient (into .grad) at theta: one evaluation, unless seen before."""
            batch = task.batch(batch_index)
            key = (None if batch is None else batch_index, _key(theta))
            if key not in cache:
                full = [
                    torch.cat([p[:problem], t.unsqueeze(0), p[problem + 1 :]])
                    for p, t in zip(params0, theta)
                ]
                with torch.enable_grad():
                    loss = task.loss(full, batch)[problem]
                    grads = list(torch.autograd.grad(loss, theta))
                cache[key] = (loss.detach(), grads)
                counter["evaluations"] += 1
            loss, grads = cache[key]
            for t, g in zip(theta, grads):
                t.grad = g.clone(memory_format=torch.contiguous_format)  # torch views it
            return loss

        f0 = float(loss_at(0))  # the first evaluation, which the first iteration uses
        reached = []
        for k in range(budget):
            batch = task.batch(k)
            cached = (None if batch is None else k, _key(theta)) in cache
            left = budget - counter["evaluations"] - (0 if cached else 1)
            if left < 1:  # not even one evaluation left for the line search
                break
            opt.param_groups[0]["max_eval"] = 1 + left
            before = counter["evaluations"]
            opt.step(lambda k=k: loss_at(k))
            if counter["evaluations"] == before:  # converged: nothing left to do
                break
            # the accepted point, which the line search evaluated (served from the cache)
            reached.append((counter["evaluations"], float(loss_at(k))))
        curves.append(_curve(f0, reached, budget))
        iterations.append(len(reached))
        used_all.append(counter["evaluations"])
    return EvaluationRun(
        torch.stack(curves, dim=1),
        torch.tensor(iterations),
        torch.tensor(used_all),
        time.perf_counter() - start,
    )


def _key(theta: Sequence[Tensor]) -> bytes:
    """The exact values of theta, to recognise a point evaluated before."""
    return b"".join(t.detach().cpu().numpy().tobytes() for t in theta)


def _dot(us: Sequence[Tensor], vs: Sequence[Tensor]) -> Tensor:
    """Per-problem dot products of tensors leading with the problem dimension: (P,)."""
    return sum((u * v).flatten(1).sum(1) for u, v in zip(us, vs))  # type: ignore[return-value]


def _times(per_problem: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    return [per_problem.reshape(-1, *[1] * (t.dim() - 1)) * t for t in tensors]


def conjugate_gradient(task: Task, budget: int) -> EvaluationRun:
    """Conjugate gradient on all problems of ``task`` at once, within ``budget`` evaluations:
    budget // 2 iterations of a gradient and a Hessian-vector product each (module doc)."""
    if budget < 2:
        raise InvalidInput(f"Invalid budget: {budget} (must be >= 2: one iteration)")
    start = time.perf_counter()
    theta = [p.detach().clone() for p in task.init_params()]
    curve: list[Tensor] = []
    direction: list[Tensor] = []
    gg_prev = None
    iterations = budget // 2
    for k in range(iterations + 1):
        leaves = [t.requires_grad_() for t in theta]
        with torch.enable_grad():
            loss = task.loss(leaves, task.batch(k))
            curve.append(loss.detach().double())
            if k == iterations:  # f of the last iterate, for the curve (no evaluation counted)
                break
            grads = torch.autograd.grad(loss.sum(), leaves, create_graph=True)
            g = [t.detach() for t in grads]
            gg = _dot(g, g)
            if gg_prev is None:
                direction = [-t for t in g]
            else:
                beta = torch.where(gg_prev > 0, gg / gg_prev.clamp_min(1e-300), 0.0)
                direction = [-t + s for t, s in zip(g, _times(beta, direction))]
            # H d: the gradient of g . d (each problem's g depends on its own theta only)
            hd = torch.autograd.grad(grads, leaves, grad_outputs=direction)
        curvature = _dot(direction, hd)
        step = torch.where(curvature > 0, -_dot(g, direction) / curvature.clamp_min(1e-300), 0.0)
        theta = [t.detach() + s for t, s in zip(theta, _times(step, direction))]
        gg_prev = gg
    losses = torch.stack(curve)  # f(theta_k), k = 0..iterations
    index = torch.arange(budget + 1).div(2, rounding_mode="floor").clamp(max=iterations)
    problems = losses.shape[1]
    return EvaluationRun(
        losses[index],
        torch.full((problems,), iterations),
        torch.full((problems,), 2 * iterations),
        time.perf_counter() - start,
    )


CLASSICAL: dict[str, Callable[[Task, int], EvaluationRun]] = {
    "lbfgs-wolfe": lbfgs_wolfe,
    "cg": conjugate_gradient,
}


def run_classical_on_tasks(
    name: str,
    family: TaskFamily,
    budget: int,
    stream: str,
    num_tasks: int,
    device: str = "cpu",
) -> tuple[OptimizerResult, Tensor]:
    """``CLASSICAL[name]`` on tasks 0..num_tasks-1 of ``stream`` (as ``run_on_tasks``): its
    result, losses (budget + 1, runs) indexed by evaluations, and the iterations of each run."""
    if name not in CLASSICAL:
        raise InvalidInput(f"unknown optimizer {name!r} (valid: {', '.join(CLASSICAL)})")
    runs = [
        CLASSICAL[name](family.sample(task_seed(stream, i), device=device), budget)
        for i in range(num_tasks)
    ]
    losses = torch.cat([r.losses for r in runs], dim=1).float()
    result = OptimizerResult(name, losses, sum(r.seconds for r in runs))
    return result, torch.cat([r.iterations for r in runs])
