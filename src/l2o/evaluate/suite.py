"""The held-out suite: one learned optimizer against tuned Adam and tuned NAG on a fixed list of
tasks, each at its own horizon (``l2o suite OPTIMIZER``, ``l2o.pipelines.suite``).

For every ``SuiteEntry`` the baselines' learning rates are tuned on the entry's validation
tasks and every optimizer runs on the same test tasks, from a fresh state (``compare``'s
protocol). Per optimizer the suite reports:

* the mean final loss f(theta_T) over all test runs and its ratio to tuned Adam's;
* the first step at which its mean loss curve reaches tuned Adam's final mean loss (None if it
  never does; Adam reaches it at step T or earlier), and the seconds to that step: that step
  times the optimizer's seconds per step (gradient and step) on one problem alone, as a user
  trains one model (``time_one_problem``: tasks batch several problems in one tensor program,
  which spreads a hand-designed step's cost over them but not that of an optimizer that steps
  each problem's tensors apart; without a ``num_problems`` option, one test task's rollout);
* how many runs diverged (a non-finite final loss; they make the mean infinite).

The default ``SUITE`` runs the image tasks on Fashion-MNIST, which Debian ships: the conv
family of the paper's Figure 6 is meant for CIFAR-10, which is not on our machines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from l2o.errors import InvalidInput
from l2o.evaluate.compare import Comparison, OptimizerResult, compare
from l2o.evaluate.rollout import rollout
from l2o.meta.seeds import task_seed
from l2o.optimizers import BASELINES, StepOptimizer, make_baseline
from l2o.tasks import TaskFamily, make_task_family

REFERENCE = "adam"  # every ratio and every "steps to reach" is against tuned Adam
SUITE_BASELINES = ("adam", "nag")
TIMING_STEPS = 200  # steps of the one-problem rollouts that time each optimizer's step
LEARNED = "learned"  # the learned optimizer's name in the results unless one is given


@dataclass(frozen=True)
class SuiteEntry:
    """One task of the suite: a task family and its options, the horizon T, and how many
    validation tasks tune the baselines and test tasks score everyone."""

    name: str
    task: str  # a task family of l2o.tasks (quadratic, mnist, conv, ...)
    options: dict[str, Any] = field(default_factory=dict)  # the family's options
    steps: int = 100
    test_tasks: int = 4
    validation_tasks: int = 2
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise InvalidInput(f"Invalid suite entry name: {self.name!r}")
        for key in ("steps", "test_tasks", "validation_tasks"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(
                    f"Invalid {key} of suite entry {self.name!r}: {value!r} (an integer >= 1)"
                )

    def family(self, data_dir: str | None = None) -> TaskFamily:
        """The entry's task family; ``data_dir`` is given to families that read a dataset."""
        options = dict(self.options)
        if data_dir is not None and "data_dir" in _fields(self.task):
            options["data_dir"] = str(data_dir)
        return make_task_family(self.task, **options)

    def scaled(self, scale: float) -> SuiteEntry:
        """This entry with ``steps`` times ``scale`` (at least 2) and, for a scale below 1,
        the numbers of tasks too (at least 1): ``scale=0.01`` makes a smoke test."""
        if scale == 1:
            return self
        tasks = (lambda n: max(1, round(n * scale))) if scale < 1 else (lambda n: n)
        return SuiteEntry(
            self.name, self.task, dict(self.options), max(2, round(self.steps * scale)),
            tasks(self.test_tasks), tasks(self.validation_tasks), self.note,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fields(task: str) -> set[str]:
    from l2o.tasks import TASK_FAMILIES

    cls = TASK_FAMILIES.get(task)
    return {f.name for f in fields(cls)} if cls is not None else set()  # type: ignore[arg-type]


_FMNIST = {"dataset": "fashion-mnist"}
_MLP_PAPER = {**_FMNIST, "hidden_sizes": [20], "activation": "sigmoid", "num_problems": 4}
_MLP_2X64 = {
    **_FMNIST, "hidden_sizes": [64, 64], "activation": "relu", "init": "torch", "num_problems": 4
}  # fmt: skip
_CONV = {**_FMNIST, "channels": [16, 16, 16], "kernel_size": 5, "hidden_sizes": [32]}

# The default suite (issue #26). Image tasks read Fashion-MNIST (/usr/share/datasets or
# --data-dir); the conv family runs on it too, since CIFAR-10 is not on our machines.
SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry(
        name="quadratic-10d-T100",
        task="quadratic",
        options={"dim": 10, "num_problems": 128},
        steps=100,
        test_tasks=4,
        validation_tasks=2,
        note="the paper's 10-d quadratics",
    ),
    SuiteEntry(
        name="fmnist-mlp20-sigmoid-T100",
        task="mnist",
        options=_MLP_PAPER,
        steps=100,
        test_tasks=4,
        validation_tasks=2,
        note="the paper's MNIST MLP (one hidden layer of 20 sigmoid units), on Fashion-MNIST",
    ),
    SuiteEntry(
        name="fmnist-mlp2x64-relu-T1000",
        task="mnist",
        options=_MLP_2X64,
        steps=1000,
        test_tasks=2,
        validation_tasks=1,
        note="a wider, deeper ReLU MLP at 10x the horizon",
    ),
    SuiteEntry(
        name="fmnist-conv-T100",
        task="conv",
        options=_CONV,
        steps=100,
        test_tasks=4,
        validation_tasks=2,
        note="the paper's Figure 6 conv net with batch norm, on Fashion-MNIST (no CIFAR-10 here)",
    ),
    SuiteEntry(
        name="fmnist-conv-T1000",
        task="conv",
        options=_CONV,
        steps=1000,
        test_tasks=2,
        validation_tasks=1,
        note="the same conv net at 10x the horizon",
    ),
    SuiteEntry(
        name="fmnist-mlp20-sigmoid-T10000",
        task="mnist",
        options={**_MLP_PAPER, "num_problems": 2},
        steps=10000,
        test_tasks=2,
        validation_tasks=1,
        note="divergence check: the paper's MLP at 100x its training horizon",
    ),
)


