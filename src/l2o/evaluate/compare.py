"""Fair comparison of learned and hand-designed optimizers.

The protocol, the same for every optimizer:
  * tasks are drawn from fixed seed streams: baselines' learning rates are tuned on validation
    tasks, everything is reported on separate test tasks that no optimizer saw before;
  * each run starts from a fresh optimizer state at the same theta_0 and sees the same batches;
  * every optimizer is scored at the same step (f(theta_T)) and by its summed loss, and, when
    asked, its final parameters on the task's held-out test set (loss, accuracy);
  * wall-clock seconds are measured on the same rollout code for all.

Under torchrun (``compare(..., world=)``, ``l2o.distributed``) the rollouts are shared among
the processes, round robin, in two rounds: the learned optimizers' test runs with every
baseline's learning-rate grid on the validation tasks, then the tuned baselines' test runs.
Each rollout is the one a single process runs (same task, same fresh state), so the results
are the single process's; "seconds" still sums the wall-clock of every rollout, wherever it ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2o.distributed import World
from l2o.errors import InvalidInput
from l2o.evaluate.rollout import Rollout, rollout
from l2o.meta.seeds import task_seed
from l2o.optimizers import BASELINES, StepOptimizer, make_baseline
from l2o.tasks.base import TaskFamily

Progress = Callable[[str], None]


def lr_grid(low: float = 1e-4, high: float = 10.0, per_decade: int = 4) -> list[float]:
    """Log-spaced learning rates from ``low`` to ``high``, ``per_decade`` points per decade."""
    if not (0 < low < high) or per_decade < 1:
        raise InvalidInput(
            f"Invalid grid: low={low}, high={high}, per_decade={per_decade} "
            f"(need 0 < low < high and per_decade >= 1)"
        )
    decades = math.log10(high / low)
    n = round(decades * per_decade) + 1
    return [float(x) for x in np.logspace(math.log10(low), math.log10(high), n)]


def run_on_tasks(
    name: str,
    optimizer: StepOptimizer,
    family: TaskFamily,
    steps: int,
    stream: str,
    num_tasks: int,
    device: str = "cpu",
    test_metrics: bool = False,
) -> OptimizerResult:
    """Roll ``optimizer`` out on tasks 0..num_tasks-1 of ``stream``: losses of shape
    (steps + 1, runs) and total wall-clock seconds. With ``test_metrics``, tasks that have a
    held-out test set (``task.evaluate``) also score each run's final parameters on it."""
    curves, seconds, metrics = [], 0.0, []
    for i in range(num_tasks):
        task = family.sample(task_seed(stream, i), device=device)
        result = rollout(optimizer, task, steps)
        curves.append(result.losses)
        seconds += result.seconds
        if test_metrics and hasattr(task, "evaluate"):
            metrics.append(_evaluate(task, result))
    scores = {k: torch.cat([m[k] for m in metrics]) for k in metrics[0]} if metrics else {}
    return OptimizerResult(name, torch.cat(curves, dim=1), seconds, test_metrics=scores)


def _evaluate(task: Any, result: Rollout) -> dict[str, Tensor]:
    """The task's test-set metrics of theta_T, e.g. {"loss": (n,), "accuracy": (n,)}; tasks
    with running statistics (batch norm) are scored with the rollout's, in eval mode."""
    if result.buffers:
        return task.evaluate(result.params, buffers=result.buffers)
    return task.evaluate(result.params)


def final_score(losses: Tensor) -> float:
    """Mean f(theta_T) over runs; a run that diverged (inf/NaN) makes the score inf."""
    final = losses[-1].double()
    return float(final.mean()) if bool(torch.isfinite(final).all()) else math.inf


def tune_learning_rate(
    name: str,
    family: TaskFamily,
    steps: int,
    num_tasks: int,
    grid: Sequence[float],
    device: str = "cpu",
) -> tuple[float, dict[float, float]]:
    """The learning rate of baseline ``name`` with the lowest mean final loss on validation
    tasks. Returns (best lr, {lr: score})."""
    scores = {}
    for lr in grid:
        runs = run_on_tasks(
            name, make_baseline(name, lr), family, steps, "validation", num_tasks, device
        )
        scores[lr] = final_score(runs.losses)
    return _best(name, family, grid, scores), scores


def _best(
    name: str, family: TaskFamily, grid: Sequence[float], scores: dict[float, float]
) -> float:
    """The learning rate of the lowest score; refused if every one diverged."""
    best = min(scores, key=lambda lr: scores[lr])
    if not math.isfinite(scores[best]):
        raise InvalidInput(
            f"every learning rate of {name} diverged on {family.name}: grid {list(grid)}"
        )
    return best


