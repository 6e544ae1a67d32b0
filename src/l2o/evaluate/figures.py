"""The paper's MNIST figures (section 3.2): the settings they compare, and their drawings.

Figure 3: loss vs step of the LSTM and tuned baselines on the MLP it was trained on, for the
training horizon (100 steps) and beyond it (200). Figure 4: the same optimizer, unchanged, on
other MLPs (40 units, 2 hidden layers, ReLU). Figure 5: final loss over a grid of architectures
(hidden units x hidden layers), the LSTM against the best tuned baseline of each cell.

A figure preset (``configs/mnist-fig4.toml``, ``configs/mnist-fig5.toml``) lists its settings::

    [evaluate]      test_runs, validation_runs, problems_per_task, baselines, lr_grid
    [[setting]]     name, title, steps, task = { option = value, ... }   (overrides)
    [grid]          steps, hidden_units = [...], hidden_layers = [...]   (Figure 5)

Every setting follows the protocol of ``l2o.evaluate.compare``: baselines' learning rates are
tuned on validation runs, all optimizers are scored on the same held-out test runs (other seeds:
other theta_0 and minibatches). Beyond the training loss of the paper's figures, each test run's
final parameters are scored on the whole held-out test set (loss and accuracy).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2o.errors import InvalidInput
from l2o.evaluate.compare import compare, lr_grid
from l2o.evaluate.report import save_figure
from l2o.optimizers import BASELINES, StepOptimizer
from l2o.tasks import make_task_family
from l2o.tasks.base import TaskFamily

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvaluationOptions:
    test_runs: int = 20  # held-out runs per optimizer and setting
    validation_runs: int = 8  # runs on which baselines' learning rates are tuned
    problems_per_task: int = 4  # MLPs trained at once as one tensor program
    baselines: tuple[str, ...] = ("sgd", "nag", "rmsprop", "adam")
    lr_grid: tuple[float, float, int] = (1e-4, 10.0, 4)  # low, high, points per decade

    def __post_init__(self) -> None:
        for name in ("test_runs", "validation_runs", "problems_per_task"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InvalidInput(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        for runs in (self.test_runs, self.validation_runs):
            if runs % self.problems_per_task:
                raise InvalidInput(
                    f"Invalid runs: {runs} is not a multiple of problems_per_task = "
                    f"{self.problems_per_task}"
                )
        for b in self.baselines:
            if b not in BASELINES:
                raise InvalidInput(f"unknown baseline {b!r} (valid: {', '.join(BASELINES)})")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        object.__setattr__(self, "lr_grid", tuple(self.lr_grid))

    def grid(self) -> list[float]:
        low, high, per_decade = self.lr_grid
        return lr_grid(float(low), float(high), int(per_decade))


@dataclass(frozen=True)
class Setting:
    """One panel (or grid cell): task options changed from the training task, and a horizon."""

    name: str
    steps: int
    task: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""


def grid_settings(steps: int, hidden_units: Sequence[int], hidden_layers: Sequence[int]):
    """Figure 5's cells: every (units, layers) pair, named like ``grid-2x40``."""
    return [
        Setting(
            f"grid-{layers}x{units}",
            steps,
            {"hidden_sizes": [units] * layers},
            f"MLP({'x'.join([str(units)] * layers)})",
        )
        for layers in hidden_layers
        for units in hidden_units
    ]


def load_figure_preset(path: str | Path) -> tuple[EvaluationOptions, list[Setting]]:
    """Read a figure preset: its evaluation options and its settings (grid cells expanded)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise InvalidInput(f"figure preset not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"figure preset {path} is not valid TOML ({e})") from e
    unknown = set(data) - {"evaluate", "setting", "grid"}
    if unknown:
        raise InvalidInput(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    try:
        options = EvaluationOptions(**data.get("evaluate", {}))
        settings = [Setting(**s) for s in data.get("setting", [])]
        if "grid" in data:
            settings += grid_settings(**data["grid"])
    except TypeError as e:
        raise InvalidInput(f"{path}: {e}") from e
    return options, settings


def setting_family(
    task_config: Mapping[str, Any], setting: Setting, options: EvaluationOptions
) -> TaskFamily:
    """The task family of a setting: the training task (``record["task"]``) with the setting's
    changes, ``options.problems_per_task`` problems per task."""
    config = {**task_config, **setting.task, "num_problems": options.problems_per_task}
    return make_task_family(config.pop("name"), **config)


def evaluate_setting(
    learned: Mapping[str, StepOptimizer],
    task_config: Mapping[str, Any],
    setting: Setting,
    options: EvaluationOptions,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare learned optimizers with tuned baselines on one setting (``l2o.evaluate.compare``).

    ``task_config``: the training task (``record["task"]``), which ``setting.task`` changes.
    Returns ``Comparison.to_json()`` with, per optimizer, the held-out test-set loss and
    accuracy of the final parameters (``test_loss_mean``, ``test_accuracy_mean``, ...; batch
    norm nets with their running statistics), plus ``setting``, ``over_adam`` (each learned
    optimizer's final loss / tuned Adam's; {} without Adam) and ``lstm_over_adam``.
    """
    say = progress or (lambda _: None)
    comparison = compare(
        learned,
        setting_family(task_config, setting, options),
        setting.steps,
        options.baselines,
        num_validation_tasks=options.validation_runs // options.problems_per_task,
        num_test_tasks=options.test_runs // options.problems_per_task,
        grid=options.grid(),
        device=device,
        progress=lambda line: say(f"[{setting.name}] {line}"),
        test_metrics=True,
    )
    out = comparison.to_json()
    out["setting"] = {"name": setting.name, "title": setting.title, "task": dict(setting.task)}
    adam = "adam" in comparison.results
    out["over_adam"] = {name: comparison.ratio(name) for name in learned} if adam else {}
    out["lstm_over_adam"] = out["over_adam"].get("lstm")
    return out


