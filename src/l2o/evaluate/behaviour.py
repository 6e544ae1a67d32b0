"""Pictures of what an optimizer does, beyond its loss curve.

* ``record_steps``: gradients, updates and hidden state at chosen steps of a rollout (used for
  TensorBoard histograms and for the update-vs-gradient figure).
* ``plot_update_vs_gradient``: the learned update as a function of the gradient at a few
  steps: a line through the origin is a learning rate, a step function is sign descent, a
  spread that depends on the past is momentum or adaptivity.
* ``plot_trajectories``: paths of the learned optimizer and tuned baselines on the contour plot
  of a 2-D function (Rosenbrock, an ill-conditioned 2-D quadratic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from l2o.errors import InvalidInput
from l2o.evaluate.report import save_figure
from l2o.meta.unroll import differentiable, init_unroll, inner_step, task_loss
from l2o.optimizers import StepOptimizer, make_baseline
from l2o.optimizers.base import flatten
from l2o.tasks import QuadraticTask, RosenbrockTask
from l2o.tasks.base import Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def record_steps(
    optimizer: StepOptimizer, task: Task, steps: int, at: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """Roll out ``steps`` steps, as ``l2o.evaluate.rollout`` does; at each step t in ``at``
    (1-based: the t-th update) keep

    * "gradient", "update": grad_{t-1} and g_{t-1} flattened, (N,) for N coordinates;
    * "state": the optimizer's state h_t after the update;
    * "loss": f(theta_t) of every problem after the update, (num_problems,);
    * "buffers": the task's buffers after t steps (running statistics; [] for tasks without).

    Tensors other than the state's are float32 copies on the CPU."""
    at = set(at)
    state = differentiable(init_unroll(task, optimizer))
    f = task_loss(task, state)
    records: dict[int, dict[str, Any]] = {}
    for t in range(1, steps + 1):
        step = inner_step(task, optimizer, state, f, meta_graph=False)
        state, f = step.state, step.f
        if t in at:
            records[t] = {
                "gradient": _cpu(flatten(step.grads)),
                "update": _cpu(flatten(step.updates)),
                "state": state.opt_state,
                "loss": _cpu(f.loss),
                "buffers": [_cpu(b) for b in state.buffers],
            }
    return records


def _cpu(tensor: Tensor) -> Tensor:
    return tensor.detach().float().cpu()


