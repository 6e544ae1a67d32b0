"""Benchmark: how much do learning-rate schedules give the hand-designed optimizers?

A learned optimizer meta-trained for a fixed horizon can learn a schedule (it knows the step
through its state, or directly with ``optimizer.time_scales``), while the tuned baselines of
benchmarks/mnist/run.py and benchmarks/conv/run.py run at a constant learning rate. This measures
what a schedule alone is worth: Adam and NAG with their learning rate multiplied at step t
(of T) by

    constant 1 | cosine (1 + cos(pi t / T)) / 2 | linear 1 - t / T
    warmup-cosine min(1, (t + 1) / 10) * (1 + cos(pi t / T)) / 2

(multiplying the update is multiplying the learning rate, exactly, for these optimizers). For
each optimizer and schedule the learning rate is tuned on one batch of ``--runs`` validation
nets (the mean loss at step T), then the tuned pair trains ``--runs`` held-out test nets (test
tasks from 2000 on, disjoint from the other benchmarks'). Writes <name>.{json,md} (<name> by
default <task>-schedules) into benchmarks/<task>/results/ (--out). Reproduce, from the
repository root:

    python -m benchmarks.tools.schedules --config configs/conv.toml --device cuda \
        --name conv-schedules
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.evaluate import rollout
from l2o.meta.seeds import task_seed
from l2o.optimizers import make_baseline
from l2o.optimizers.base import OptState, StepOptimizer

SCHEDULES = ("constant", "cosine", "linear", "warmup-cosine")
GRIDS = {  # around the constant rates benchmarks/conv/run.py and mnist/run.py tuned
    "adam": [0.0032, 0.0056, 0.01, 0.0178, 0.0316, 0.0562],
    "nag": [0.031, 0.055, 0.1, 0.178, 0.316],
}
FIRST_TASK = 2000


def factor(schedule: str, t: int, steps: int) -> float:
    """The learning-rate multiplier at step t (0-based) of ``steps``."""
    cosine = 0.5 * (1 + math.cos(math.pi * t / steps))
    return {
        "constant": 1.0,
        "cosine": cosine,
        "linear": 1 - t / steps,
        "warmup-cosine": min(1.0, (t + 1) / 10) * cosine,
    }[schedule]


class Scheduled(StepOptimizer):
    """A hand-designed optimizer whose updates are multiplied by the schedule's factor."""

    def __init__(self, inner: StepOptimizer, schedule: str, steps: int) -> None:
        super().__init__()
        self.inner, self.schedule, self.steps = inner, schedule, steps

    def init_state(self, params) -> OptState:
        return {"inner": self.inner.init_state(params), "t": 0}

    def step(self, grads, state):
        scale = factor(self.schedule, state["t"], self.steps)
        updates, inner = self.inner.step(grads, state["inner"])
        return [scale * u for u in updates], {"inner": inner, "t": state["t"] + 1}


def final_loss(name: str, lr: float, schedule: str, task, steps: int, device: str) -> torch.Tensor:
    opt = Scheduled(make_baseline(name, lr), schedule, steps).to(device)
    return rollout(opt, task, steps).losses[-1].double().cpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "conv.toml"))
    parser.add_argument("--runs", type=int, default=48, help="nets for tuning, and for testing")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="where the runs train, e.g. cuda")
    parser.add_argument("--name", help="result file stem; default <task>-schedules")
    parser.add_argument("--out", help="default benchmarks/<task>/results")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    family = dataclasses.replace(load_config(args.config).task, num_problems=args.runs)
    args.name = args.name or f"{family.name}-schedules"
    args.out = args.out or str(results_dir(family.name))
    validation = family.sample(task_seed("validation", FIRST_TASK), device=args.device)
    test = family.sample(task_seed("test", FIRST_TASK), device=args.device)
    rows: list[dict[str, Any]] = []
    for name, grid in GRIDS.items():
        for schedule in SCHEDULES:
            tuning = {}
            for lr in grid:
                losses = final_loss(name, lr, schedule, validation, args.steps, args.device)
                mean = float(losses.mean())
                tuning[lr] = mean if math.isfinite(mean) else None
                print(f"{name} {schedule} lr {lr:g}: validation {mean:.4f}", flush=True)
            finite = {lr: v for lr, v in tuning.items() if v is not None}
            best = min(finite, key=finite.get)
            losses = final_loss(name, best, schedule, test, args.steps, args.device)
            rows.append(
                {
                    "optimizer": name,
                    "schedule": schedule,
                    "lr": best,
                    "at_grid_edge": best in (grid[0], grid[-1]),
                    "validation": tuning,
                    "test_final_loss_mean": float(losses.mean()),
                    "test_final_losses": losses.tolist(),
                }
            )
            print(f"{name} {schedule} lr {best:g}: test {losses.mean():.4f}", flush=True)
    reference = next(r for r in rows if (r["optimizer"], r["schedule"]) == ("adam", "constant"))
    for r in rows:
        r["ratio_to_constant_adam"] = r["test_final_loss_mean"] / reference["test_final_loss_mean"]
    result = {
        "runs": args.runs,
        "steps": args.steps,
        "task": family.to_config(),
        "rows": rows,
        "note": args.note,
        "machine": machine(),
    }
    lines = [
        f"# Learning-rate schedules for the baselines: {args.name}",
        "",
        f"Mean training (minibatch) loss at step {args.steps} of {args.runs} held-out runs of "
        f"the {family.name} task of {Path(args.config).name} on {family.dataset}; each "
        f"optimizer's learning rate tuned per schedule on {args.runs} other (validation) runs. "
        "Ratios are to Adam at its tuned constant rate. Schedules: constant; cosine "
        "(1 + cos(pi t / T)) / 2; linear 1 - t / T; warmup-cosine: cosine with a linear warmup "
        "over the first 10 steps.",
        "",
        "| optimizer | schedule | tuned lr | test loss at step T | / constant Adam |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        edge = " (grid edge)" if r["at_grid_edge"] else ""
        lines.append(
            f"| {r['optimizer']} | {r['schedule']} | {r['lr']:g}{edge} "
            f"| {r['test_final_loss_mean']:.4f} | {r['ratio_to_constant_adam']:.3f} |"
        )
    write_result(args.out, args.name, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
