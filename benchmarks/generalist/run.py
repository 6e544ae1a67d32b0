"""The generalist (issue #26): the held-out suite of a checkpoint meta-trained on the task
mixture (configs/generalist.toml), scored against the issue's targets.

Meta-training is its own command (resumable); the preset's run directory, checkpoints
included, is committed under benchmarks/generalist/results/run-pes-readouts-hardtanh so that it
can be resumed on another machine (the other run-* directories are earlier recipes'):

    torchrun --standalone --nproc_per_node=2 -m l2o train configs/generalist.toml \
        --run-dir benchmarks/generalist/results/run-pes-readouts-hardtanh   # 32 min

This script runs ``l2o suite`` on the run's best checkpoint (or --checkpoint) into
results/NAME-suite/ (results.json, report.md, suite.png) and writes

    NAME.json   the suite's numbers, the step cost and state, meta-training time, targets
    NAME.md     the targets table, the suite table, the machine and the command

in benchmarks/generalist/results/ (``--name``, default generalist). ``--only`` runs some
entries (a cheaper screen); ``--ship`` copies the checkpoint into the package as the pretrained
``generalist``. From the repository root:

    python -m benchmarks.generalist.run [--only ENTRY ...] [--name NAME] [--ship]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.checkpoint import load_checkpoint, resolve, save_checkpoint
from l2o.evaluate import write_json
from l2o.evaluate.suite import SUITE, plot_suite, suite_table
from l2o.pipelines import suite

RUN = results_dir("generalist") / "run-pes-readouts-hardtanh"
# Issue #26's targets on the held-out suite.
MAX_RATIO = 1.0  # every entry: final loss <= tuned Adam's
MAX_RATIO_STRICT = 0.9  # these entries: <= 0.9 of tuned Adam's
STRICT = ("fmnist-mlp2x64-relu-T1000", "fmnist-conv-T100")
MAX_STEP_COST = 10.0  # learned step / torch.optim.Adam(foreach=True) at 1M parameters, 1 thread
MAX_STATE_FLOATS = 8  # per parameter
MAX_HOURS = 3.0  # meta-training of the shipped preset on the 2 cores


def step_cost() -> dict[str, Any] | None:
    """The generalist's step cost from the speed benchmark's committed results
    (``python -m benchmarks.speed.run --generalist``), if measured: its front-end row."""
    path = results_dir("speed") / "speed-generalist.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["results"]
    row = next((r for r in rows if r["optimizer"] == "generalist"), None)
    if row is None:
        return None
    return {
        "over_adam": row["ratio_to_torch_adam"],
        "over_adam_cpu_time": row["cpu_ratio_to_torch_adam"],
        "step_ms": 1000 * row["step_seconds_median"],
        "adam_ms": 1000 * row["torch_adam_seconds_median"],
        "params": row["params"],
        "results": "benchmarks/speed/results/speed-generalist.md",
    }


def targets(report: dict[str, Any], name: str, record: dict[str, Any], state_floats: int):
    """Rows (target, measured, met) of the issue's targets."""
    rows = []
    cost = step_cost()
    ratio = None if cost is None else cost.get("over_adam")
    rows.append(
        (
            f"step cost at 1M parameters <= {MAX_STEP_COST:g}x torch.optim.Adam, 1 thread",
            "not measured" if ratio is None else f"{ratio:.1f}x (benchmarks/speed)",
            None if ratio is None else ratio <= MAX_STEP_COST,
        )
    )
    rows.append(
        (
            f"state <= {MAX_STATE_FLOATS} floats per parameter",
            f"{state_floats} floats",
            state_floats <= MAX_STATE_FLOATS,
        )
    )
    faster = 0
    for entry, r in report["entries"].items():
        ours, adam = r["optimizers"][name], r["optimizers"]["adam"]
        ratio = ours["final_loss_over_adam"]
        limit = MAX_RATIO_STRICT if entry in STRICT else MAX_RATIO
        diverged = ours["diverged_runs"]
        measured = "diverged" if diverged or ratio is None else f"{ratio:.3f}"
        rows.append(
            (f"{entry}: final loss <= {limit:g} x tuned Adam's", measured,
             ratio is not None and not diverged and ratio <= limit)
        )  # fmt: skip
        adam_seconds = adam["seconds_to_adam_final"]
        ours_seconds = ours["seconds_to_adam_final"]
        if ours_seconds is not None and adam_seconds is not None and ours_seconds < adam_seconds:
            faster += 1
    entries = len(report["entries"])
    rows.append(
        (
            "fewer seconds than tuned Adam to reach Adam's final loss on >= half the tasks",
            f"{faster} of {entries}",
            2 * faster >= entries,
        )
    )
    hours = record["metrics"]["meta_training_seconds"] / 3600
    rows.append(
        (
            f"meta-training <= {MAX_HOURS:g} h on the 2 cores (this checkpoint: epoch "
            f"{record['epoch']} of {record['training']['epochs']})",
            f"{hours:.2f} h",
            hours <= MAX_HOURS,
        )
    )
    return rows