@dataclass
class OptimizerResult:
    """One optimizer's test runs: losses (steps + 1, runs) and how it was configured."""

    name: str
    losses: Tensor
    seconds: float
    lr: float | None = None  # the tuned learning rate (baselines)
    tuning: dict[float, float] = field(default_factory=dict)  # lr -> validation score
    # Each run's theta_T on the task's held-out test set, e.g. {"loss": (runs,), "accuracy": ...}
    test_metrics: dict[str, Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        losses = self.losses.double()
        final = losses[-1]
        finite = torch.isfinite(final)
        steps = losses.shape[0] - 1
        q = torch.nanquantile(losses, torch.tensor([0.25, 0.5, 0.75], dtype=losses.dtype), dim=1)
        summary = {
            "lr": self.lr,
            "final_loss_mean": float(final.mean()),
            "final_loss_std": float(final.std()) if final.numel() > 1 else 0.0,
            "final_loss_median": float(final.median()),
            "summed_loss_mean": float(losses[1:].sum(0).mean()),
            "diverged_runs": int((~finite).sum()),
            "seconds": self.seconds,
            "seconds_per_step": self.seconds / max(steps, 1),
            "curve_mean": _clean(losses.mean(1)),
            "curve_std": _clean(losses.std(1)) if losses.shape[1] > 1 else [0.0] * (steps + 1),
            "curve_q25": _clean(q[0]),
            "curve_median": _clean(q[1]),
            "curve_q75": _clean(q[2]),
            "tuning": {
                f"{lr:.6g}": s if math.isfinite(s) else None for lr, s in self.tuning.items()
            },
        }
        for key, values in self.test_metrics.items():
            values = values.double()
            summary[f"test_{key}_mean"] = _finite(values.mean())
            summary[f"test_{key}_std"] = _finite(values.std()) if values.numel() > 1 else 0.0
        return summary


def _finite(value: Tensor) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _clean(values: Tensor) -> list[float | None]:
    """Tensor -> list for JSON, with inf/NaN as None (JSON has no inf)."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


@dataclass
class Comparison:
    task: dict[str, Any]
    steps: int
    num_test_tasks: int
    num_validation_tasks: int
    results: dict[str, OptimizerResult]

    @property
    def runs(self) -> int:
        return next(iter(self.results.values())).losses.shape[1]

    def ratio(self, name: str, reference: str = "adam") -> float:
        """Mean final loss of ``name`` divided by that of ``reference``."""
        return (
            self.results[name].summary()["final_loss_mean"]
            / self.results[reference].summary()["final_loss_mean"]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "steps": self.steps,
            "num_test_tasks": self.num_test_tasks,
            "num_validation_tasks": self.num_validation_tasks,
            "runs": self.runs,
            "optimizers": {name: r.summary() for name, r in self.results.items()},
        }


def count_rollouts(
    num_learned: int, num_baselines: int, grid_size: int, validation_tasks: int, test_tasks: int
) -> int:
    """How many task rollouts ``compare`` runs (the total of its progress bar)."""
    return num_learned * test_tasks + num_baselines * (grid_size * validation_tasks + test_tasks)


def compare(
    learned: Mapping[str, StepOptimizer],
    family: TaskFamily,
    steps: int = 100,
    baselines: Sequence[str] = ("sgd", "nag", "rmsprop", "adam"),
    num_validation_tasks: int = 2,
    num_test_tasks: int = 8,
    grid: Sequence[float] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    bar: Any | None = None,
    test_metrics: bool = False,
    world: World | None = None,
) -> Comparison:
    """Tune each baseline's learning rate on validation tasks, then run learned optimizers and
    tuned baselines on the same test tasks.

    ``progress`` receives one-line messages; ``bar`` (an ``l2o.monitor.Progress`` sized by
    ``count_rollouts``) advances by one per task rolled out, for a progress bar with ETA.
    ``test_metrics``: also score each test run's final parameters on the task's held-out test
    set, for tasks that have one (``OptimizerResult.test_metrics``). ``world``: the processes
    of a torchrun job that share the rollouts (every one of them calls ``compare`` alike and
    gets the whole comparison; see the module doc)."""
    grid = list(grid or lr_grid())
    for name in baselines:
        if name not in BASELINES:
            raise InvalidInput(f"unknown optimizer {name!r} (valid: {', '.join(BASELINES)})")
    say = progress or (lambda _: None)
    advance = bar.update if bar is not None else (lambda n: None)
    if world is not None and world.distributed:
        learned = {name: optimizer.to(device).eval() for name, optimizer in learned.items()}
        results = _compare_shared(
            learned, family, steps, baselines, num_validation_tasks, num_test_tasks, grid,
            device, say, advance, test_metrics, world,
        )  # fmt: skip
        return Comparison(family.to_config(), steps, num_test_tasks, num_validation_tasks, results)
    results: dict[str, OptimizerResult] = {}
    for name, optimizer in learned.items():
        say(f"evaluating {name} on {num_test_tasks} test tasks")
        results[name] = run_on_tasks(
            name, optimizer.to(device).eval(), family, steps, "test", num_test_tasks, device,
            test_metrics,
        )  # fmt: skip
        advance(num_test_tasks)
    for name in baselines:
        say(
            f"tuning {name} over {len(grid)} learning rates on {num_validation_tasks} validation tasks"
        )
        lr, tuning = tune_learning_rate(name, family, steps, num_validation_tasks, grid, device)
        advance(len(grid) * num_validation_tasks)
        edge = " (at the edge of the grid: widen it)" if lr in (grid[0], grid[-1]) else ""
        say(f"  best lr {lr:.4g}{edge}")
        result = run_on_tasks(
            name, make_baseline(name, lr), family, steps, "test", num_test_tasks, device,
            test_metrics,
        )  # fmt: skip
        results[name] = replace(result, lr=lr, tuning=tuning)
        advance(num_test_tasks)
    return Comparison(family.to_config(), steps, num_test_tasks, num_validation_tasks, results)


@dataclass(frozen=True)
class _Run:
    """One rollout of a shared comparison: an optimizer (a learned one's name, or a baseline
    at ``lr``) on task ``index`` of ``stream``."""

    name: str
    lr: float | None
    stream: str
    index: int


def _compare_shared(
    learned: Mapping[str, StepOptimizer],
    family: TaskFamily,
    steps: int,
    baselines: Sequence[str],
    num_validation_tasks: int,
    num_test_tasks: int,
    grid: list[float],
    device: str,
    say: Progress,
    advance: Callable[[int], None],
    test_metrics: bool,
    world: World,
) -> dict[str, OptimizerResult]:
    """``compare``'s results with the rollouts shared among ``world``'s processes (module doc)."""
    tests = range(num_test_tasks)
    say(
        f"{world.size} processes: {', '.join(learned)} on {num_test_tasks} test tasks and "
        f"{', '.join(baselines)} over {len(grid)} learning rates on {num_validation_tasks} "
        f"validation tasks"
    )
    first = [_Run(name, None, "test", i) for name in learned for i in tests]
    first += [
        _Run(name, lr, "validation", i)
        for name in baselines
        for lr in grid
        for i in range(num_validation_tasks)
    ]
    done = _shared_rollouts(first, learned, family, steps, device, test_metrics, world)
    advance(len(first))
    results = {
        name: _result(name, [done[_Run(name, None, "test", i)] for i in tests]) for name in learned
    }
    tuned: dict[str, tuple[float, dict[float, float]]] = {}
    for name in baselines:
        scores = {}
        for lr in grid:
            runs = [done[_Run(name, lr, "validation", i)] for i in range(num_validation_tasks)]
            scores[lr] = final_score(torch.cat([losses for losses, _, _ in runs], dim=1))
        lr = _best(name, family, grid, scores)
        edge = " (at the edge of the grid: widen it)" if lr in (grid[0], grid[-1]) else ""
        say(f"  {name}: best lr {lr:.4g}{edge}")
        tuned[name] = (lr, scores)
    second = [_Run(name, tuned[name][0], "test", i) for name in baselines for i in tests]
    done = _shared_rollouts(second, learned, family, steps, device, test_metrics, world)
    advance(len(second))
    for name in baselines:
        lr, scores = tuned[name]
        result = _result(name, [done[_Run(name, lr, "test", i)] for i in tests])
        results[name] = replace(result, lr=lr, tuning=scores)
    return results


_Rolled = tuple[Tensor, float, dict[str, Tensor] | None]  # losses, seconds, test-set metrics


def _shared_rollouts(
    runs: list[_Run],
    learned: Mapping[str, StepOptimizer],
    family: TaskFamily,
    steps: int,
    device: str,
    test_metrics: bool,
    world: World,
) -> dict[_Run, _Rolled]:
    """Every run of ``runs``, each process rolling out every ``size``-th one (round robin:
    neighbours in the list cost alike), gathered on every process."""
    mine = {}
    for run in runs[world.rank :: world.size]:
        optimizer = learned[run.name] if run.lr is None else make_baseline(run.name, run.lr)
        task = family.sample(task_seed(run.stream, run.index), device=device)
        result = rollout(optimizer, task, steps)
        metrics = None
        if test_metrics and run.stream == "test" and hasattr(task, "evaluate"):
            metrics = {k: v.cpu() for k, v in _evaluate(task, result).items()}
        mine[run] = (result.losses, result.seconds, metrics)
    return {run: rolled for part in world.gather(mine) for run, rolled in part.items()}


def _result(name: str, rolled: list[_Rolled]) -> OptimizerResult:
    """``run_on_tasks``'s result from its rollouts, in task order."""
    metrics = [m for _, _, m in rolled if m is not None]
    scores = {k: torch.cat([m[k] for m in metrics]) for k in metrics[0]} if metrics else {}
    return OptimizerResult(
        name,
        torch.cat([losses for losses, _, _ in rolled], dim=1),
        sum(seconds for _, seconds, _ in rolled),
        test_metrics=scores,
    )
