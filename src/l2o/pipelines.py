"""What the ``l2o`` command runs, as functions that Python users call too.

    evaluate_checkpoint(optimizer, out)       a trained optimizer against tuned baselines
    evaluate_figure(optimizer, preset, out)   every setting of a figure preset (Figs. 4-6)
    demo(out)                                 meta-train on quadratics, then compare
    suite(optimizer, out)                     the held-out suite: tuned Adam and NAG, many tasks

(Meta-training itself is ``l2o.runs.train``.) Each one checks every input first: the device,
the checkpoint (checksum, finite weights), the task and its dataset files; only then does it
create its output directory (see docs/reliability.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2o.checkpoint import atomic_write_text, load_checkpoint, resolve
from l2o.checks import check_positive_int
from l2o.config import ExperimentConfig, apply_overrides, config_from_dict, parse_override
from l2o.devices import check_device
from l2o.distributed import World
from l2o.errors import InvalidInput
from l2o.evaluate import compare, lr_grid, write_json, write_report
from l2o.evaluate.compare import count_rollouts
from l2o.evaluate.draw import draw_results, draw_settings
from l2o.evaluate.figures import evaluate_setting, figure_table, load_figure_preset, setting_family
from l2o.monitor import Progress
from l2o.optimizers import BASELINES
from l2o.runs import prepare_directory, train
from l2o.tasks import TaskFamily, make_task_family

DEFAULT_BASELINES = ("sgd", "nag", "rmsprop", "adam")


def prepare_data(family: TaskFamily, download: bool = False) -> None:
    """Read and verify the task's dataset files (downloading them first with ``download``), so
    that a missing or corrupt file is found before anything is written."""
    locate = getattr(family, "locate_data", None)
    if locate is not None:
        locate(download=download)
    elif download:
        raise InvalidInput(f"--download: task {family.name!r} reads no dataset")


def task_config(
    record: dict[str, Any], task_name: str | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The task a checkpoint was trained on (or ``task_name``'s defaults), with ``task.*``
    overrides such as ``task.hidden_sizes=[40]``."""
    for text in overrides:
        if parse_override(text)[0] != "task":
            raise InvalidInput(f"Invalid override {text!r} for evaluate (only task.* may be set)")
    # A run's checkpoint records its "task"; a pretrained optimizer the task it was "trained_on".
    task_cfg = dict(record.get("task") or record.get("trained_on") or {"name": "quadratic"})
    if task_name is not None and task_name != task_cfg.get("name"):
        task_cfg = {"name": task_name}
    return apply_overrides({"task": task_cfg}, list(overrides))["task"]


def _inputs(checkpoint: Path, family: TaskFamily) -> list[Path]:
    """The files a command reads, which ``force`` must never delete."""
    data_dir = getattr(family, "data_dir", "")
    return [checkpoint, *([Path(data_dir)] if data_dir else [])]