def _relative(path: str | Path) -> str:
    """``path`` relative to the repository if it is in it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint",
        default=str(RUN),
        help="default: the committed run of the preset, results/run-pes-readouts-hardtanh",
    )
    parser.add_argument("--name", default="generalist", help="result file stem")
    parser.add_argument("--only", nargs="+", help="suite entries to run (default: all)")
    parser.add_argument("--ship", action="store_true", help="copy into l2o/pretrained")
    parser.add_argument("--note", default="", help="a sentence for the .md (e.g. machine load)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--from-suites", nargs="+", metavar="DIR",
        help="instead of running the suite, merge the results.json of these `l2o suite` "
        "output directories (runs of --checkpoint on disjoint entries, e.g. made in parallel)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve(args.checkpoint)
    optimizer, record = load_checkpoint(source)
    out = results_dir("generalist")
    start = time.perf_counter()
    if args.from_suites:
        report = merge_suites(args.from_suites, out / f"{args.name}-suite")
    else:
        report = suite(source, out / f"{args.name}-suite", only=args.only, force=True)
    name = report["learned_optimizer"]["name"]
    state_floats = optimizer.config.state_floats
    rows = targets(report, name, record, state_floats)
    result = {
        "checkpoint": _relative(source),
        "epoch": record["epoch"],
        "meta_training_seconds": record["metrics"]["meta_training_seconds"],
        "best_validation": record["metrics"]["best_validation_final_loss"],
        "state_floats_per_parameter": state_floats,
        "step_cost": step_cost(),
        "suite": report,
        "suite_seconds": None if args.from_suites else time.perf_counter() - start,
        "merged_from": args.from_suites,
        "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in rows],
        "note": args.note,
        "machine": machine(),
    }
    mark = {True: "yes", False: "**no**", None: "—"}
    lines = [
        f"# The generalist on the held-out suite ({name}, epoch {record['epoch']})",
        "",
        f"Checkpoint `{result['checkpoint']}`, meta-trained on the task mixture of "
        "configs/generalist.toml (no suite task is in it). Tuned Adam and NAG: learning rates "
        "tuned on each entry's validation tasks; every optimizer on the same test tasks.",
        "",
        "| target (issue #26) | measured | met |",
        "|---|---|---|",
        *(f"| {t} | {m} | {mark[ok]} |" for t, m, ok in rows),
        "",
        suite_table(report["entries"]),
        "",
        f"![suite]({args.name}-suite/suite.png)",
        "",
    ]
    if result["suite_seconds"] is not None:
        lines += [f"Suite: {result['suite_seconds'] / 60:.1f} min."]
    write_result(out, args.name, result, lines)
    if args.ship:
        ship(optimizer, record, result)
    return 0


def merge_suites(directories: list[str], out: Path) -> dict[str, Any]:
    """One suite report from the results.json of several ``l2o suite`` runs of one checkpoint
    (entries in the suite's order), written with its figure into ``out``."""
    reports = [json.loads((Path(d) / "results.json").read_text()) for d in directories]
    first = reports[0]
    for other in reports[1:]:
        same = ("baselines", "grid", "scale")
        spec = other["learned_optimizer"]["spec"] != first["learned_optimizer"]["spec"]
        if spec or any(other[k] != first[k] for k in same):
            raise SystemExit(f"cannot merge suites of other optimizers or settings {same}")
    entries = {name: r for report in reports for name, r in report["entries"].items()}
    order = [entry.name for entry in SUITE]
    ranked = sorted(entries, key=lambda n: order.index(n) if n in order else len(order))
    merged = {**first, "entries": {name: entries[name] for name in ranked}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", merged)
    plot_suite(merged["entries"], out / "suite.png")
    return merged


def ship(optimizer, record, result) -> None:
    """Save the checkpoint as the pretrained ``generalist``."""
    dest = ROOT / "src" / "l2o" / "pretrained" / "generalist"
    ratios = {
        entry: r["optimizers"][result["suite"]["learned_optimizer"]["name"]]["final_loss_over_adam"]
        for entry, r in result["suite"]["entries"].items()
    }
    shipped = {
        "description": "per-parameter MLP over normalised features with a per-tensor "
        "scheduler and a hypergradient rate, Adam at 0.01 to start; its read-outs meta-trained "
        "by PES on a mixture of MLPs, conv nets and quadratics: no learning rate to tune "
        "(issue #26)",
        "trained_on": record["task"],
        "training": record["training"],
        "metrics": record["metrics"],
        "benchmark": {
            "suite_final_loss_over_tuned_adam": {
                k: (v if v is not None and math.isfinite(v) else None) for k, v in ratios.items()
            },
            "targets": result["targets"],
            "machine": result["machine"]["cpu"],
            "results": "benchmarks/generalist/results/generalist.json",
        },
        "command": "l2o train configs/generalist.toml --run-dir "
        "benchmarks/generalist/results/run-pes-readouts-hardtanh; "
        "python -m benchmarks.generalist.run --ship",
    }
    save_checkpoint(dest, optimizer, shipped)
    print(f"shipped {dest}.safetensors")


if __name__ == "__main__":
    sys.exit(main())
