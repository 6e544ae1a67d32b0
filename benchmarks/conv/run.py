"""Benchmark: the paper's CIFAR experiment (section 3.3, Figure 6) with the conv net family.

For each dataset found (Fashion-MNIST from Debian's dataset-fashion-mnist package; CIFAR-10 when
its files are found, see l2o.data.cifar), meta-trains

    lstm          configs/conv.toml         one LSTM for the conv weights, one for the rest (paper)
    lstm-shared   configs/conv-shared.toml  one LSTM shared by all parameters (ablation)
    lstm-sub      configs/conv-sub.toml     the conv/fc LSTMs, trained on labels 5-9 only
    lstm-momentum configs/conv-momentum.toml  the conv/fc LSTMs reading momenta too (beyond
                                            the paper)

then compares them with SGD, NAG, RMSprop and Adam, whose learning rates are tuned per setting
on validation runs, on the same held-out runs (other theta_0 and minibatches) of every setting
of configs/conv-fig6.toml (all labels; labels 0-4; labels 0-1), and writes

    conv.json                     every number (curves, tuned lrs, timings)
    conv.md                       tables, ratios to tuned Adam, machine
    conv-<dataset>-<setting>.png  loss vs step, log scale (Figure 6)

in benchmarks/conv/results/ (--out).

Every setting is evaluated by l2o.evaluate.figures.evaluate_setting, as `l2o evaluate --figure`
does: the same tuning, test runs and numbers. Test loss and accuracy are of each run's final
parameters on the held-out test images of the setting's labels, with batch norm in eval mode
(the running statistics of the run).

Reproduce, from the repository root:

    nice -n 10 python -m benchmarks.conv.run

(torch uses 1 thread: the convolutions are small and a shared machine's cores are busy;
--threads to change)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import torch

from benchmarks.common import ROOT, machine, machine_markdown, results_dir
from l2o.checkpoint import load_checkpoint
from l2o.config import load_config, load_config_dict
from l2o.data import DatasetError
from l2o.data.images import locate_images
from l2o.evaluate import plot_loss_curves, write_json
from l2o.evaluate.figures import evaluate_setting, load_figure_preset
from l2o.runs import train

VARIANTS = {
    "lstm": "conv.toml",
    "lstm-shared": "conv-shared.toml",
    "lstm-sub": "conv-sub.toml",
    "lstm-momentum": "conv-momentum.toml",
}
TARGET = 0.85  # LSTM (conv/fc groups) / tuned Adam, mean training loss at step 100, all labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="fashion-mnist,cifar10", help="those found are run")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--figure", default=str(ROOT / "configs" / "conv-fig6.toml"))
    parser.add_argument("--data-dir", default="", help="where the datasets are (task.data_dir)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-conv"))
    parser.add_argument("--out", default=str(results_dir("conv")))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="settings evaluated in parallel")
    parser.add_argument(
        "--skip-training", action="store_true", help="evaluate the run directories as they are"
    )
    parser.add_argument("--set", action="append", default=[], help="config override (all variants)")
    parser.add_argument(
        "--note", default="", help="written under the title: e.g. how --skip-training's runs ran"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    report: dict = {
        "datasets": {},
        "machine": machine(),
        "target": TARGET,
        "skip_training": args.skip_training,
        "threads": args.threads,
        "note": args.note,
    }
    for dataset in args.datasets.split(","):
        try:
            locate_images(dataset, args.data_dir or None)
        except DatasetError as e:
            print(f"skipping {dataset}: {e}", flush=True)
            continue
        report["datasets"][dataset] = run_dataset(dataset, args, out, report)
        write_json(out / "conv.json", report)
    if not report["datasets"]:
        print("no dataset found", file=sys.stderr)
        return 1
    (out / "conv.md").write_text(markdown(report))
    print((out / "conv.md").read_text())
    return 0


def run_dataset(dataset: str, args, out: Path, report: dict) -> dict:
    overrides = [*args.set, f"task.dataset={dataset!r}", f"task.data_dir={args.data_dir!r}"]
    run_dirs, training = {}, {}
    for variant in args.variants.split(","):
        config = load_config(ROOT / "configs" / VARIANTS[variant], overrides)
        run_dir = run_dirs[variant] = Path(args.run_dir) / dataset / variant
        load_before = os.getloadavg()
        if not args.skip_training:
            print(
                f"[{dataset}] meta-training {variant} for {config.meta.epochs} epochs", flush=True
            )
            train(config, run_dir, force=True, quiet=True)
        _, record = load_checkpoint(run_dir / "checkpoints" / "best")
        last = json.loads((run_dir / "checkpoints" / "last.json").read_text())
        seconds = last["metrics"]["meta_training_seconds"]
        # What the run did: with --skip-training it may have had other overrides than these.
        epochs = last["epoch"]
        training[variant] = {
            "meta_training_seconds": seconds,
            "meta_training_minutes": seconds / 60,
            "seconds_per_epoch": seconds / epochs,
            "epochs": epochs,
            "best_epoch": record["metrics"]["best_epoch"],
            "best_validation_final_loss": record["metrics"]["best_validation_final_loss"],
            # Only measured when meta-training runs here (not with --skip-training).
            "load_average_before": None if args.skip_training else load_before,
            "load_average_after": None if args.skip_training else os.getloadavg(),
            "task": record["task"],
            "config": load_config_dict(run_dir / "config.toml"),
        }
        print(f"[{dataset}] {variant}: meta-training took {seconds / 60:.1f} min", flush=True)
    base = training["lstm"]["task"] if "lstm" in training else next(iter(training.values()))["task"]
    options, settings = load_figure_preset(args.figure)
    result: dict = {"training": training, "settings": {}}
    report["datasets"][dataset] = result
    jobs = [(run_dirs, base, setting, options, dataset, args.threads) for setting in settings]
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else nullcontext() as pool:
        results = pool.map(_evaluate_job, jobs) if pool else map(_evaluate_job, jobs)
        for setting, r in zip(settings, results):
            result["settings"][setting.name] = r
            _setting_done(dataset, setting, r, out, report)
    return result


def _evaluate_job(job) -> dict:
    """One setting, in its own process with --jobs: learned optimizers read from their runs."""
    run_dirs, base, setting, options, dataset, threads = job
    torch.set_num_threads(threads)
    learned = {v: load_checkpoint(d / "checkpoints" / "best")[0] for v, d in run_dirs.items()}
    started = time.perf_counter()
    r = evaluate_setting(
        learned, base, setting, options,
        progress=lambda s: print(f"[{dataset}] {s}", flush=True),
    )  # fmt: skip
    r["evaluation_seconds"] = time.perf_counter() - started
    return r


def _setting_done(dataset, setting, r, out: Path, report: dict) -> None:
    """Draw a finished setting and save everything measured so far."""
    plot_loss_curves(
        r, out / f"conv-{dataset}-{setting.name}.png",
        title=f"{dataset}, {setting.title} ({r['runs']} runs)",
    )  # fmt: skip
    ratios = ", ".join(f"{k} / adam = {v:.3f}" for k, v in r["over_adam"].items())
    print(f"[{dataset}] {setting.name}: {ratios}", flush=True)
    write_json(out / "conv.json", report)


def markdown(report: dict) -> str:
    lines = [
        "# Conv net benchmark (paper section 3.3, Figure 6)",
        "",
        "The paper's CIFAR-10 net (3 conv layers of 16 channels, 5x5, each with batch norm, ReLU "
        "and 2x2 max-pool; a fully connected layer of 32 units with batch norm; minibatches of "
        "128; 100 steps) trained by learned optimizers (2x20 LSTMs, log-sign preprocessing, "
        "p = 10, output x 0.1, meta-trained with Adam by truncated BPTT, 5 truncations of 20): "
        "**lstm** = separate LSTMs for the conv weights and for all other parameters (the "
        "paper's), **lstm-shared** = one LSTM for all, **lstm-sub** = the conv/fc LSTMs "
        "meta-trained on labels 5-9 only, **lstm-momentum** (beyond the paper) = the conv/fc "
        "LSTMs reading bias-corrected running averages of the gradient (decays 0.5, 0.9, 0.99, "
        "0.999) besides the gradient. Baselines SGD, NAG, RMSprop and Adam have their "
        "learning rate tuned per setting on separate validation runs. Numbers are the mean "
        "training (minibatch) loss at step 100 over held-out runs (other theta_0 and "
        "minibatches), as in the paper's figure; test accuracy is of each run's final "
        "parameters on the held-out test images of the setting's labels, batch norm in eval "
        "mode.",
        "",
    ]
    if report.get("note"):
        lines += [report["note"], ""]
    for dataset, result in report["datasets"].items():
        how = (
            "run before this command (--skip-training)"
            if report["skip_training"]
            else f"run by this command, one variant after the other, "
            f"{report.get('threads', 1)} torch thread(s)"
        )
        lines += [f"## {dataset}", "", f"Meta-training ({how}):", ""]
        lines += ["| variant | trained on | epochs | minutes | s / epoch | best epoch |"]
        lines += ["|---|---|---|---|---|---|"]
        for variant, t in result["training"].items():
            labels = t["task"]["classes"] or "all labels"
            lines.append(
                f"| {variant} | {labels} | {t['epochs']} | **{t['meta_training_minutes']:.1f}** "
                f"| {t['seconds_per_epoch']:.1f} | {t['best_epoch']} |"
            )
        load = [t["load_average_before"] for t in result["training"].values()]
        if all(x is not None for x in load):
            lines += [
                "",
                f"Load average before each meta-training: "
                f"{', '.join(f'{x[0]:.1f}' for x in load)} (above 2: the 2 cores were shared).",
            ]
        lines.append("")
        for name, r in result["settings"].items():
            o = r["optimizers"]
            lines += [
                f"### {r['setting']['title']}: {r['runs']} test runs",
                "",
                f"| optimizer | loss at step {r['steps']} (mean ± std) | median | / tuned Adam | tuned lr "
                "| test loss | test accuracy | ms / step |",
                "|---|---|---|---|---|---|---|---|",
            ]
            adam = o.get("adam", {}).get("final_loss_mean")
            for label, s in o.items():
                lr = "-" if s["lr"] is None else f"{s['lr']:.3g}"
                ratio = f"{s['final_loss_mean'] / adam:.3f}" if adam else "-"
                if label == "lstm" and name == "all-labels" and adam:
                    ok = s["final_loss_mean"] / adam <= report["target"]
                    ratio = f"**{ratio}** (target <= {report['target']} {'✓' if ok else '✗'})"
                per_step = 1000 * s["seconds_per_step"] / r["runs"]  # per net
                # None: a run's test metric was not finite (it diverged)
                test_loss, accuracy = s["test_loss_mean"], s["test_accuracy_mean"]
                test_loss = "-" if test_loss is None else f"{test_loss:.4f}"
                accuracy = "-" if accuracy is None else f"{100 * accuracy:.1f}%"
                lines.append(
                    f"| {label} | {s['final_loss_mean']:.4f} ± {s['final_loss_std']:.3f} "
                    f"| {s['final_loss_median']:.4f} | {ratio} | {lr} "
                    f"| {test_loss} | {accuracy} | {per_step:.1f} |"
                )
            lines += ["", f"![{name}](conv-{dataset}-{name}.png)", ""]
        lines.append(
            "ms / step: wall-clock of one optimization step (gradient + optimizer step) per net, "
            "with 4 nets trained at once as one tensor program."
        )
        lines.append("")
    lines.append(machine_markdown(report["machine"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
