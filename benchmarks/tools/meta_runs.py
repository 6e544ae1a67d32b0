"""Meta-training runs side by side: what each validation scored, read from the runs' logs.

Every run directory of ``l2o train`` holds metrics.jsonl, one line per epoch, with the
validation score (mean f(theta_T) over the validation tasks, the same tasks for every run of a
family) on the lines of the epochs that validated. This puts those scores side by side, one
column per run, with each run's best, how many epochs it ran and for how long; and draws them.
It is how a variant that was stopped early (or one whose checkpoints are gone) is compared
with the preset's run: at equal epochs, on the same validation tasks. Only what the runs wrote
is read; nothing is trained or evaluated here. Writes <name>.{json,md,png} into the results
folder of the runs' experiment, benchmarks/<task>/results/ (the task of the first run's
config.toml; --out to choose). From the repository root:

    python -m benchmarks.tools.meta_runs preset=runs/mnist linear=runs/lin/fashion-mnist \
        --name mnist-linear-weights-validation --note '...'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import machine, results_dir, write_result
from l2o.config import load_config_dict
from l2o.errors import L2OError
from l2o.evaluate.draw import plot_validation_runs, read_metrics, validation_scores


def read_run(run_dir: Path) -> dict:
    """The validation scores of a run (1-based epoch -> mean f(theta_T)), its epochs and the
    meta-training seconds of its last logged epoch."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: no metrics.jsonl in {run_dir} (a run directory of l2o train)")
    try:
        entries = read_metrics(path)
        epochs, seconds = entries[-1]["epoch"] + 1, entries[-1]["seconds"]
        scores = validation_scores(entries)
    except L2OError as e:  # a damaged line, named by read_metrics
        raise SystemExit(f"error: {e}") from e
    except (IndexError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path} is not a run's metrics.jsonl ({e!r})") from e
    if not scores:
        raise SystemExit(f"error: {path} holds no validation (the run stopped before validating)")
    best = min(scores, key=scores.get)
    return {
        "run_dir": str(run_dir),
        "epochs": epochs,
        "seconds": seconds,
        "validation": scores,
        "best_epoch": best,
        "best_validation": scores[best],
    }


def experiment_results(run_dir: Path) -> Path:
    """benchmarks/<task>/results for the task of a run (its config.toml, which l2o train
    writes)."""
    try:
        task = load_config_dict(run_dir / "config.toml").get("task", {}).get("name")
    except L2OError as e:
        raise SystemExit(f"error: {e}; give --out") from e
    if not task:
        raise SystemExit(f"error: {run_dir / 'config.toml'} names no task; give --out")
    return results_dir(task)


def markdown(name: str, runs: dict[str, dict]) -> list[str]:
    labels = list(runs)
    lines = [
        f"# Meta-training runs side by side: {name}",
        "",
        "Validation score (mean f(theta_T) over the same validation tasks) at each epoch that "
        "validated, from each run's metrics.jsonl; - = the run did not get there. Best of each "
        "run in bold.",
        "",
        "| run | run directory | epochs run | minutes | best validation | at epoch |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in runs.items():
        lines.append(
            f"| {label} | {run['run_dir']} | {run['epochs']} | {run['seconds'] / 60:.1f} | "
            f"{run['best_validation']:.4f} | {run['best_epoch']} |"
        )
    lines += ["", "| epoch | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for epoch in sorted({e for run in runs.values() for e in run["validation"]}):
        cells = []
        for run in runs.values():
            score = run["validation"].get(epoch)
            cell = "-" if score is None else f"{score:.4f}"
            cells.append(f"**{cell}**" if epoch == run["best_epoch"] else cell)
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return [*lines, "", f"![validation]({name}.png)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--name", required=True, help="result files <name>.{json,md,png}")
    parser.add_argument("--out", help="default benchmarks/<task>/results, <task> the runs'")
    parser.add_argument("--note", default="", help="what the runs are: their commands, machine")
    args = parser.parse_args(argv)
    runs: dict[str, dict] = {}
    for item in args.runs:
        label, sep, run_dir = item.partition("=")
        if not (sep and label and run_dir):
            raise SystemExit(f"error: {item!r} is not LABEL=RUN_DIR")
        if label in runs:
            raise SystemExit(f"error: label {label!r} given twice")
        runs[label] = read_run(Path(run_dir))
    out = Path(args.out or experiment_results(Path(args.runs[0].partition("=")[2])))
    out.mkdir(parents=True, exist_ok=True)
    plot_validation_runs(
        {label: run["validation"] for label, run in runs.items()}, out / f"{args.name}.png"
    )
    result = {"runs": runs, "note": args.note, "machine": machine()}
    write_result(out, args.name, result, markdown(args.name, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