def select(names: Sequence[str] | None, entries: Sequence[SuiteEntry] = SUITE) -> list[SuiteEntry]:
    """The entries called ``names`` (all of ``entries`` for None), in the order given."""
    by_name = {e.name: e for e in entries}
    if len(by_name) != len(entries):
        raise InvalidInput("suite entries must have distinct names")
    if names is None:
        return list(entries)
    chosen = []
    for name in names:
        if name not in by_name:
            raise InvalidInput(f"unknown suite entry {name!r} (valid: {', '.join(by_name)})")
        chosen.append(by_name[name])
    if not chosen:
        raise InvalidInput("no suite entry chosen")
    return chosen


def steps_to_reach(curve: Sequence[float] | torch.Tensor, target: float) -> int | None:
    """The first step t with curve[t] <= target (None if none does, or target is not finite).
    A NaN point (diverged runs) never reaches."""
    if not math.isfinite(target):
        return None
    for t, value in enumerate(torch.as_tensor(curve, dtype=torch.float64).tolist()):
        if value <= target:
            return t
    return None


def _optimizer_summary(
    result: OptimizerResult, target: float, num_tasks: int, seconds_per_step: float | None = None
) -> dict[str, Any]:
    losses = result.losses.double()
    steps = losses.shape[0] - 1
    curve = losses.mean(1)  # NaN or inf at steps where a run diverged
    final = losses[-1]
    diverged = int((~torch.isfinite(final)).sum())
    mean = float(curve[-1]) if diverged == 0 else math.inf  # the curve's end, exactly
    if seconds_per_step is None:  # one test task's rollout
        seconds_per_step = result.seconds / (steps * num_tasks)
    reach = steps_to_reach(curve, target)
    return {
        "lr": result.lr,
        "final_loss_mean": mean,
        "final_loss_median": float(final.median()),
        "diverged_runs": diverged,
        "seconds": result.seconds,
        "seconds_per_step": seconds_per_step,
        "steps_to_adam_final": reach,
        "seconds_to_adam_final": None if reach is None else reach * seconds_per_step,
        "curve_mean": [v if math.isfinite(v) else None for v in curve.tolist()],
        "tuning": {f"{lr:.6g}": s if math.isfinite(s) else None for lr, s in result.tuning.items()},
    }