def state_histograms(optimizer: StepOptimizer, task: Task, steps: int) -> dict[str, Tensor]:
    """Tensors worth a TensorBoard histogram: updates at the first, middle and last step, and
    the hidden and cell states of each LSTM layer at the last step."""
    marks = sorted({1, max(steps // 2, 1), steps})
    records = record_steps(optimizer, task, steps, marks)
    out = {f"optimizer/updates_step_{t}": r["update"] for t, r in records.items()}
    last = records[steps]["state"]
    for key, label in (("h", "hidden"), ("c", "cell")):
        if isinstance(last, dict) and isinstance(last.get(key), list):
            for k, value in enumerate(last[key]):
                out[f"optimizer/{label}_layer_{k}"] = value.detach().float().cpu().reshape(-1)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_update_vs_gradient(
    optimizer: StepOptimizer,
    task: Task,
    path: str | Path,
    steps: Iterable[int] = (1, 10, 50, 100),
    title: str = "",
) -> Path:
    """Scatter of update g_t against gradient grad_t at each of ``steps``, one panel each."""
    steps = sorted(steps)
    records = record_steps(optimizer, task, max(steps), steps)
    return save_figure(update_vs_gradient_figure(records, title), path)


def update_vs_gradient_figure(
    records: Mapping[int, Mapping[str, Tensor]], title: str = ""
) -> Figure:
    """One panel per step of ``records`` (step -> flat "gradient" and "update", as
    ``record_steps`` keeps them): update against gradient, one dot per coordinate.

    Gradients span many decades, so the gradient axis is symmetric-log, with the decades of
    ``gradient_decades``: linear up to the first. Its tick labels are 0 and every second of
    those decades down from the largest, so that they do not overlap in a 3.2-inch panel; the
    decades between get unlabelled ticks."""
    plt = _pyplot()
    steps = sorted(records)
    fig, axes = plt.subplots(
        1, len(steps), figsize=(3.2 * len(steps), 3.2), dpi=110, sharey=True, squeeze=False
    )
    for ax, t in zip(axes[0], steps):
        g, u = records[t]["gradient"], records[t]["update"]
        ax.scatter(g.numpy(), u.numpy(), s=4, alpha=0.4)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        decades = gradient_decades(g)
        if decades:
            ax.set_xscale("symlog", linthresh=decades[0])
            ax.set_xticks([-d for d in decades[::-1]] + [0.0] + decades, minor=True)
            labelled = decades[::-1][::2]  # the largest decade, and every second one below it
            ax.set_xticks([-d for d in labelled] + [0.0] + labelled[::-1])
        ax.set_xlabel("gradient")
        ax.set_title(f"step {t}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("update g_t")
    fig.suptitle(title or "learned update vs gradient (one dot per coordinate)")
    fig.tight_layout()
    return fig


def gradient_decades(gradient: Tensor, span: int = 2) -> list[float]:
    """The powers of ten that a symmetric-log axis of ``gradient``'s values marks, ascending:
    the first is the axis' linear threshold, the last the largest power of ten at or below the
    largest |value|. The first is at or below the larger of the 5th percentile of the nonzero
    |values| and ``span`` decades below the largest, so the log part of the axis spans at most
    ``span`` + 1 decades, and the few values far smaller than the rest (1e-20 next to 1e-3) fall
    in its linear part instead of getting decades of their own. Empty when no value is finite
    and nonzero (a linear axis then)."""
    magnitudes = gradient.detach().abs().double().reshape(-1)
    magnitudes = magnitudes[torch.isfinite(magnitudes) & (magnitudes > 0)]
    if magnitudes.numel() == 0:
        return []
    largest = float(magnitudes.max())
    low = float(magnitudes.kthvalue(math.ceil(0.05 * magnitudes.numel())).values)
    first = math.floor(math.log10(max(low, largest * 10.0**-span)))
    return [10.0**k for k in range(first, math.floor(math.log10(largest)) + 1)]


def two_d_task(function: str) -> Task:
    """A single 2-D problem for trajectory pictures: "rosenbrock" from (-1.2, 1), or an
    ill-conditioned "quadratic" (condition number 25) from (-1.5, 1.5)."""
    if function == "rosenbrock":
        return RosenbrockTask(torch.tensor([[-1.2, 1.0]]))
    if function == "quadratic":
        W = torch.tensor([[[1.0, 0.0], [0.0, 0.2]]]) @ _rotation(math.pi / 6)
        return QuadraticTask(W, torch.zeros(1, 2), torch.tensor([[-1.5, 1.5]]))
    raise InvalidInput(f"unknown 2-D function {function!r} (valid: rosenbrock, quadratic)")


def _rotation(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[[c, -s], [s, c]]])


def trajectory(optimizer: StepOptimizer, task: Task, steps: int) -> Tensor:
    """Positions theta_0 .. theta_steps of a single 2-D problem: shape (steps + 1, 2)."""
    state = differentiable(init_unroll(task, optimizer))
    f = task_loss(task, state)
    path = [state.params[0].detach().reshape(-1).clone()]
    for _ in range(steps):
        step = inner_step(task, optimizer, state, f, meta_graph=False)
        state, f = step.state, step.f
        path.append(state.params[0].detach().reshape(-1).clone())
    return torch.stack(path)


def tune_on_task(name: str, task: Task, steps: int, grid: Iterable[float]) -> float:
    """The learning rate of baseline ``name`` with the lowest final loss on this one task."""
    best, best_loss = None, math.inf
    for lr in grid:
        end = trajectory(make_baseline(name, lr), task, steps)[-1]
        loss = float(task.loss([end.reshape(1, -1)]).item())
        if math.isfinite(loss) and loss < best_loss:
            best, best_loss = lr, loss
    if best is None:
        raise InvalidInput(f"every learning rate of {name} diverged on this function")
    return best


def plot_trajectories(
    learned: Mapping[str, StepOptimizer],
    function: str,
    path: str | Path,
    steps: int = 100,
    baselines: Iterable[str] = ("sgd", "nag", "rmsprop", "adam"),
    grid: Iterable[float] | None = None,
) -> Path:
    """Contours of a 2-D function with the path of each optimizer from the same start.
    Baselines use the learning rate that is best on this very function (shown in the legend)."""
    from l2o.evaluate.compare import lr_grid

    task = two_d_task(function)
    grid = list(grid or lr_grid(1e-4, 10.0, 4))
    paths: dict[str, Tensor] = {}
    for name, opt in learned.items():
        paths[name] = trajectory(opt.eval(), task, steps)
    for name in baselines:
        lr = tune_on_task(name, task, steps, grid)
        paths[f"{name} (lr {lr:.3g})"] = trajectory(make_baseline(name, lr), task, steps)

    plt = _pyplot()
    everything = torch.cat([p[torch.isfinite(p).all(1)] for p in paths.values()])
    lo = torch.minimum(everything.min(0).values, torch.tensor([-2.0, -1.0])) - 0.2
    hi = torch.maximum(everything.max(0).values, torch.tensor([2.0, 2.0])) + 0.2
    xs = torch.linspace(float(lo[0]), float(hi[0]), 200)
    ys = torch.linspace(float(lo[1]), float(hi[1]), 200)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
    Z = _loss_on_points(task, points).reshape(X.shape)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    levels = torch.logspace(
        math.log10(max(float(Z.min()), 1e-3)), math.log10(float(Z.max())), 25
    ).numpy()
    ax.contour(X.numpy(), Y.numpy(), Z.numpy(), levels=levels, cmap="Greys", linewidths=0.6)
    for name, p in paths.items():
        ax.plot(p[:, 0].numpy(), p[:, 1].numpy(), marker=".", markersize=2, linewidth=1.2,
                label=name)  # fmt: skip
    start = paths[next(iter(paths))][0]
    ax.plot([float(start[0])], [float(start[1])], "k*", markersize=10, label="start")
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_title(f"{function}: {steps} steps from the same start")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _loss_on_points(task: Task, points: Tensor) -> Tensor:
    """f at many 2-D points of a single-problem task, evaluated as one batch of problems."""
    if isinstance(task, RosenbrockTask):
        return RosenbrockTask(points, task.a, task.b).loss([points])
    if isinstance(task, QuadraticTask):
        n = points.shape[0]
        many = QuadraticTask(task.W.expand(n, -1, -1), task.y.expand(n, -1), points)
        return many.loss([points])
    raise ValueError(f"cannot draw contours of {type(task).__name__}")
