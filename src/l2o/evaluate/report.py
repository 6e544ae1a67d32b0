"""Present a comparison: a text table, a JSON file and the paper-style loss-vs-step figure."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2o.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def format_table(result: dict[str, Any], reference: str = "adam") -> str:
    """Final loss (mean ± std over runs), summed loss, tuned lr and seconds, one row each."""
    optimizers = result["optimizers"]
    ref = optimizers.get(reference, {}).get("final_loss_mean")
    header = (
        f"{'optimizer':<16}{'final loss':>24}{'median':>12}{'summed loss':>14}"
        f"{'tuned lr':>10}{'seconds':>10}{f'/ {reference}':>10}"
    )
    lines = [
        f"{result['task']['name']}: {result['runs']} test runs, f(theta_T) at T = {result['steps']}",
        header,
        "-" * len(header),
    ]
    for name, s in optimizers.items():
        final = f"{s['final_loss_mean']:.4g} ± {s['final_loss_std']:.3g}"
        lr = "-" if s["lr"] is None else f"{s['lr']:.3g}"
        ratio = s["final_loss_mean"] / ref if ref else math.nan
        lines.append(
            f"{name:<16}{final:>24}{s['final_loss_median']:>12.4g}{s['summed_loss_mean']:>14.4g}"
            f"{lr:>10}{s['seconds']:>10.3f}{ratio:>10.3f}"
        )
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with inf and NaN floats (diverged runs) replaced by None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (PNG or SVG by suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


# A list of numbers (or nulls) as json.dumps(indent=...) writes it: one element per line.
_NUMBER_LIST = re.compile(
    r"\[\s*(?:(?:-?[0-9][0-9.eE+-]*|null),\s*)*(?:-?[0-9][0-9.eE+-]*|null)\s*\]"
)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write results as JSON atomically; non-finite numbers become null. Objects are indented,
    lists of numbers (loss curves) stay on one line, so result files stay small and diffable."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text)
    atomic_write_text(path, text + "\n")


def plot_loss_curves(result: dict[str, Any], path: str | Path, title: str | None = None) -> None:
    """Loss vs step on a log scale, one line (mean over runs) per optimizer, the interquartile
    range across runs shaded; tuned learning rates in the legend. PNG or SVG by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, s in result["optimizers"].items():
        mean = [math.nan if v is None else v for v in s["curve_mean"]]
        q25 = [math.nan if v is None else v for v in s["curve_q25"]]
        q75 = [math.nan if v is None else v for v in s["curve_q75"]]
        steps = range(len(mean))
        label = name if s["lr"] is None else f"{name} (lr {s['lr']:.3g})"
        (line,) = ax.plot(steps, mean, label=label, linewidth=2 if s["lr"] is None else 1.3)
        ax.fill_between(steps, q25, q75, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss f(θ)")
    task = result["task"]["name"]
    ax.set_title(title or f"{task}: mean over {result['runs']} test runs (shaded: 25–75%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_final_loss_bars(
    result: dict[str, Any], path: str | Path, title: str | None = None
) -> None:
    """``final_loss_figure`` saved to ``path`` (PNG or SVG by suffix)."""
    save_figure(final_loss_figure(result, title), path)


def final_loss_figure(result: dict[str, Any], title: str | None = None) -> Figure:
    """Bar chart of the final loss per optimizer, log scale: the bar is the median over runs,
    the whiskers go from the 25th to the 75th percentile, as the axis label says. A median
    made infinite by diverged runs gets no bar but the word "diverged", one whose 75th
    percentile is infinite no whiskers; the optimizer's label says how many runs diverged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    labels = []
    for i, (name, stats) in enumerate(result["optimizers"].items()):
        # The last points of the quartile curves: one quantile computation, so they are ordered
        # (None where diverged runs make one infinite).
        low, median, high = (stats[k][-1] for k in ("curve_q25", "curve_median", "curve_q75"))
        diverged = stats.get("diverged_runs", 0)
        labels.append(f"{name}\n{diverged}/{runs} diverged" if diverged else name)
        if median is None:
            ax.text(i, 0.02, "diverged", transform=ax.get_xaxis_transform(), ha="center")
            continue
        ax.bar(i, median, color=f"C{i}")
        if low is not None and high is not None:
            ax.errorbar(i, median, yerr=[[median - low], [high - median]], fmt="none",
                        ecolor="black", capsize=4)  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)  # room for the optimizers without a bar too
    ax.set_yscale("log")
    ax.set_ylabel(f"median f(θ_T) at T = {result['steps']}\nwhiskers: 25th–75th percentile")
    ax.set_title(title or f"{result['task']['name']}: final loss over {runs} runs")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_report(result: dict[str, Any], out: str | Path, figures: list[str]) -> Path:
    """``report.md``: the table of final losses (mean ± std, median), tuned learning rates,
    wall-clock per run, and the figures, so that a run can be shared as it is."""
    out = Path(out)
    runs = result["runs"]
    lines = [
        f"# {result['task']['name']}: learned vs tuned baselines",
        "",
        f"Task: `{json.dumps(result['task'])}`  ",
        f"{runs} held-out test runs ({result['num_test_tasks']} test tasks), scored at step "
        f"{result['steps']}; baselines' learning rates tuned on {result['num_validation_tasks']} "
        "validation tasks (a log grid), every optimizer from a fresh state on the same tasks.",
        "",
        "| optimizer | final loss (mean ± std) | median | summed loss | tuned lr | seconds / run |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["optimizers"].items():
        lr = "—" if s["lr"] is None else f"{s['lr']:.3g}"
        lines.append(
            f"| {name} | {s['final_loss_mean']:.4g} ± {s['final_loss_std']:.3g} "
            f"| {s['final_loss_median']:.4g} | {s['summed_loss_mean']:.4g} | {lr} "
            f"| {s['seconds'] / runs:.3g} |"
        )
    lines.append("")
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