def adam_target(comparison: Comparison) -> float:
    """Tuned Adam's mean final loss: the last point of its mean curve (inf if a run diverged)."""
    losses = comparison.results[REFERENCE].losses.double()
    return float(losses.mean(1)[-1]) if bool(torch.isfinite(losses[-1]).all()) else math.inf


def summarize(
    comparison: Comparison, seconds_per_step: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Per optimizer of ``comparison`` (which has tuned Adam): the suite's numbers;
    ``seconds_per_step`` by optimizer (``time_one_problem``), else from the test runs."""
    target = adam_target(comparison)
    tasks = comparison.num_test_tasks
    timed = seconds_per_step or {}
    out = {
        n: _optimizer_summary(r, target, tasks, timed.get(n)) for n, r in comparison.results.items()
    }
    for s in out.values():
        ratio = s["final_loss_mean"] / target if math.isfinite(target) and target > 0 else None
        s["final_loss_over_adam"] = ratio
    return out


def time_one_problem(
    optimizers: dict[str, StepOptimizer], family: TaskFamily, steps: int, device: str = "cpu"
) -> dict[str, float] | None:
    """Seconds per step (gradient and optimizer step) of each optimizer on one problem of
    ``family`` alone, over ``steps`` steps after an untimed 2-step warm-up; the optimizers in
    turn, three rounds, the fastest round of each (the least disturbed by other work). None if
    the family has no ``num_problems`` option."""
    if "num_problems" not in _fields(family.name):
        return None
    task = replace(family, num_problems=1).sample(task_seed("test", 0), device=device)  # type: ignore[type-var]
    best = {name: math.inf for name in optimizers}
    for optimizer in optimizers.values():
        rollout(optimizer, task, 2)
    for _ in range(3):
        for name, optimizer in optimizers.items():
            best[name] = min(best[name], rollout(optimizer, task, steps).seconds / steps)
    return best


def run_entry(
    learned: StepOptimizer,
    entry: SuiteEntry,
    family: TaskFamily,
    *,
    baselines: Sequence[str] = SUITE_BASELINES,
    grid: Sequence[float] | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    bar: Any | None = None,
    name: str = LEARNED,
) -> dict[str, Any]:
    """Tune the ``baselines`` (which must include Adam) on the entry's validation tasks, run
    ``learned`` (called ``name`` in the results) and them on its test tasks (after an untimed
    warm-up rollout of ``learned``), and return the entry's results."""
    if name in BASELINES:
        raise InvalidInput(f"the learned optimizer cannot be called {name!r}: a baseline's name")
    if REFERENCE not in baselines:
        raise InvalidInput(f"the suite's baselines must include {REFERENCE!r}: {list(baselines)}")
    for baseline in baselines:
        if baseline not in BASELINES:
            raise InvalidInput(f"unknown optimizer {baseline!r} (valid: {', '.join(BASELINES)})")
    # An untimed 2-step rollout first, so that the learned optimizer's measured seconds per step
    # (it runs first) do not include one-off costs that the tuned baselines have paid in tuning.
    learned = learned.to(device).eval()
    rollout(learned, family.sample(task_seed("validation", 0), device=device), 2)
    comparison = compare(
        {name: learned}, family, steps=entry.steps, baselines=list(baselines),
        num_validation_tasks=entry.validation_tasks, num_test_tasks=entry.test_tasks,
        grid=grid, device=device, progress=progress, bar=bar,
    )  # fmt: skip
    timed = {name: learned}
    timed.update({b: make_baseline(b, comparison.results[b].lr) for b in baselines})
    seconds = time_one_problem(timed, family, min(entry.steps, TIMING_STEPS), device)
    return {
        "entry": entry.to_json(),
        "task": family.to_config(),
        "steps": entry.steps,
        "runs": comparison.runs,
        "adam_final_loss": adam_target(comparison),
        "optimizers": summarize(comparison, seconds),
    }


def _number(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, fmt)


def suite_table(entries: dict[str, dict[str, Any]]) -> str:
    """The suite as a markdown table: one row per entry and optimizer."""
    lines = [
        "| entry | T | runs | optimizer | tuned lr | final loss | / Adam | steps to Adam's final "
        "| seconds to Adam's final | s / step | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in entries.items():
        for opt, s in r["optimizers"].items():
            lines.append(
                f"| {name} | {r['steps']} | {r['runs']} | {opt} | {_number(s['lr'])} "
                f"| {_number(s['final_loss_mean'], '.4g')} | {_number(s['final_loss_over_adam'])} "
                f"| {'never' if s['steps_to_adam_final'] is None else s['steps_to_adam_final']} "
                f"| {_number(s['seconds_to_adam_final'])} | {_number(s['seconds_per_step'])} "
                f"| {s['diverged_runs']}/{r['runs']} |"
            )
    return "\n".join(lines)


def plot_suite(entries: dict[str, dict[str, Any]], path: Any) -> None:
    """One figure: bars of each optimizer's final loss / tuned Adam's per entry (log scale;
    "diverged" where the mean is infinite), and each entry's mean loss curves with tuned Adam's
    final loss as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l2o.evaluate.report import save_figure

    names = list(entries)
    panels = len(names) + 1
    cols = min(panels, 4)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=100, squeeze=False)
    flat = axes.ravel()
    ax = flat[0]
    optimizers = list(next(iter(entries.values()))["optimizers"]) if entries else []
    width = 0.8 / max(len(optimizers), 1)
    for k, opt in enumerate(optimizers):
        for i, name in enumerate(names):
            ratio = entries[name]["optimizers"].get(opt, {}).get("final_loss_over_adam")
            x = i + (k - (len(optimizers) - 1) / 2) * width
            if ratio is None or not math.isfinite(ratio) or ratio <= 0:
                ax.text(x, 1, "diverged", rotation=90, ha="center", va="bottom", fontsize=7)
            else:
                ax.bar(x, ratio, width, color=f"C{k}", label=opt if i == 0 else None)
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("final loss / tuned Adam's")
    ax.set_title("final loss relative to tuned Adam")
    ax.legend(fontsize=7)
    for ax, name in zip(flat[1:], names, strict=False):
        r = entries[name]
        for k, (opt, s) in enumerate(r["optimizers"].items()):
            curve = [math.nan if v is None else v for v in s["curve_mean"]]
            label = opt if s["lr"] is None else f"{opt} (lr {s['lr']:.3g})"
            ax.plot(range(len(curve)), curve, color=f"C{k}", linewidth=1.2, label=label)
            if s["steps_to_adam_final"] is not None:
                ax.plot(s["steps_to_adam_final"], r["adam_final_loss"], "o", color=f"C{k}", ms=4)
        if math.isfinite(r["adam_final_loss"]) and r["adam_final_loss"] > 0:
            ax.axhline(r["adam_final_loss"], color="gray", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{name}: {r['runs']} runs", fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


__all__ = [
    "LEARNED",
    "REFERENCE",
    "SUITE",
    "SUITE_BASELINES",
    "SuiteEntry",
    "adam_target",
    "plot_suite",
    "run_entry",
    "select",
    "steps_to_reach",
    "suite_table",
    "summarize",
]
