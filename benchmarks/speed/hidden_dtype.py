"""Benchmark (issue #30): what storing the LSTM's hidden state in bfloat16 does to the losses.

``LearnedOptimizer(params, NAME, hidden_dtype="bfloat16")`` keeps the coordinatewise LSTM's h
and c in bfloat16 (160 instead of 320 bytes per parameter); the maths stays in float32 and each
new h and c is rounded when stored. For each shipped LSTM on the family it was meta-trained on,
this script trains the same held-out test tasks (``task_seed("test", i)``) through the
front-end with the state in float32 and in bfloat16, and with torch.optim.Adam at the best of a
few learning rates (picked on the first tasks, as a scale), and reports the mean final loss of
each, the ratio bfloat16 / float32 per task (median and range) and each learned optimizer's
ratio to Adam, and the state's bytes per parameter.

    python -m benchmarks.speed.hidden_dtype [--tasks 16] [--note "..."]

Writes benchmarks/speed/results/speed-hidden-dtype.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import l2o
from benchmarks.common import machine, results_dir, write_result
from l2o.config import load_config
from l2o.meta.seeds import task_seed
from l2o.optim import LearnedOptimizer

CASES = {  # shipped optimizer: (preset of its task family, steps)
    "mnist-mlp-lstm": ("configs/mnist.toml", 100),
    "quadratic-lstm": ("configs/quadratic.toml", 100),
}
ADAM_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def train(task, make_optimizer, steps: int) -> tuple[float, int]:
    """Final mean loss over the task's problems after ``steps`` steps, and state bytes."""
    params = [p.clone().requires_grad_() for p in task.init_params()]
    opt = make_optimizer(params)
    for t in range(steps):
        loss = task.loss(params, task.batch(t)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(task.loss(params, task.batch(steps)).mean())
    state = sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for v in s.values()
        for t in (v if isinstance(v, list) else [v])
        if isinstance(t, torch.Tensor)
    )
    return final, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16, help="held-out test tasks per case")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(results_dir("speed")))
    args = parser.parse_args()
    torch.set_num_threads(1)

    cases = {}
    for name, (preset, steps) in CASES.items():
        family = load_config(preset).task
        tasks = [family.sample(task_seed("test", i)) for i in range(args.tasks)]
        n = sum(p[0].numel() for p in tasks[0].init_params())  # coordinates of one problem
        scores = {
            lr: statistics.mean(
                train(t, lambda p, lr=lr: torch.optim.Adam(p, lr=lr), steps)[0] for t in tasks[:4]
            )
            for lr in ADAM_LRS
        }
        best = min(scores, key=lambda lr: scores[lr])
        runs = {"float32": [], "bfloat16": [], "adam": []}
        bytes_per_param = {}
        for task in tasks:
            params_total = sum(p.numel() for p in task.init_params())
            for dtype in ("float32", "bfloat16"):
                final, state = train(
                    task,
                    lambda p, d=dtype, n=name: LearnedOptimizer(p, l2o.load(n), hidden_dtype=d),
                    steps,
                )
                runs[dtype].append(final)
                bytes_per_param[dtype] = state / params_total
            runs["adam"].append(
                train(task, lambda p, lr=best: torch.optim.Adam(p, lr=lr), steps)[0]
            )
        ratios = [b / f for b, f in zip(runs["bfloat16"], runs["float32"])]
        cases[name] = {
            "preset": preset,
            "steps": steps,
            "coordinates_per_problem": n,
            "adam_lr": best,
            "final_losses": runs,
            "mean": {k: statistics.mean(v) for k, v in runs.items()},
            "ratio_bf16_fp32": {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            },
            "bytes_per_param": bytes_per_param,
        }
        print(name, cases[name]["mean"], cases[name]["ratio_bf16_fp32"], flush=True)

    lines = [
        '# The LSTM\'s hidden state in bfloat16 (`LearnedOptimizer(..., hidden_dtype="bfloat16")`)',
        "",
        f"{args.tasks} held-out test tasks of each optimizer's own family, trained through the "
        "front-end (state in float32, then in bfloat16) and with torch.optim.Adam at the best of "
        f"{', '.join(map(str, ADAM_LRS))} on the first 4 tasks:",
        "",
        "| optimizer | steps | mean final loss, float32 | bfloat16 | Adam | "
        "bf16 / fp32 per task: median [min, max] | LSTM / Adam, fp32 | bf16 | state B/param fp32 | bf16 |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, c in cases.items():
        m, r, b = c["mean"], c["ratio_bf16_fp32"], c["bytes_per_param"]
        lines.append(
            f"| {name} | {c['steps']} | {m['float32']:.4g} | {m['bfloat16']:.4g} | "
            f"{m['adam']:.4g} (lr {c['adam_lr']}) | {r['median']:.3f} [{r['min']:.3f}, "
            f"{r['max']:.3f}] | {m['float32'] / m['adam']:.3f} | {m['bfloat16'] / m['adam']:.3f} | "
            f"{b['float32']:.0f} | {b['bfloat16']:.0f} |"
        )
    result = {"cases": cases, "note": args.note or "(no note)", "machine": machine()}
    write_result(args.out, "speed-hidden-dtype", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
