"""Benchmark: the paper's quadratic experiment (section 3.1, Figure 2 left).

Meta-trains the shipped preset (configs/quadratic.toml), evaluates it with tuned SGD, NAG,
RMSprop and Adam on 1000 held-out quadratics (8 test tasks x 125 functions; learning rates
tuned on 2 x 125 validation functions), then scores the LSTM and the tuned Adam on 10,000
held-out functions (the 1000 first) to show how precise a 1000-function ratio is, and writes

    quadratic.json   every number
    quadratic.md     the table, the ratio to tuned Adam, timings, machine
    quadratic.png    loss vs step, paper style

in benchmarks/quadratic/results/ (--out; ``--name`` names them <name>.{json,md,png}). With
--ship the trained optimizer is copied into the package as the pretrained ``quadratic-lstm``.
Reproduce, from the repository root:

    python -m benchmarks.quadratic.run --ship   (1 torch thread; the same weights every time)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.common import (
    ROOT,
    final_losses,
    machine,
    machine_markdown,
    ratio_precision,
    results_dir,
)
from l2o.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from l2o.config import config_from_dict, load_config, load_config_dict
from l2o.evaluate import compare, format_table, plot_loss_curves, write_json
from l2o.meta.seeds import task_seed
from l2o.meta.train import TrainingState
from l2o.optimizers import make_baseline
from l2o.runs import train
from l2o.tasks import QuadraticFamily

TARGET_RATIO = 0.4
TARGET_MINUTES = 15
PRECISION_BLOCKS = 10  # the precision check scores 10 x 1000 held-out functions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quadratic.toml"))
    parser.add_argument("--run-dir", help="default: runs/bench-NAME")
    parser.add_argument("--out", default=str(results_dir("quadratic")))
    parser.add_argument("--name", default="quadratic", help="result file stem (default quadratic)")
    parser.add_argument("--ship", action="store_true", help="copy into l2o/pretrained")
    parser.add_argument("--note", default="", help="a sentence for the .md (e.g. machine load)")
    parser.add_argument(
        "--from-run",
        help="evaluate a finished run of the same config instead of meta-training again "
        "(its recorded meta-training time is reported)",
    )
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: the tensors are small, and a given thread count makes "
        "meta-training bit-for-bit reproducible)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config, args.set)
    if args.from_run:
        args.run_dir = args.from_run
        state = finished_run(Path(args.from_run), config)
    else:
        args.run_dir = args.run_dir or str(ROOT / "runs" / f"bench-{args.name}")
        print(f"meta-training {args.config} for {config.meta.epochs} epochs", flush=True)
        state = train(config, args.run_dir, force=True)
    task = config.task
    coordinate_steps = config.meta.epochs * config.meta.horizon * task.num_problems * task.dim

    optimizer, record = load_checkpoint(Path(args.run_dir) / "checkpoints" / "best")
    print("evaluating on 1000 held-out quadratics", flush=True)
    family = QuadraticFamily(dim=task.dim, num_problems=125, variant=task.variant)
    comparison = compare(
        {"lstm": optimizer}, family, steps=config.meta.horizon, num_validation_tasks=2,
        num_test_tasks=8, progress=lambda s: print(s, flush=True),
    )  # fmt: skip
    result = comparison.to_json()
    ratio = comparison.ratio("lstm", "adam")
    result["benchmark"] = {
        "lstm_over_tuned_adam": ratio,
        "target_ratio": TARGET_RATIO,
        "meta_training_seconds": state.seconds,
        "meta_training_epochs": config.meta.epochs,
        "best_epoch": state.best_epoch,
        "meta_training_coordinate_steps_per_second": coordinate_steps / state.seconds,
        "target_meta_training_minutes": TARGET_MINUTES,
        "config": config.to_dict(),
        "machine": machine(),
        "tail": tail_breakdown(comparison),
        "precision": precision(optimizer, family, comparison, config.meta.horizon),
        "meta_trained_by": "this command"
        if not args.from_run
        else f"an earlier run of the same config ({args.from_run}); its recorded time",
    }
    out = Path(args.out)
    write_json(out / f"{args.name}.json", result)
    plot_loss_curves(
        result, out / f"{args.name}.png",
        title=f"10-d quadratics: mean over {result['runs']} held-out functions",
    )  # fmt: skip
    table = format_table(result)
    b = result["benchmark"]
    md = [
        f"# Quadratic benchmark `{args.name}` (paper section 3.1, Figure 2 left)",
        "",
        f"Preset: `{Path(args.config).relative_to(ROOT) if Path(args.config).is_relative_to(ROOT) else args.config}`"
        + (f" with overrides {args.set}" if args.set else ""),
        "",
        f"LSTM / tuned Adam, mean f(theta_100) over {result['runs']} held-out quadratics: "
        f"**{ratio:.3f}** (target <= {TARGET_RATIO}; the paper's figure shows about 0.8).",
        "",
        f"Meta-training: {config.meta.epochs} epochs in {b['meta_training_seconds'] / 60:.1f} min "
        f"(target <= {TARGET_MINUTES} min on 2 CPU cores), best validation at epoch "
        f"{b['best_epoch']}; throughput "
        f"{b['meta_training_coordinate_steps_per_second']:,.0f} coordinate-steps/s "
        "(forward + backward, validation included).",
        "",
        "```",
        table,
        "```",
        "",
        tail_markdown(b["tail"]),
        "",
        precision_markdown(b["precision"]),
        "",
        args.note,
        "",
        f"![loss vs step]({args.name}.png)",
        "",
        machine_markdown(b["machine"]),
    ]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print(table)
    print(f"LSTM / tuned Adam = {ratio:.3f}; meta-training {state.seconds / 60:.1f} min")

    if args.ship:
        ship(optimizer, record, result, args.name)
    return 0


def tail_breakdown(comparison, fractions=(0.01, 0.05, 0.2)) -> list[dict]:
    """Where the mean final loss comes from: the functions on which tuned Adam ends worst hold
    most of both means. For each fraction: the share of each mean held by those functions, and
    LSTM / Adam on them and on all the others."""
    lstm = comparison.results["lstm"].losses[-1].double()
    adam = comparison.results["adam"].losses[-1].double()
    order = torch.argsort(adam, descending=True)
    rows = []
    for fraction in fractions:
        k = round(fraction * len(order))
        worst, rest = order[:k], order[k:]
        rows.append({
            "worst_fraction": fraction,
            "share_of_lstm_mean": float(lstm[worst].sum() / lstm.sum()),
            "share_of_adam_mean": float(adam[worst].sum() / adam.sum()),
            "ratio_on_worst": float(lstm[worst].mean() / adam[worst].mean()),
            "ratio_on_rest": float(lstm[rest].mean() / adam[rest].mean()),
        })  # fmt: skip
    return rows


def precision(optimizer, family, comparison, steps: int, seed: int = 0) -> dict:
    """How precise a ratio over 1000 functions is: the mean is heavy-tailed. The LSTM and Adam
    (at the learning rate tuned above) on 10 x 1000 held-out functions, the first 1000 being
    those of the table; the ratio of each block, over all, and a bootstrap 95% interval."""
    adam = make_baseline("adam", comparison.results["adam"].lr)
    per_block = family.num_problems * comparison.num_test_tasks  # 1000
    # The first block is the comparison's test tasks: reuse its runs, roll out the other nine.
    n = comparison.num_test_tasks
    tasks = [family.sample(task_seed("test", i)) for i in range(n, PRECISION_BLOCKS * n)]
    more = final_losses({"lstm": optimizer, "adam": adam}, tasks, steps)
    lstm, adam_final = (
        torch.cat([comparison.results[name].losses[-1].double(), more[name]])
        for name in ("lstm", "adam")
    )
    p = ratio_precision(lstm, adam_final, per_block, draws=1000, seed=seed)
    return {
        "functions": len(lstm),
        "ratio": p["ratio"],
        "ratio_95_interval": p["ratio_95_interval"],
        "ratio_per_1000": p["ratio_per_block"],
    }


def precision_markdown(p: dict) -> str:
    low, high = p["ratio_95_interval"]
    blocks = ", ".join(f"{r:.3f}" for r in p["ratio_per_1000"])
    return (
        f"Precision: the mean final loss is heavy-tailed, so a ratio over 1000 functions is "
        f"noisy. Over {p['functions']:,} held-out functions (the table's 1000 first; Adam at the "
        f"tuned lr above) LSTM / tuned Adam = **{p['ratio']:.3f}** (bootstrap 95% interval "
        f"{low:.3f}-{high:.3f}); per block of 1000: {blocks}."
    )


def tail_markdown(rows: list[dict]) -> str:
    lines = [
        "Where the means come from: the functions on which tuned Adam ends worst "
        "(the ill-conditioned ones):",
        "",
        "| worst functions (by Adam) | share of LSTM mean | share of Adam mean "
        "| LSTM / Adam on them | LSTM / Adam on the rest |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {100 * r['worst_fraction']:g}% | {100 * r['share_of_lstm_mean']:.0f}% "
            f"| {100 * r['share_of_adam_mean']:.0f}% | {r['ratio_on_worst']:.3f} "
            f"| {r['ratio_on_rest']:.3f} |"
        )
    return "\n".join(lines)


def finished_run(run_dir: Path, config) -> TrainingState:
    """The training state recorded in a finished run, after checking it ran ``config``."""
    ran = config_from_dict(load_config_dict(run_dir / "config.toml"))  # an older run's names too
    if ran.to_dict() != config.to_dict():
        raise SystemExit(f"{run_dir} was trained with another configuration than {config}")
    _, record = read_checkpoint(run_dir / "checkpoints" / "last")
    state = TrainingState(**record["resume"]["training_state"])
    if state.epoch != config.meta.epochs:
        raise SystemExit(f"{run_dir} is unfinished: {state.epoch}/{config.meta.epochs} epochs")
    return state


def ship(optimizer, record, result, name: str) -> None:
    """Save the trained optimizer as the pretrained ``quadratic-lstm``."""
    dest = ROOT / "src" / "l2o" / "pretrained" / "quadratic-lstm"
    b = result["benchmark"]
    shipped = {
        "description": "the paper's 2x20 LSTM meta-trained on 10-d quadratics ||W theta - y||^2",
        "trained_on": record["task"],
        "training": record["training"],
        "metrics": record["metrics"],
        "benchmark": {
            "lstm_over_tuned_adam": b["lstm_over_tuned_adam"],
            "lstm_over_tuned_adam_10000_functions": {
                k: b["precision"][k] for k in ("ratio", "ratio_95_interval")
            },
            "final_loss": {k: v["final_loss_mean"] for k, v in result["optimizers"].items()},
            "tuned_lr": {k: v["lr"] for k, v in result["optimizers"].items() if v["lr"]},
            "test_runs": result["runs"],
            "steps": result["steps"],
            "machine": b["machine"]["cpu"],
            "results": f"benchmarks/quadratic/results/{name}.json",
        },
        "command": "python -m benchmarks.quadratic.run --ship",
    }
    save_checkpoint(dest, optimizer, shipped)
    print(f"shipped {dest}.safetensors")
    print(json.dumps(shipped["benchmark"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