def best_baseline(result: Mapping[str, Any]) -> str:
    """The tuned baseline with the lowest mean final loss in a setting's result."""
    tuned = {k: v for k, v in result["optimizers"].items() if v["lr"] is not None}
    return min(
        tuned, key=lambda k: math.inf if tuned[k]["diverged_runs"] else tuned[k]["final_loss_mean"]
    )


def figure_table(settings: Mapping[str, Mapping[str, Any]], learned: str = "lstm") -> str:
    """A markdown table of a figure's settings: final loss of the learned optimizer, of the best
    tuned baseline and of tuned Adam, and learned / Adam."""
    lines = [
        f"| setting | steps | runs | {learned} | best tuned baseline | adam | {learned} / adam |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in settings.items():
        o = r["optimizers"]
        best = best_baseline(r)
        adam = f"{o['adam']['final_loss_mean']:.4g}" if "adam" in o else "-"
        ratio = "-" if r.get("lstm_over_adam") is None else f"{r['lstm_over_adam']:.3f}"
        title = r.get("setting", {}).get("title") or name
        lines.append(
            f"| {title} | {r['steps']} | {r['runs']} | {o[learned]['final_loss_mean']:.4g} "
            f"| {best} {o[best]['final_loss_mean']:.4g} | {adam} | {ratio} |"
        )
    return "\n".join(lines)


def plot_generalization_grid(
    cells: Sequence[Mapping[str, Any]],
    path: str | Path,
    learned: str = "lstm",
    trained_on: tuple[int, int] = (20, 1),
    title: str | None = None,
) -> None:
    """Figure 5: final loss against hidden units, one panel per number of hidden layers.

    ``cells``: results of ``evaluate_setting`` on the grid (``task["hidden_sizes"]`` gives
    units and layers). Each panel draws the learned optimizer (solid) and, per cell, the best
    tuned baseline (dashed, its name at each point), with the 25-75% range of the final loss
    across runs as error bars. As in the paper, the dashed vertical line marks the architecture
    the optimizer was trained on (``trained_on`` = (units, layers)) and the dotted horizontal
    line its final loss there.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: dict[int, dict[int, Mapping[str, Any]]] = {}
    for cell in cells:
        sizes = cell["task"]["hidden_sizes"]
        table.setdefault(len(sizes), {})[sizes[0]] = cell
    layers = sorted(table)
    fig, axes = plt.subplots(
        1, len(layers), figsize=(4.2 * len(layers), 3.8), dpi=120, sharey=True, squeeze=False
    )
    for ax, n in zip(axes[0], layers):
        units = sorted(table[n])
        for kind, style in ((learned, "-o"), ("best", "--s")):
            ys, lows, highs, names = [], [], [], []
            for u in units:
                result = table[n][u]
                name = learned if kind == learned else best_baseline(result)
                s = result["optimizers"][name]
                y = s["final_loss_mean"]
                ys.append(y)
                lows.append(y - _value(s["curve_q25"][-1], y))
                highs.append(_value(s["curve_q75"][-1], y) - y)
                names.append(name)
            label = "LSTM" if kind == learned else "best tuned baseline"
            line = ax.errorbar(
                units, ys, yerr=[[max(v, 0) for v in lows], [max(v, 0) for v in highs]],
                fmt=style, capsize=3, label=label, linewidth=1.6,
            )  # fmt: skip
            if kind != learned:
                for u, y, name in zip(units, ys, names):
                    ax.annotate(
                        name, (u, y), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7, color=line[0].get_color(),
                    )  # fmt: skip
        if n == trained_on[1] and trained_on[0] in table[n]:
            ax.axvline(trained_on[0], color="gray", linestyle="--", linewidth=1)
            reference = table[n][trained_on[0]]["optimizers"][learned]["final_loss_mean"]
            for other in axes[0]:
                other.axhline(reference, color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(units, [str(u) for u in units])
        ax.set_xlabel("hidden units")
        ax.set_title(f"{n} hidden layer{'s' if n > 1 else ''}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"final loss (step {cells[0]['steps']})")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _value(v: float | None, default: float) -> float:
    return default if v is None else v
