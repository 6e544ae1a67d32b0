"""Benchmark: several learned optimizers side by side on the same held-out runs.

For choosing between meta-training variants (e.g. the meta-loss of configs/mnist.toml) without
touching the benchmark's own test runs: every checkpoint and Adam (at a given learning rate,
by default the one tuned in benchmarks/<task>/results/<task>.json, i.e. mnist.json or
conv.json) train the same ``--runs`` nets of the preset's task for ``--steps`` steps, on test
tasks disjoint from those of benchmarks/mnist/run.py and benchmarks/conv/run.py (test seeds from
1000 on);
each gets its mean final training loss and its ratio to Adam with a bootstrap 95% interval, the
same for its loss averaged over steps 1..T (how fast it gets there), and the norm of each
parameter tensor at step T (e.g. how far the conv weights that batch norm divides by have
grown). ``--baselines adam,nag`` adds other hand-designed optimizers at their tuned learning
rates. Writes <name>.{json,md} and <name>.png (the mean loss curves) into the results folder of
the task's experiment, benchmarks/<task>/results/ (--out), <name> by default <task>-checkpoints.
Reproduce, from the repository root:

    python -m benchmarks.tools.checkpoints LABEL=CHECKPOINT ... --name mnist-meta-loss --note ...

(Result files record it under its former names, benchmarks/checkpoints.py and, before that,
benchmarks/mnist_checkpoints.py; benchmarks/README.md maps old commands to new ones.)

Other settings of the task family with --set (and --steps), e.g. the 2-layer net of Fig. 4:
--set 'task.hidden_sizes=[20, 20]'; Adam's lr is then the one mnist.json tuned for that setting
(an error when it tuned none: give --adam-lr). The conv family of configs/conv.toml:
--config configs/conv.toml --problems-per-task 4 (its nets are far bigger to batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from benchmarks.common import ROOT, machine, ratio_precision, results_dir, write_result
from l2o.checkpoint import load_checkpoint, resolve
from l2o.config import load_config
from l2o.evaluate import plot_loss_curves, rollout
from l2o.meta.seeds import task_seed
from l2o.optimizers import BASELINES, make_baseline

FIRST_TEST_TASK = 1000  # benchmarks/mnist/run.py uses test tasks 0-49, conv/run.py 0-2


def tuned_lr(task: dict, steps: int, baseline: str = "adam") -> float | None:
    """The lr benchmarks/<task>/run.py tuned for ``baseline`` on the setting with this task and
    steps, if any (in benchmarks/<task>/results/<task>.json)."""
    path = results_dir(task["name"]) / f"{task['name']}.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    for setting in report["datasets"].get(task["dataset"], {}).get("settings", {}).values():
        tuned = setting["optimizers"].get(baseline)
        # The same task up to how many problems it batches.
        same_task = {**setting["task"], "num_problems": task["num_problems"]} == task
        if tuned and setting["steps"] == steps and same_task:
            return tuned["lr"]
    return None


def baseline_lrs(parser, family, steps: int, given: dict[str, float | None], hint: str) -> dict:
    """Each baseline's learning rate: the one given, else the one <task>.json tuned for
    this task and number of steps. A parser error (its ``hint`` says what to do) for a given rate
    that is not > 0 and for baselines with neither."""
    bad = {b: lr for b, lr in given.items() if lr is not None and not lr > 0}
    if bad:
        parser.error(f"learning rates must be > 0, got {bad}")
    task = family.to_config()
    lrs = {b: tuned_lr(task, steps, b) if lr is None else lr for b, lr in given.items()}
    untuned = [b for b, lr in lrs.items() if lr is None]
    if untuned:
        parser.error(
            f"benchmarks/{family.name}/results/{family.name}.json tuned {untuned} for no setting "
            f"with this task and {steps} steps; {hint}"
        )
    return lrs


def sample_tasks(family, kind: str, first: int, runs: int, device: str = "cpu") -> list:
    """Tasks of ``family`` with seeds task_seed(kind, first), (kind, first + 1), ..., enough for
    ``runs`` problems (the last task may hold more)."""
    count = -(-runs // family.num_problems)
    return [family.sample(task_seed(kind, first + i), device=device) for i in range(count)]


def run_norms(params: list[torch.Tensor]) -> torch.Tensor:
    """The norm of each parameter tensor of each run: shape (tensors, problems), float64, from a
    task's parameters, whose first dimension is the problem."""
    return torch.stack([p.detach().double().flatten(1).norm(dim=1).cpu() for p in params])