def evaluate_checkpoint(
    optimizer: str | Path,
    out: str | Path,
    *,
    task: str | None = None,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    test_tasks: int = 8,
    validation_tasks: int = 2,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    grid: Sequence[float] | None = None,
    device: str = "cpu",
    force: bool = False,
    download: bool = False,
    quiet: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """Compare a trained optimizer (a pretrained name, checkpoint or run directory) with the
    ``baselines``, each with its learning rate tuned on ``validation_tasks`` held-out tasks over
    ``grid`` (default ``lr_grid()``), on ``test_tasks`` test tasks of ``steps`` steps (default:
    its training horizon), on the task it was trained on (or ``task``, with ``task.*``
    ``overrides``). Writes ``out``/results.json, report.md, loss.png and final_loss.png into
    the new directory ``out``; returns the results (``format_table`` prints them).

    ``world``: the processes of a torchrun job (``l2o.distributed``; default: this process
    alone), which all call it alike: each checks the inputs, the rollouts are shared among them
    (``compare``), rank 0 alone writes ``out``; every one returns the results."""
    world = world or World()
    check_positive_int("test_tasks", test_tasks)
    check_positive_int("validation_tasks", validation_tasks)
    if steps is not None:
        check_positive_int("steps", steps)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise InvalidInput(
            f"unknown optimizer {unknown[0]!r} in baselines (valid: {', '.join(BASELINES)})"
        )

    def check_inputs() -> tuple[Any, ...]:
        check_device(device)
        world.check_device(device, "--device")
        source = resolve(optimizer)
        learned, record = load_checkpoint(source)
        task_cfg = task_config(record, task, overrides)
        family = make_task_family(task_cfg.pop("name"), **task_cfg)
        prepare_data(family, download)
        return source, learned, record, family

    source, learned, record, family = world.agree(check_inputs)
    out = Path(out)
    world.from_main(lambda: prepare_directory(out, force, "evaluation", _inputs(source, family)))
    steps = steps or record.get("training", {}).get("horizon", 100)
    grid = list(grid or lr_grid())
    bar = Progress(
        count_rollouts(1, len(baselines), len(grid), validation_tasks, test_tasks),
        "evaluating",
        quiet or not world.is_main,
    )
    comparison = compare(
        {"lstm": learned},
        family,
        steps=steps,
        baselines=list(baselines),
        num_validation_tasks=validation_tasks,
        num_test_tasks=test_tasks,
        grid=grid,
        device=world.device(device),
        progress=bar.write,
        bar=bar,
        world=world,
    )
    bar.close()
    result = comparison.to_json()
    result["learned_optimizer"] = {"checkpoint": str(source), "spec": record["optimizer"]}
    result["lstm_over_adam"] = comparison.ratio("lstm") if "adam" in baselines else None

    def write() -> None:
        write_json(out / "results.json", result)
        figures = [p.name for p in draw_results(result, out, "png")]
        write_report(result, out, figures)

    world.from_main(write)
    return result


def evaluate_figure(
    optimizer: str | Path,
    preset: str | Path,
    out: str | Path,
    *,
    task: str | None = None,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    force: bool = False,
    download: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every setting of a figure preset (e.g. the paper's Figures 4 and 5 for MNIST,
    configs/mnist-fig4.toml and mnist-fig5.toml), each compared with tuned baselines as the
    preset says: ``out``/results.json (rewritten after each setting, so a long evaluation keeps
    what it has done), one loss plot per setting, the grid figure and report.md."""
    check_device(device)
    options, settings = load_figure_preset(preset)
    if not settings:
        raise InvalidInput(f"figure preset {preset} lists no [[setting]] and no [grid]")
    source = resolve(optimizer)
    learned, record = load_checkpoint(source)
    task_cfg = task_config(record, task, overrides)
    inputs: list[Path] = [Path(preset)]
    for setting in settings:  # every setting's task is valid, its data found, before any run
        family = setting_family(task_cfg, setting, options)
        prepare_data(family, download)
        inputs += _inputs(source, family)
    out = prepare_directory(out, force, "evaluation", inputs)
    report: dict[str, Any] = {
        "figure": str(preset),
        "learned_optimizer": {"checkpoint": str(source), "spec": record["optimizer"]},
        "task": task_cfg,
        "settings": {},
    }
    for setting in settings:
        report["settings"][setting.name] = evaluate_setting(
            {"lstm": learned}, task_cfg, setting, options, device,
            progress=None if quiet else (lambda line: print(line, flush=True)),
        )  # fmt: skip
        write_json(out / "results.json", report)
    figures = [p.name for p in draw_settings(report["settings"], out, "png")]
    lines = [f"# {Path(preset).name}: {source}", "", figure_table(report["settings"]), ""]
    lines += [f"![{f}]({f})" for f in figures]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return report


def suite(
    optimizer: str | Path,
    out: str | Path,
    *,
    entries: Sequence[Any] | None = None,
    only: Sequence[str] | None = None,
    scale: float = 1.0,
    baselines: Sequence[str] = ("adam", "nag"),
    grid: Sequence[float] | None = None,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    download: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """The held-out suite (``l2o.evaluate.suite``): the learned ``optimizer`` (a pretrained name,
    checkpoint or run directory) against tuned Adam and NAG on each of ``entries`` (default
    ``SUITE``; ``only``: the entries of those names), each at its own horizon, with ``scale``
    shrinking horizons (and, below 1, numbers of tasks) for a quick check. ``data_dir``: where
    the image tasks' datasets are. Checks every input (device, checkpoint, every entry's task and
    dataset) before creating ``out``; writes ``out``/results.json (rewritten after each entry),
    report.md and suite.png. Returns the results."""
    from l2o.evaluate.suite import SUITE, plot_suite, run_entry, select, suite_table

    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise InvalidInput(f"Invalid scale: {scale!r} (must be a number > 0)")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or "adam" not in baselines:
        raise InvalidInput(
            f"unknown optimizer {unknown[0]!r} in baselines (valid: {', '.join(BASELINES)})"
            if unknown
            else f"the suite's baselines must include adam (its reference): {list(baselines)}"
        )
    check_device(device)
    chosen = [e.scaled(scale) for e in select(only, SUITE if entries is None else entries)]
    source = resolve(optimizer)
    learned, record = load_checkpoint(source)
    # In the results: a pretrained optimizer by its name, any other by its kind (lstm, mlp, ...)
    from l2o import pretrained

    kind = record["optimizer"].get("kind", "lstm")
    name = str(optimizer) if str(optimizer) in pretrained.names() else kind
    families, inputs = [], []
    for entry in chosen:  # every entry's task is valid, its data found, before any run
        family = entry.family(None if data_dir is None else str(data_dir))
        prepare_data(family, download)
        families.append(family)
        inputs += _inputs(source, family)
    grid = list(grid or lr_grid())
    out = prepare_directory(out, force, "evaluation", inputs or [source])
    bar = Progress(
        sum(count_rollouts(1, len(baselines), len(grid), e.validation_tasks, e.test_tasks)
            for e in chosen),
        "suite",
        quiet,
    )  # fmt: skip
    report: dict[str, Any] = {
        "learned_optimizer": {"name": name, "checkpoint": str(source), "spec": record["optimizer"]},
        "baselines": list(baselines),
        "grid": grid,
        "scale": scale,
        "device": device,
        "entries": {},
    }
    for entry, family in zip(chosen, families, strict=True):
        if not quiet:
            bar.write(f"{entry.name}: {entry.task}, T = {entry.steps}")
        report["entries"][entry.name] = run_entry(
            learned, entry, family, baselines=baselines, grid=grid, device=device,
            progress=None if quiet else bar.write, bar=bar, name=name,
        )  # fmt: skip
        write_json(out / "results.json", report)
    bar.close()
    plot_suite(report["entries"], out / "suite.png")
    lines = [
        f"# Held-out suite: {source}",
        "",
        f"Each entry: {', '.join(baselines)} with learning rates tuned on its validation tasks "
        f"(log grid of {len(grid)} from {grid[0]:.3g} to {grid[-1]:.3g}), then every optimizer "
        'from a fresh state on the same test tasks. "/ Adam": mean final loss over tuned '
        "Adam's; \"steps to Adam's final\": the first step where the mean loss curve reaches "
        "tuned Adam's mean final loss; seconds: that step times the optimizer's seconds per "
        "step (gradient and step) on one problem alone, the fastest of three timed rollouts "
        f"(`s / step`). Scale {scale:g}.",
        "",
        suite_table(report["entries"]),
        "",
        "![suite](suite.png)",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return report


def demo_config(epochs: int, device: str = "cpu") -> ExperimentConfig:
    """The shipped ``quadratic-lstm``'s own recipe (its record: task, architecture, meta-training
    config, i.e. configs/quadratic.toml), shortened to ``epochs`` with 4 validation tasks."""
    from l2o import pretrained

    record = pretrained.info("quadratic-lstm")
    return config_from_dict(
        {
            "task": record["trained_on"],
            "optimizer": {k: v for k, v in record["optimizer"].items() if k != "kind"},
            "meta": {
                **record["training"],
                "epochs": epochs,
                "validate_every": max(epochs // 4, 1),
                "validation_tasks": 4,
                "device": device,
            },
        }
    )


def demo(
    out: str | Path = "demo-output",
    epochs: int = 300,
    device: str = "cpu",
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Meta-train the paper's 2x20 LSTM on 10-d quadratics for ``epochs`` epochs into
    ``out``/run, then compare it with SGD, NAG, RMSprop and Adam, each with a tuned learning
    rate, into ``out``/evaluation. Returns the comparison (``lstm_over_adam``: LSTM / Adam)."""
    check_positive_int("epochs", epochs)
    check_device(device)
    config = demo_config(epochs, device)
    out = prepare_directory(out, force, "demo")
    start = time.perf_counter()
    say = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
    say(f"[1/2] meta-training the paper's 2x20 LSTM on 10-d quadratics for {epochs} epochs")
    train(config, out / "run", quiet=quiet)
    say("[2/2] comparing with SGD, NAG, RMSprop and Adam, each with a tuned learning rate")
    result = evaluate_checkpoint(
        out / "run", out / "evaluation", steps=100, test_tasks=4, validation_tasks=2,
        device=device, quiet=True,
    )  # fmt: skip
    result["demo_seconds"] = time.perf_counter() - start
    return result
