"""Benchmark: how far below tuned Adam's loss at step T is a target such as 0.85 of it?

Two measurements on the held-out runs of benchmarks/tools/checkpoints.py (test tasks 1000 on), with
the baselines at the learning rates benchmarks/<task>/results/<task>.json tuned for T steps:

1. **Steps.** Adam and NAG train on for ``--long-steps`` steps. For each, the first step at which
   its mean loss over the runs (averaged over a centred window of ``--window`` steps, since
   minibatch losses are noisy) falls to ``--target`` x Adam's mean loss at step T (averaged the
   same way), i.e. how many steps tuned Adam and NAG need to reach what the target asks of an
   optimizer in T.
2. **One learning rate per parameter tensor.** Adam with a multiplier on its tuned learning rate
   for every tensor (``GroupedOptimizer``, one Adam per tensor), the multipliers found by
   coordinate descent on ``--tune-runs`` validation nets (other seeds: validation tasks 3000
   on): for each tensor in turn, x ``--factor`` and / ``--factor``, kept while the mean
   validation loss at step T falls. Then its loss at step T on the held-out runs, against Adam's.
   How much of the target per-layer step sizes alone (which a learned optimizer could find) give.

Writes <name>.{json,md,png} (<name> by default <task>-headroom) into benchmarks/<task>/results/
(--out). Reproduce, from the repository root:

    python -m benchmarks.tools.headroom --config configs/conv.toml --name conv-headroom
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from benchmarks.common import (
    ROOT,
    final_losses,
    loss_curves,
    machine,
    ratio_precision,
    results_dir,
    write_result,
)
from benchmarks.tools.checkpoints import FIRST_TEST_TASK, baseline_lrs, sample_tasks
from l2o.config import load_config
from l2o.evaluate.report import save_figure
from l2o.optimizers import make_baseline
from l2o.optimizers.grouped import GroupedOptimizer

FIRST_TUNE_TASK = 3000


def per_tensor_adam(lr: float, names: list[str], multipliers: dict[str, float]) -> GroupedOptimizer:
    """Adam with learning rate lr x multipliers[name] on each parameter tensor (groups are named
    without dots, which module names cannot hold)."""
    groups = [n.replace(".", "_") for n in names]
    return GroupedOptimizer(
        {g: make_baseline("adam", lr * multipliers[n]) for g, n in zip(groups, names)}, groups
    )


def smooth(mean_curve: torch.Tensor, window: int) -> torch.Tensor:
    """A centred moving average (shorter at the ends)."""
    x = mean_curve.view(1, 1, -1)
    return F.avg_pool1d(x, window, 1, window // 2, count_include_pad=False).view(-1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "conv.toml"))
    parser.add_argument(
        "--set", action="append", default=[], help="task override, e.g. task.batch_size=64"
    )
    parser.add_argument("--adam-lr", type=float, help="default: the one <task>.json tuned")
    parser.add_argument("--nag-lr", type=float, help="default: the one <task>.json tuned")
    parser.add_argument("--runs", type=int, default=48, help="held-out nets")
    parser.add_argument(
        "--tune-runs", type=int, default=16, help="validation nets for the multipliers"
    )
    parser.add_argument("--problems-per-task", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="T: the horizon of the target")
    parser.add_argument("--long-steps", type=int, default=300)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--window", type=int, default=11)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--name", help="result file stem; default <task>-headroom")
    parser.add_argument("--out", help="default benchmarks/<task>/results")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    for flag in ("runs", "tune_runs", "problems_per_task", "steps", "window"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.long_steps <= args.steps:
        parser.error(f"--long-steps must be > --steps ({args.steps}), got {args.long_steps}")
    if not (0 < args.target < 1 and args.factor > 1):
        parser.error(f"need 0 < --target < 1 and --factor > 1, got {args.target}, {args.factor}")

    family = dataclasses.replace(
        load_config(args.config, args.set).task, num_problems=args.problems_per_task
    )
    args.name = args.name or f"{family.name}-headroom"
    args.out = args.out or str(results_dir(family.name))
    given = {"adam": args.adam_lr, "nag": args.nag_lr}
    lrs = baseline_lrs(parser, family, args.steps, given, "give --adam-lr / --nag-lr")
    test = sample_tasks(family, "test", FIRST_TEST_TASK, args.runs)
    tune = sample_tasks(family, "validation", FIRST_TUNE_TASK, args.tune_runs)

    # 1. How many steps tuned Adam and NAG need to reach the target.
    long = {
        b: loss_curves(make_baseline(b, lr), test, args.long_steps)[:, : args.runs]
        for b, lr in lrs.items()
    }
    smoothed = {b: smooth(c.mean(1), args.window) for b, c in long.items()}
    goal = args.target * float(smoothed["adam"][args.steps])
    reach = {
        b: next((t for t, v in enumerate(s.tolist()) if v <= goal), None)
        for b, s in smoothed.items()
    }
    steps_text = ", ".join(
        f"{b} at step {reach[b]}"
        if reach[b] is not None
        else f"{b} not within {args.long_steps} steps"
        for b in lrs
    )
    print(f"{args.target} x Adam's loss at step {args.steps} reached by {steps_text}", flush=True)

    # 2. Adam with one learning-rate multiplier per tensor, by coordinate descent.
    names = test[0].param_names
    multipliers = {n: 1.0 for n in names}

    def tune_loss(mults: dict[str, float]) -> float:
        opt = per_tensor_adam(lrs["adam"], names, mults)
        loss = final_losses({"trial": opt}, tune, args.steps)["trial"][: args.tune_runs].mean()
        return float(loss) if math.isfinite(loss) else math.inf

    best = tune_loss(multipliers)
    search = [{"multipliers": dict(multipliers), "validation": best}]
    print(f"per-tensor Adam, all x1: validation {best:.4f}", flush=True)

    def descend(name: str, factor: float) -> bool:
        """Multiply ``name``'s multiplier by ``factor`` while that lowers the validation loss;
        True if it did at least once."""
        nonlocal best, multipliers
        moved = False
        while True:
            trial = {**multipliers, name: multipliers[name] * factor}
            loss = tune_loss(trial)
            search.append({"multipliers": trial, "validation": loss})
            print(f"{name} x{trial[name]:.3g}: validation {loss:.4f}", flush=True)
            if loss >= best:
                return moved
            best, multipliers, moved = loss, trial, True

    for name in names:
        if not descend(name, args.factor):
            descend(name, 1 / args.factor)
    per_tensor = per_tensor_adam(lrs["adam"], names, multipliers)
    final = {
        "adam": long["adam"][args.steps],
        "nag": long["nag"][args.steps],
        "per-tensor adam": final_losses({"p": per_tensor}, test, args.steps)["p"][: args.runs],
    }
    rows = [
        {
            "optimizer": label,
            "loss_at_T": float(losses.mean()),
            **ratio_precision(losses, final["adam"], block=args.runs, draws=10000),
        }
        for label, losses in final.items()
    ]

    result = {
        "task": family.to_config(),
        "runs": args.runs,
        "tune_runs": args.tune_runs,
        "steps": args.steps,
        "long_steps": args.long_steps,
        "target": args.target,
        "window": args.window,
        "lrs": lrs,
        "reach_step": reach,
        "mean_curves": {b: c.mean(1).tolist() for b, c in long.items()},
        "multipliers": multipliers,
        "search": search,
        "rows": rows,
        "note": args.note,
        "machine": machine(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for b, s in smoothed.items():
        ax.plot(s.numpy(), label=f"{b} (lr {lrs[b]:.3g}), mean of {args.runs} runs")
    ax.axhline(
        goal, color="gray", linestyle="--", label=f"{args.target} x Adam at step {args.steps}"
    )
    ax.axvline(args.steps, color="gray", linestyle=":")
    ax.set(xlabel="step", ylabel=f"training loss (moving average of {args.window})", yscale="log")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / f"{args.name}.png")
    lines = [
        f"# How far is {args.target} of tuned Adam at step {args.steps}? {args.name}",
        "",
        f"Held-out runs: {args.runs} of the {family.name} task of {Path(args.config).name} on "
        f"{family.dataset} (test tasks {FIRST_TEST_TASK} on, the runs of "
        "benchmarks/tools/checkpoints.py); Adam at lr "
        f"{lrs['adam']:.3g} and NAG at lr {lrs['nag']:.3g} ("
        + "; ".join(
            f"{b}'s given by --{b}-lr"
            if given[b] is not None
            else f"{b}'s as {family.name}.json tuned it for {args.steps} steps"
            for b in lrs
        )
        + ").",
        "",
        f"**Steps.** Adam's mean loss at step {args.steps} (moving average over {args.window} "
        f"steps) is {float(smoothed['adam'][args.steps]):.4f}; {args.target} of it is "
        f"{goal:.4f}. Trained on at the same rates, they reach it: {steps_text}.",
        "",
        f"**One learning rate per tensor.** Adam with a multiplier per parameter tensor on lr "
        f"{lrs['adam']:.3g}, found by coordinate descent (x{args.factor:g} or /{args.factor:g}, "
        f"kept while better) on {args.tune_runs} validation nets "
        f"({len(search)} trials): "
        + ", ".join(f"{n} x{m:.3g}" for n, m in multipliers.items() if m != 1.0)
        + " (the others x1).",
        "",
        f"| optimizer | loss at step {args.steps} | / Adam (95% interval) |",
        "|---|---|---|",
    ]
    for r in rows:
        low, high = r["ratio_95_interval"]
        lines.append(
            f"| {r['optimizer']} | {r['loss_at_T']:.4f} | {r['ratio']:.3f} ({low:.3f}-{high:.3f}) |"
        )
    lines += ["", f"![mean loss curves]({args.name}.png)"]
    write_result(out, args.name, result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