def describe(family) -> str:
    """The net in a few words: MLP(20, sigmoid), conv net (16, 16, 16 channels; fc 32)."""
    hidden = ", ".join(map(str, family.hidden_sizes))
    if family.name == "conv":
        channels = ", ".join(map(str, family.channels))
        labels = f"; labels {list(family.classes)}" if family.classes else ""
        return f"the conv net ({channels} channels; fc {hidden}{labels})"
    return f"MLP({hidden}, {family.activation})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="LABEL=CHECKPOINT")
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist.toml"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--problems-per-task", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="task override, e.g. 'task.hidden_sizes=[20, 20]'",
    )
    parser.add_argument(
        "--adam-lr",
        type=float,
        help="default: the one <task>.json tuned for this task and number of steps",
    )
    parser.add_argument(
        "--baselines",
        default="adam",
        help="hand-designed optimizers to run, comma-separated, each at the lr <task>.json "
        f"tuned for it (valid: {', '.join(BASELINES)}); Adam, the reference, always runs",
    )
    parser.add_argument("--name", help="result file stem; default <task>-checkpoints")
    parser.add_argument("--out", help="default benchmarks/<task>/results")
    parser.add_argument("--note", default="")
    parser.add_argument("--device", default="cpu", help="where the runs train, e.g. cuda")
    args = parser.parse_args()
    pairs = [text.split("=", 1) for text in args.checkpoints]
    if any(len(p) != 2 for p in pairs):
        parser.error("each checkpoint is LABEL=CHECKPOINT")
    baselines = ["adam"] + [b for b in args.baselines.split(",") if b and b != "adam"]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        parser.error(f"unknown --baselines {unknown} (valid: {', '.join(BASELINES)})")
    clash = sorted({label for label, _ in pairs} & set(baselines))
    if clash:
        parser.error(f"checkpoint labels {clash} are baselines' names; choose other labels")
    family = dataclasses.replace(
        load_config(args.config, args.set).task, num_problems=args.problems_per_task
    )
    if family.name not in ("mnist", "conv"):
        parser.error(
            f"--config {args.config} is a {family.name!r} task; this benchmark compares "
            f"checkpoints on the mnist and conv families (benchmarks/mnist, benchmarks/conv)"
        )
    args.name = args.name or f"{family.name}-checkpoints"
    args.out = args.out or str(results_dir(family.name))
    given = {b: args.adam_lr if b == "adam" else None for b in baselines}
    hint = "give --adam-lr (Adam) or leave them out of --baselines"
    lrs = baseline_lrs(parser, family, args.steps, given, hint)
    tasks = sample_tasks(family, "test", FIRST_TEST_TASK, args.runs, args.device)
    optimizers = {label: load_checkpoint(resolve(path))[0] for label, path in pairs}
    optimizers.update({b: make_baseline(b, lr) for b, lr in lrs.items()})
    optimizers = {label: opt.to(args.device) for label, opt in optimizers.items()}
    # Every optimizer on every task, each from a fresh state on the same tasks.
    done = {
        label: [rollout(opt, t, args.steps) for t in tasks] for label, opt in optimizers.items()
    }
    # Per run (tasks' problems concatenated): f(theta_t) for t = 0..T, and the norm of each
    # parameter tensor at step T (and at theta_0, the same for all optimizers).
    curves = {
        label: torch.cat([r.losses.double() for r in runs_], 1) for label, runs_ in done.items()
    }
    norms = {
        label: torch.cat([run_norms(r.params) for r in runs_], 1) for label, runs_ in done.items()
    }
    initial_norms = torch.cat([run_norms(task.init_params()) for task in tasks], 1)
    # Per run: f(theta_T), and the loss averaged over steps 1..T (the area under its curve).
    finals = {label: c[-1] for label, c in curves.items()}
    averages = {label: c[1:].mean(0) for label, c in curves.items()}
    runs = len(finals["adam"])
    names = list(tasks[0].param_names)

    def row(label: str) -> dict:
        final = ratio_precision(finals[label], finals["adam"], runs, draws=2000)
        average = ratio_precision(averages[label], averages["adam"], runs, draws=2000)
        return {
            "checkpoint": dict(pairs).get(label),
            "lr": lrs.get(label),
            "final_loss_mean": float(finals[label].mean()),
            **final,
            "mean_loss_over_steps": float(averages[label].mean()),
            "mean_loss_over_steps_ratio": average["ratio"],
            "mean_loss_over_steps_ratio_95_interval": average["ratio_95_interval"],
            "curve_mean": curves[label].mean(1).tolist(),
            "curve_q25": curves[label].quantile(0.25, dim=1).tolist(),
            "curve_q75": curves[label].quantile(0.75, dim=1).tolist(),
            "weight_norms_mean": dict(zip(names, norms[label].mean(1).tolist())),
        }

    rows = {label: row(label) for label in curves}
    result = {
        "runs": runs,
        "steps": args.steps,
        "adam_lr": lrs["adam"],
        "task": family.to_config(),
        "optimizers": rows,
        "initial_weight_norms_mean": dict(zip(names, initial_norms.mean(1).tolist())),
        "note": args.note,
        "machine": machine(),
    }
    others = ", ".join(f"{b} at lr {lrs[b]:.3g}" for b in baselines[1:])
    lines = [
        f"# Learned optimizers side by side: {args.name}",
        "",
        f"Mean training (minibatch) loss at step {args.steps} over the same {runs} "
        f"held-out runs of {describe(family)} on {family.dataset} (test tasks "
        f"{FIRST_TEST_TASK} on, disjoint from benchmarks/{family.name}/run.py's), and the ratio to "
        f"Adam at lr {lrs['adam']:.3g} with a bootstrap 95% interval"
        + (f"; also {others}" if others else "")
        + f". The last columns: the loss averaged over steps 1-{args.steps} (how fast each "
        "gets there), with its ratio to Adam's.",
        "",
        f"| optimizer | checkpoint | loss at step {args.steps} | / Adam (95% interval) "
        f"| mean loss over steps 1-{args.steps} | / Adam (95% interval) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        low, high = r["ratio_95_interval"]
        a_low, a_high = r["mean_loss_over_steps_ratio_95_interval"]
        lines.append(
            f"| {label} | {r['checkpoint'] or '-'} | {r['final_loss_mean']:.4f} "
            f"| {r['ratio']:.3f} ({low:.3f}-{high:.3f}) | {r['mean_loss_over_steps']:.4f} "
            f"| {r['mean_loss_over_steps_ratio']:.3f} ({a_low:.3f}-{a_high:.3f}) |"
        )
    labels = list(rows)
    lines += [
        "",
        f"Norm of each parameter tensor at step {args.steps} (mean over the runs), and at step 0:",
        "",
        "| parameter | step 0 | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for name in names:
        cells = [f"{rows[label]['weight_norms_mean'][name]:.3g}" for label in labels]
        start = result["initial_weight_norms_mean"][name]
        lines.append(f"| {name} | {start:.3g} | " + " | ".join(cells) + " |")
    plot_loss_curves(
        result,
        Path(args.out) / f"{args.name}.png",
        title=f"{args.name}: mean over {runs} test runs (shaded: 25-75%)",
    )
    lines += ["", f"![loss curves]({args.name}.png)"]
    write_result(args.out, args.name, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
