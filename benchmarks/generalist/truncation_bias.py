"""Diagnostic (issue #26): does meta-training's truncation bias the generalist's step size?

At the untrained start of configs/generalist.toml (nominal Adam at 0.01 with the hypergradient
adaptation of each tensor's rate), on training tasks of its mixture (horizons 50-300 here, so
that a whole unroll fits in memory), the meta-gradient of the same objective, the mean over
t = 1..T of log f(theta_t), is taken two ways:

* truncated: summed over the truncations of K = 25 steps that meta-training backpropagates
  through one at a time, the state carried between them (as ``l2o train`` does);
* full: backpropagation through the whole unroll of T steps (K = T).

For the two scalars that set the size of the steps, the nominal term's log rate (its bias,
``nominal.bias``) and the adaptation's log gain (``adaptation_log_gain``). A positive
derivative asks meta-training to shrink the steps (gradient descent moves against it).

    python -m benchmarks.generalist.truncation_bias [--tasks 16]

Writes benchmarks/generalist/results/generalist-truncation-bias.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.meta.seeds import task_seed
from l2o.runs import build_learned_optimizer

CONFIG = ROOT / "configs/generalist.toml"
TRUNCATION = 25
HORIZONS = (50, 300)
SCALARS = ("nominal.bias", "adaptation_log_gain")


def derivatives(optimizer, task, truncation: int) -> list[float]:
    """d(mean_t log f(theta_t))/d(scalar) for SCALARS, summed over truncations of the unroll."""
    names = [name for name, _ in optimizer.named_parameters()]
    index = [names.index(s) for s in SCALARS]
    estimator = TruncatedBPTT(meta_loss="log")
    weights = [1.0 / task.horizon] * task.horizon
    state, total = init_unroll(task, optimizer), [0.0] * len(SCALARS)
    for start in range(0, task.horizon, truncation):
        result = estimator.meta_gradient(
            optimizer, task, state, weights[start : start + truncation]
        )
        total = [t + float(result.grads[i]) for t, i in zip(total, index)]
        state = result.state
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(CONFIG)
    family = dataclasses.replace(config.task, horizons=HORIZONS)
    optimizer = build_learned_optimizer(config)
    rows, tasks = [], []
    for i in range(args.tasks):
        task = family.sample(task_seed("train", 1000 + i))
        truncated = derivatives(optimizer, task, TRUNCATION)
        full = derivatives(optimizer, task, task.horizon)
        member = task.member["name"] if hasattr(task, "member") else type(task).__name__
        tasks.append({"task": i, "member": member, "horizon": task.horizon,
                      "truncated": truncated, "full": full})  # fmt: skip
        cells = " | ".join(f"{t:+.4f} | {f:+.4f}" for t, f in zip(truncated, full))
        rows.append(f"| {i} | {member} | {task.horizon} | {cells} |")
        print(rows[-1], flush=True)
    counts = {
        s: {kind: sum(1 for t in tasks if t[kind][k] > 0) for kind in ("truncated", "full")}
        for k, s in enumerate(SCALARS)
    }
    result = {"config": str(CONFIG.relative_to(ROOT)), "truncation": TRUNCATION,
              "horizons": list(HORIZONS), "tasks": tasks, "positive": counts,
              "note": args.note, "machine": machine()}  # fmt: skip
    n = len(tasks)
    lines = [
        "# Truncation bias at the generalist's start (#26)",
        "",
        "d(mean_t log f(θ_t))/d(scalar) at the untrained start of configs/generalist.toml, on "
        f"{n} training tasks of its mixture (horizons {HORIZONS[0]}-{HORIZONS[1]}): summed over "
        f"truncations of K = {TRUNCATION} (as meta-training takes it) and through the whole "
        "unroll. Positive: meta-training shrinks the steps "
        "(`benchmarks/generalist/truncation_bias.py`).",
        "",
        "| scalar | positive, truncated | positive, full unroll |",
        "|---|---|---|",
        *(f"| `{s}` | {c['truncated']} of {n} | {c['full']} of {n} |" for s, c in counts.items()),
        "",
        "| task | member | T | nominal.bias, truncated | full | gain, truncated | full |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_result(results_dir("generalist"), "generalist-truncation-bias", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
