"""``l2o plot``: draw every figure that a results file or a run directory supports.

* an evaluation ``results.json``: loss vs step (log scale, tuned learning rates in the legend,
  spread shaded) and a bar chart of final losses (median, whiskers at the quartiles);
* a results file of several settings (``benchmarks/mnist/results/mnist.json``): the same per
  setting, and the generalization grid of Figure 5 (final loss over width x depth);
* a run directory: meta-training curves (meta-loss and validation loss vs epoch), pictures of
  the behaviour of its best checkpoint (update vs gradient; trajectories on Rosenbrock and on
  a 2-D quadratic against tuned baselines), and the figures of ``evaluation/results.json`` if
  ``l2o evaluate`` wrote one there.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from l2o.errors import InvalidInput, L2OError
from l2o.evaluate.report import save_figure

FORMATS = ("png", "svg")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(metrics_path: str | Path) -> list[dict[str, Any]]:
    """The entries of a run's metrics.jsonl, one per epoch.

    A line that is not valid JSON raises an ``L2OError`` naming the file and the line, except
    the last line when the file does not end with a newline: that is an entry that was being
    written when the run was killed (or is being written now: ``l2o plot`` of a run that is
    still training). It is left out with a warning, so that the epochs before it can be
    plotted."""
    path = Path(metrics_path)
    lines = path.read_text().split("\n")  # the last is "" when the file ends with a newline
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            problem = f"{path} line {number} is not valid JSON ({e.msg}: column {e.colno})"
            if number < len(lines):
                raise L2OError(f"{problem}: the file is damaged; fix or delete that line") from e
            warnings.warn(f"{problem}: left out (an entry cut short)", stacklevel=2)
    return entries


def validation_scores(entries: list[dict[str, Any]]) -> dict[int, float]:
    """Epoch (1-based) -> validation f(theta_T), for the epochs of ``entries`` that validated."""
    return {
        e["epoch"] + 1: e["validation_final_loss"] for e in entries if "validation_final_loss" in e
    }


def plot_meta_training(metrics_path: str | Path, path: str | Path, title: str = "") -> None:
    """Meta-loss per epoch and validation f(theta_T) at each validation, log scale."""
    entries = read_metrics(metrics_path)
    if not entries:
        raise L2OError(f"{metrics_path} holds no epochs yet")
    epochs = [e["epoch"] + 1 for e in entries]
    meta = [e["meta_loss"] if math.isfinite(e["meta_loss"]) else math.nan for e in entries]
    val = list(validation_scores(entries).items())
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    a.plot(epochs, meta, linewidth=0.6, alpha=0.5, label="per epoch")
    window = max(len(meta) // 50, 1)
    if window > 1:
        smooth = [
            sum(meta[max(0, i - window + 1) : i + 1]) / len(meta[max(0, i - window + 1) : i + 1])
            for i in range(len(meta))
        ]
        a.plot(epochs, smooth, linewidth=1.5, label=f"moving mean ({window})")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel("meta-loss Σ w_t f(θ_t)")
    a.set_title("meta-training loss")
    a.legend()
    a.grid(True, alpha=0.3)
    if val:
        b.plot([v[0] for v in val], [v[1] for v in val], marker="o")
        b.set_yscale("log")
    b.set_xlabel("epoch")
    b.set_ylabel("mean f(θ_T)")
    b.set_title("validation (held-out tasks)")
    b.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_validation_runs(runs: dict[str, dict[int, float]], path: str | Path) -> None:
    """Validation f(theta_T) against epoch of several runs (label -> ``validation_scores``), one
    line each, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, scores in runs.items():
        ax.plot(list(scores), list(scores.values()), marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation: mean f(θ_T)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def draw_results(result: dict[str, Any], out: Path, fmt: str) -> list[Path]:
    from l2o.evaluate.report import plot_final_loss_bars, plot_loss_curves

    plot_loss_curves(result, out / f"loss.{fmt}")
    plot_final_loss_bars(result, out / f"final_loss.{fmt}")
    return [out / f"loss.{fmt}", out / f"final_loss.{fmt}"]


def draw_settings(settings: dict[str, Any], out: Path, fmt: str) -> list[Path]:
    """A results file of several settings (e.g. benchmarks/mnist/results/mnist.json): loss curves
    and bars per setting, and the generalization grid (Fig. 5) of the ``grid-*`` settings."""
    from l2o.evaluate.figures import plot_generalization_grid
    from l2o.evaluate.report import plot_final_loss_bars, plot_loss_curves

    written = []
    for name, result in settings.items():
        if name.startswith("grid-") or "optimizers" not in result:
            continue
        plot_loss_curves(result, out / f"{name}.loss.{fmt}", title=f"{name}: {result['runs']} runs")
        plot_final_loss_bars(result, out / f"{name}.final_loss.{fmt}")
        written += [out / f"{name}.loss.{fmt}", out / f"{name}.final_loss.{fmt}"]
    grid = [r for name, r in settings.items() if name.startswith("grid-")]
    if grid:
        plot_generalization_grid(grid, out / f"generalization_grid.{fmt}")
        written.append(out / f"generalization_grid.{fmt}")
    return written


def draw_run(run_dir: Path, out: Path, fmt: str, steps: int | None = None) -> list[Path]:
    from l2o.checkpoint import load_checkpoint
    from l2o.evaluate.behaviour import plot_trajectories, plot_update_vs_gradient
    from l2o.meta.seeds import task_seed
    from l2o.tasks import make_task_family

    written = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        plot_meta_training(metrics, out / f"meta_training.{fmt}", title=run_dir.name)
        written.append(out / f"meta_training.{fmt}")
    best = run_dir / "checkpoints" / "best.safetensors"
    if best.is_file():
        optimizer, record = load_checkpoint(best)
        horizon = steps or record.get("training", {}).get("horizon", 100)
        task_cfg = dict(record["task"])
        family = make_task_family(task_cfg.pop("name"), **task_cfg)
        task = family.sample(task_seed("validation", 0))
        marks = sorted({1, max(horizon // 10, 1), max(horizon // 2, 1), horizon})
        plot_update_vs_gradient(
            optimizer, task, out / f"update_vs_gradient.{fmt}", marks,
            title=f"learned update vs gradient on {family.name} (validation task)",
        )  # fmt: skip
        written.append(out / f"update_vs_gradient.{fmt}")
        for function in ("rosenbrock", "quadratic"):
            path = out / f"trajectories_{function}.{fmt}"
            plot_trajectories({"lstm": optimizer}, function, path, steps=horizon)
            written.append(path)
    results = run_dir / "evaluation" / "results.json"
    if results.is_file():
        written += draw_results(json.loads(results.read_text()), out, fmt)
    if not written:
        raise L2OError(f"{run_dir} holds nothing to plot (no metrics.jsonl, checkpoint or results)")
    return written


def draw(path: str | Path, out: str | Path | None = None, fmt: str = "png") -> list[Path]:
    """Draw what ``path`` (a results JSON or a run directory) supports into ``out``."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Invalid format: {fmt!r} (valid: {', '.join(FORMATS)})")
    path = Path(path)
    if path.is_dir():
        return draw_run(path, Path(out) if out else path / "figures", fmt)
    if path.is_file() and path.suffix == ".json":
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise L2OError(f"{path} is not valid JSON ({e})") from e
        target = Path(out) if out else path.parent
        if isinstance(result, dict) and "optimizers" in result:
            return draw_results(result, target, fmt)
        if isinstance(result, dict) and isinstance(result.get("settings"), dict):
            return draw_settings(result["settings"], target, fmt)
        raise L2OError(
            f"{path} is not an l2o results file (it has no 'optimizers' or 'settings' entry)"
        )
    raise L2OError(f"nothing to plot at {path}: expected a run directory or a results .json file")
