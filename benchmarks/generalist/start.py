"""The generalist's meta-training runs against their own start (issue #26).

A run's metrics.jsonl scores each validation of meta-training; this script scores the same
validation tasks with the optimizer each run started from (its config, freshly built: the
untrained optimizer, or ``meta.init_from``'s weights for a fine-tuning run), so that every run
can be read against where it began:

    python -m benchmarks.generalist.start [RUN_DIR ...]

(default: the committed runs under benchmarks/generalist/results/). The score is the trainer's
(``l2o.meta.train.validate``): the geometric mean over the validation tasks of
f(theta_T) / f(theta_0), lower is better. Writes
benchmarks/generalist/results/generalist-start.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.evaluate.draw import read_metrics
from l2o.meta.train import validate
from l2o.runs import build_learned_optimizer, initialise_from

RUNS = results_dir("generalist")


def history(run: Path) -> list[tuple[int, float]]:
    """(epoch, validation score) of every validation in the run's metrics."""
    return [
        (row["epoch"] + 1, row["validation_final_loss"])
        for row in read_metrics(run / "metrics.jsonl")
        if "validation_final_loss" in row
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="run directories (default: the committed ones)")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [Path(r) for r in args.runs] or sorted(p.parent for p in RUNS.glob("run*/config.toml"))
    result, rows = {"runs": {}, "note": args.note, "machine": machine()}, []
    for run in runs:
        config = load_config(run / "config.toml")
        optimizer = build_learned_optimizer(config)
        if config.meta.init_from:  # a fine-tuning run starts from those weights
            source = Path(config.meta.init_from)
            initialise_from(optimizer, str(source if source.is_absolute() else ROOT / source))
        start = validate(optimizer, config.task, config.meta)["final_loss"]
        seen = history(run)
        best = min(seen, key=lambda e: e[1]) if seen else None
        name = (
            str(run.resolve().relative_to(ROOT)) if run.resolve().is_relative_to(ROOT) else str(run)
        )
        result["runs"][name] = {"start": start, "validations": seen, "best": best}
        best_cell = f"{best[1]:.4f} (epoch {best[0]})" if best else "-"
        last = f"{seen[-1][1]:.4f} (epoch {seen[-1][0]})" if seen else "-"
        ratio = f"{best[1] / start:.3f}" if best else "-"
        rows.append(f"| `{name}` | {start:.4f} | {best_cell} | {ratio} | {last} |")
        print(rows[-1], flush=True)
    lines = [
        "# The generalist's meta-training runs against their start (#26)",
        "",
        "Validation score (geometric mean over the run's validation tasks of f(θ_T)/f(θ_0); lower "
        "is better) of the optimizer each run started from (its config's, untrained, or the "
        "weights of its `meta.init_from`), beside the run's own validations "
        "(`benchmarks/generalist/start.py`).",
        "",
        "| run | start | best validation | best / start | last validation |",
        "|---|---|---|---|---|",
        *rows,
    ]
    write_result(results_dir("generalist"), "generalist-start", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
