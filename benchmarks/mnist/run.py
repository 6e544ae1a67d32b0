"""Benchmark: the paper's MNIST experiment (section 3.2, Figures 3-5) on real image data.

For each MNIST-format dataset found (Fashion-MNIST from Debian's dataset-fashion-mnist package;
MNIST too when its IDX files are found, see l2o.data), meta-trains the preset
(configs/mnist.toml: 2x20 LSTM on an MLP with 20 sigmoid units, 100 steps), then compares it
with tuned SGD, NAG, RMSprop and Adam on held-out runs in every setting of
configs/mnist-fig4.toml (100 and 200 steps, 40 units, 2 layers, ReLU) and on the grid of
configs/mnist-fig5.toml; then, as 20 runs make a noisy ratio, scores the LSTM and the tuned Adam
on 200 held-out runs of the 100-step setting (the table's 20 first) for a bootstrap interval of
the headline ratio (--precision-runs); and writes

    mnist.json                     every number (curves, tuned lrs, test accuracy)
    mnist.md                       tables, ratios to tuned Adam, timings, machine
    mnist-<dataset>-<setting>.png  loss vs step of each setting, paper style
    mnist-<dataset>-fig5.png       the generalization grid

in benchmarks/mnist/results/ (--out).

With --ship the optimizer meta-trained on Fashion-MNIST is saved into the package as the
pretrained ``mnist-mlp-lstm``. Reproduce, from the repository root:

    python -m benchmarks.mnist.run --ship

(the committed results were meta-trained with ``OMP_NUM_THREADS=2``: 2 torch threads on the
2 cores; benchmarks/mnist/results/mnist.md gives the command and the time).

``--name`` names the result files (``<name>.json``, ``<name>.md``, ``<name>-*.png``) and, with
``--ship``, the pretrained optimizer (``mnist`` ships ``mnist-mlp-lstm``, any other name ships
itself), for variants of the preset given with ``--set``, e.g. the shipped optimizer
fine-tuned on 200-step horizons: --name mnist-mlp-lstm-200 --set meta.init_from=mnist-mlp-lstm
--set meta.horizon=200 --set meta.epochs=100 (benchmarks/mnist/results/mnist-finetune-*.md:
not better than the shipped one, so not shipped).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
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
from l2o.checkpoint import load_checkpoint, read_checkpoint, resolve, save_checkpoint
from l2o.config import load_config
from l2o.data import DatasetError, find_dataset
from l2o.evaluate import plot_loss_curves, write_json
from l2o.evaluate.figures import (
    best_baseline,
    evaluate_setting,
    load_figure_preset,
    plot_generalization_grid,
    setting_family,
)
from l2o.evaluate.report import json_safe
from l2o.meta.seeds import task_seed
from l2o.optimizers import make_baseline
from l2o.runs import train

TARGETS = {  # LSTM / tuned Adam, mean final training loss
    "100-steps": 0.7,
    "200-steps": 0.8,
    "40-units": 0.8,
    "2-layers": 0.8,
}
TARGET_MINUTES = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist.toml"))
    parser.add_argument(
        "--figures",
        nargs="+",
        default=[
            str(ROOT / "configs" / "mnist-fig4.toml"),
            str(ROOT / "configs" / "mnist-fig5.toml"),
        ],
    )
    parser.add_argument("--datasets", default="fashion-mnist,mnist", help="those found are run")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-mnist"))
    parser.add_argument("--out", default=str(results_dir("mnist")))
    parser.add_argument("--ship", action="store_true", help="save into l2o/pretrained")
    parser.add_argument(
        "--name", default="mnist", help="result files <name>.*; the pretrained name with --ship"
    )
    parser.add_argument(
        "--skip-training", action="store_true", help="evaluate the run directories as they are"
    )
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--note", default="", help="a sentence for the .md (e.g. machine load)")
    parser.add_argument(
        "--precision-runs",
        type=int,
        default=200,
        help="held-out runs of the LSTM and tuned Adam for the precision of the 100-step ratio "
        "(the table's runs first; 0: skip)",
    )
    args = parser.parse_args()

    out = Path(args.out)
    report: dict = {"datasets": {}, "machine": machine(), "note": args.note}
    for dataset in args.datasets.split(","):
        config = load_config(args.config, [*args.set, f"task.dataset={dataset!r}"])
        try:
            find_dataset(dataset, config.task.data_dir or None)
        except DatasetError as e:
            print(f"skipping {dataset}: {e}", flush=True)
            continue
        report["datasets"][dataset] = run_dataset(dataset, config, args, out)
        write_json(out / f"{args.name}.json", report)
    if not report["datasets"]:
        print("no dataset found", file=sys.stderr)
        return 1
    (out / f"{args.name}.md").write_text(markdown(report, args.name))
    print((out / f"{args.name}.md").read_text())
    return 0


def run_dataset(dataset: str, config, args, out: Path) -> dict:
    run_dir = Path(args.run_dir) / dataset
    load_before = None if args.skip_training else os.getloadavg()
    epochs, cpu_seconds = config.meta.epochs, None
    if args.skip_training:  # e.g. a run stopped early: report what its last checkpoint says
        last = json.loads((run_dir / "checkpoints" / "last.json").read_text())
        seconds, epochs = last["metrics"]["meta_training_seconds"], last["epoch"]
    else:
        print(
            f"[{dataset}] meta-training {args.config} for {config.meta.epochs} epochs", flush=True
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        train(config, run_dir, force=True)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    optimizer, record = load_checkpoint(run_dir / "checkpoints" / "best")
    training = {
        "meta_training_seconds": seconds,
        "meta_training_minutes": seconds / 60,
        # CPU time of this process: with 1 torch thread, the wall-clock it would take alone.
        "meta_training_cpu_seconds": cpu_seconds,
        "torch_threads": torch.get_num_threads(),
        "target_minutes": TARGET_MINUTES,
        "epochs": epochs,
        "best_epoch": record["metrics"]["best_epoch"],
        "best_validation_final_loss": record["metrics"]["best_validation_final_loss"],
        # Only measured when meta-training runs here (not with --skip-training).
        "load_average_before": load_before,
        "load_average_after": None if args.skip_training else os.getloadavg(),
        "config": config.to_dict(),
    }
    print(f"[{dataset}] meta-training took {seconds / 60:.1f} min", flush=True)

    settings: dict[str, dict] = {}
    headline = None  # the 100-step setting and its preset's options, for the precision check
    for preset in args.figures:
        options, cells = load_figure_preset(preset)
        for setting in cells:
            started = time.perf_counter()
            evaluated = evaluate_setting(
                {"lstm": optimizer}, record["task"], setting, options,
                progress=lambda s: print(f"[{dataset}] {s}", flush=True),
            )  # fmt: skip
            evaluated["evaluation_seconds"] = time.perf_counter() - started
            settings[setting.name] = evaluated
            if setting.name == "100-steps":
                headline = (setting, options)
            if not setting.name.startswith("grid-"):
                plot_loss_curves(
                    evaluated, out / f"{args.name}-{dataset}-{setting.name}.png",
                    title=f"{dataset}: {setting.title or setting.name} ({evaluated['runs']} runs)",
                )  # fmt: skip
            print(
                f"[{dataset}] {setting.name}: LSTM / tuned Adam = "
                f"{evaluated['lstm_over_adam']:.3f}",
                flush=True,
            )
    result = {"training": training, "settings": settings}
    if args.precision_runs and headline is not None:
        result["precision"] = precision(
            optimizer, record["task"], *headline, args.precision_runs,
            settings["100-steps"]["optimizers"]["adam"]["lr"],
        )  # fmt: skip
        print(f"[{dataset}] precision: {precision_markdown(result['precision'])}", flush=True)
    grid = [r for name, r in settings.items() if name.startswith("grid-")]
    if grid:
        plot_generalization_grid(
            grid, out / f"{args.name}-{dataset}-fig5.png",
            title=f"{dataset}: final loss after {grid[0]['steps']} steps (LSTM trained on MLP(20))",
        )  # fmt: skip
    if args.ship and dataset == "fashion-mnist":
        ship(optimizer, record, result, seconds, args.name)
    return result


def precision(optimizer, task_config: dict, setting, options, runs: int, adam_lr: float) -> dict:
    """How precise the ratio of a setting is: its table has 20 runs. The LSTM and Adam (at the
    learning rate tuned for the table) on ``runs`` held-out runs, the table's first (the same
    test tasks, rolled out again, so the first block reproduces the table's ratio); the ratio
    over all, a bootstrap 95% interval and the ratio of each block of the table's size."""
    family = setting_family(task_config, setting, options)
    tasks = [
        family.sample(task_seed("test", i)) for i in range(-(-runs // options.problems_per_task))
    ]
    finals = final_losses(
        {"lstm": optimizer, "adam": make_baseline("adam", adam_lr)}, tasks, setting.steps
    )
    lstm, adam_final = finals["lstm"], finals["adam"]
    return {
        "setting": setting.name,
        "steps": setting.steps,
        "runs": len(lstm),
        "adam_lr": adam_lr,
        "lstm_final_loss_mean": float(lstm.mean()),
        "adam_final_loss_mean": float(adam_final.mean()),
        "block_runs": options.test_runs,
        **ratio_precision(lstm, adam_final, options.test_runs, draws=2000),
    }


def precision_markdown(p: dict) -> str:
    low, high = p["ratio_95_interval"]
    blocks = p["ratio_per_block"]
    return (
        f"Precision of the {p['setting']} ratio: over {p['runs']} held-out runs (the table's "
        f"{p['block_runs']} first; Adam at its tuned lr {p['adam_lr']:.2g}) LSTM / tuned Adam = "
        f"**{p['ratio']:.3f}** (bootstrap 95% interval {low:.3f}-{high:.3f}; LSTM "
        f"{p['lstm_final_loss_mean']:.3f}, Adam {p['adam_final_loss_mean']:.3f}); per block of "
        f"{p['block_runs']} runs: {min(blocks):.3f}-{max(blocks):.3f} "
        f"({', '.join(f'{r:.3f}' for r in blocks)})."
    )


def ratios(result: dict) -> dict[str, float]:
    return {name: r["lstm_over_adam"] for name, r in result["settings"].items()}


def initial_training(config: dict) -> str:
    """For a run started from a trained optimizer (meta.init_from): where from, and how long
    that optimizer's own meta-training took, as its record says."""
    source = config["meta"].get("init_from")
    if not source:
        return ""
    _, record = read_checkpoint(resolve(source))
    epochs = record.get("training", {}).get("epochs")
    if "meta_training_minutes" in record.get("benchmark", {}):  # a shipped optimizer: its run's
        took = f"took {record['benchmark']['meta_training_minutes']:.1f} min ({epochs} epochs)"
    else:  # a run's checkpoint: the time when it was saved
        minutes = record.get("metrics", {}).get("meta_training_seconds", 0) / 60
        took = f"had run {minutes:.1f} min when it was saved (epoch {record.get('epoch')})"
    return (
        f"Initialised from `{source}` (meta.init_from), whose own meta-training {took}, as its "
        f"record says; the time below is this run's alone. "
    )


def markdown(report: dict, prefix: str = "mnist") -> str:
    lines = [
        "# MNIST benchmark (paper section 3.2, Figures 3-5)",
        "",
        "The paper's 2x20 LSTM (log-sign preprocessing, p = 10, output x 0.1) meta-trained on an "
        "MLP with one hidden layer of 20 sigmoid units (minibatches of 128, 100 steps, "
        "truncations of 20), then compared with SGD, NAG, RMSprop and Adam, each with its "
        "learning rate tuned per setting on separate validation runs. Numbers are the mean "
        "training (minibatch) loss at the last step over held-out runs (other theta_0 and "
        "minibatches), as in the paper's figures; test loss / accuracy are of the final "
        "parameters on the whole held-out test set.",
        "",
    ]
    for dataset, result in report["datasets"].items():
        t = result["training"]
        lines += [
            f"## {dataset}",
            "",
            initial_training(t["config"])
            + f"Meta-training: {t['epochs']} epochs in **{t['meta_training_minutes']:.1f} min** "
            f"(target <= {TARGET_MINUTES} min on 2 CPU cores; "
            + (
                f"load average before/after {t['load_average_before'][0]:.1f} / "
                f"{t['load_average_after'][0]:.1f}, so the cores were "
                f"{'shared with other work' if t['load_average_before'][0] > 0.5 else 'idle'}); "
                if t["load_average_before"]
                else "meta-trained by an earlier run (--skip-training): the time its checkpoint "
                "recorded); "
            )
            + f"best validation at epoch {t['best_epoch']}"
            + (
                f"; CPU time {t['meta_training_cpu_seconds'] / 60:.1f} min with "
                f"{t['torch_threads']} torch thread(s)."
                if t["meta_training_cpu_seconds"]
                else "."
            ),
            "",
            "| setting | steps | runs | LSTM | SGD | NAG | RMSprop | Adam | LSTM / Adam | target "
            "| best baseline | LSTM test acc. | Adam test acc. |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in result["settings"].items():
            o = r["optimizers"]

            def cell(k: str, o=o) -> str:
                if k not in o:
                    return "-"
                s = o[k]
                lr = "" if s["lr"] is None else f" (lr {s['lr']:.2g})"
                return f"{s['final_loss_mean']:.3f}{lr}"

            def acc(k: str, o=o) -> str:
                v = o.get(k, {}).get("test_accuracy_mean")
                return "-" if v is None else f"{100 * v:.1f}%"

            target = TARGETS.get(name)
            ratio = r["lstm_over_adam"]
            verdict = (
                "-" if target is None else (f"<= {target} " + ("✓" if ratio <= target else "✗"))
            )
            lines.append(
                f"| {r['setting']['title'] or name} | {r['steps']} | {r['runs']} | {cell('lstm')} "
                f"| {cell('sgd')} | {cell('nag')} | {cell('rmsprop')} | {cell('adam')} "
                f"| **{ratio:.3f}** | {verdict} | {best_baseline(r)} | {acc('lstm')} | {acc('adam')} |"
            )
        lines.append("")
        if result.get("precision"):
            lines += [precision_markdown(result["precision"]), ""]
        for setting in result["settings"]:
            if not setting.startswith("grid-"):
                lines.append(f"![{setting}]({prefix}-{dataset}-{setting}.png)")
        if any(n.startswith("grid-") for n in result["settings"]):
            lines.append(f"![generalization grid]({prefix}-{dataset}-fig5.png)")
        lines.append("")
    if report.get("note"):
        lines += [report["note"], ""]
    lines.append(machine_markdown(report["machine"]))
    return "\n".join(lines)


def ship(optimizer, record, result, seconds: float, name: str = "mnist") -> None:
    """Save the trained optimizer as the pretrained ``mnist-mlp-lstm`` (name ``mnist``) or
    ``name``."""
    name = "mnist-mlp-lstm" if name == "mnist" else name
    dest = ROOT / "src" / "l2o" / "pretrained" / name
    settings = result["settings"]
    meta = record["training"]
    origin = f", starting from {meta['init_from']}" if meta.get("init_from") else ""
    shipped = {
        "description": (
            "the paper's 2x20 LSTM meta-trained to train an MLP (20 sigmoid units) on "
            f"{record['task']['dataset']} for {meta['horizon']} steps{origin}"
        ),
        "trained_on": record["task"],
        "training": record["training"],
        "metrics": record["metrics"],
        "benchmark": {
            "lstm_over_tuned_adam": ratios(result),
            "final_loss": {
                name: {k: v["final_loss_mean"] for k, v in r["optimizers"].items()}
                for name, r in settings.items()
                if not name.startswith("grid-")
            },
            "test_accuracy": {
                name: {k: v.get("test_accuracy_mean") for k, v in r["optimizers"].items()}
                for name, r in settings.items()
                if not name.startswith("grid-")
            },
            "test_runs": settings["100-steps"]["runs"] if "100-steps" in settings else None,
            "precision": result.get("precision"),
            "meta_training_minutes": seconds / 60,
            "machine": machine()["cpu"],
        },
        "command": shlex.join(["python", "-m", "benchmarks.mnist.run", *sys.argv[1:]]),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, optimizer, json_safe(shipped))
    print(f"shipped {dest}.safetensors")


if __name__ == "__main__":
    sys.exit(main())
