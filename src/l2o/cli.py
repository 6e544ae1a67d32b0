"""The ``l2o`` command: train, evaluate, demo, pretrained.

    l2o train configs/quadratic.toml --run-dir runs/q --set meta.epochs=500
    l2o evaluate runs/q --out runs/q/evaluation
    l2o plot runs/q
    l2o demo
    l2o pretrained

Errors in the user's input print one line naming the bad value and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from l2o.devices import check_device
from l2o.errors import InvalidInput, L2OError

DEFAULT_BASELINES = ("sgd", "nag", "rmsprop", "adam")
DEFAULT_TEST_TASKS = 8
DEFAULT_VALIDATION_TASKS = 2


def cmd_train(args: argparse.Namespace) -> int:
    from l2o.config import load_config
    from l2o.runs import train

    config = load_config(args.config, [*args.set, *_data_overrides(args)])
    _prepare_data(config.task, args.download)
    if not args.quiet:
        print(
            f"meta-training on {config.task.name} for {config.meta.epochs} epochs -> {args.run_dir}"
        )
    state = train(
        config,
        args.run_dir,
        force=args.force,
        resume=args.resume,
        quiet=args.quiet,
        inputs=[args.config] if args.config else [],
    )
    checkpoints = Path(args.run_dir) / "checkpoints"
    if state.best_epoch < 0:
        print(
            f"l2o: warning: meta-training ended after {state.seconds:.1f}s but no validation "
            f"scored a finite loss, so there is no best checkpoint (lower optimizer.output_scale "
            f"or meta.meta_lr?); the latest weights are in {checkpoints / 'last'}",
            file=sys.stderr,
        )
    elif not args.quiet:
        print(
            f"done in {state.seconds:.1f}s: best validation f(theta_T) {state.best_validation:.4g} "
            f"at epoch {state.best_epoch}; checkpoint {checkpoints / 'best'}"
        )
    return 0


def _evaluate(
    optimizer_path: str,
    task_name: str | None,
    overrides: list[str],
    steps: int | None,
    test_tasks: int,
    validation_tasks: int,
    baselines: list[str],
    grid: list[float] | None,
    out: str | Path,
    device: str,
    quiet: bool,
    download: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Compare a trained optimizer with tuned baselines into the new directory ``out``; every
    input (checkpoint, task, dataset, device) is checked before ``out`` is created."""
    from l2o.checkpoint import load_checkpoint, resolve
    from l2o.evaluate import compare, format_table, write_json, write_report
    from l2o.evaluate.draw import draw_results
    from l2o.runs import prepare_directory
    from l2o.tasks import make_task_family

    check_device(device)
    source = resolve(optimizer_path)
    optimizer, record = load_checkpoint(source)
    task_cfg = _task_config(record, task_name, overrides)
    family = make_task_family(task_cfg.pop("name"), **task_cfg)
    _prepare_data(family, download)
    out = prepare_directory(out, force, "evaluation", _inputs(source, family))
    steps = steps or record.get("training", {}).get("horizon", 100)
    from l2o.evaluate.compare import count_rollouts, lr_grid
    from l2o.monitor import Progress

    grid = grid or lr_grid()
    bar = Progress(
        count_rollouts(1, len(baselines), len(grid), validation_tasks, test_tasks),
        "evaluating",
        quiet,
    )
    comparison = compare(
        {"lstm": optimizer},
        family,
        steps=steps,
        baselines=baselines,
        num_validation_tasks=validation_tasks,
        num_test_tasks=test_tasks,
        grid=grid,
        device=device,
        progress=bar.write,
        bar=bar,
    )
    bar.close()
    result = comparison.to_json()
    result["learned_optimizer"] = {"checkpoint": str(source), "spec": record["optimizer"]}
    result["lstm_over_adam"] = comparison.ratio("lstm") if "adam" in baselines else None
    write_json(out / "results.json", result)
    figures = [p.name for p in draw_results(result, out, "png")]
    write_report(result, out, figures)
    print(format_table(result))
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {', '.join(figures)}")
    return result


def _parse_grid(text: str | None) -> list[float] | None:
    from l2o.evaluate import lr_grid

    if text is None:
        return None
    try:
        low, high, per_decade = text.split(",")
        return lr_grid(float(low), float(high), int(per_decade))
    except ValueError as e:
        raise InvalidInput(
            f"Invalid --lr-grid {text!r} (expected LOW,HIGH,PER_DECADE like 1e-4,10,4): {e}"
        ) from e


def _parse_baselines(text: str) -> list[str]:
    from l2o.optimizers import BASELINES

    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in BASELINES:
            raise InvalidInput(
                f"unknown optimizer {n!r} in --baselines (valid: {', '.join(BASELINES)})"
            )
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.figure is not None:
        given = [flag for flag, value in _preset_flags(args).items() if value is not None]
        if given:
            raise InvalidInput(
                f"{given[0]} cannot be combined with --figure (the figure preset "
                f"{args.figure} sets it; edit a copy of the preset instead)"
            )
        _evaluate_figure(
            args.optimizer,
            args.figure,
            args.task,
            [*args.set, *_data_overrides(args)],
            args.out,
            args.force,
            args.device,
            args.quiet,
            download=args.download,
        )
        return 0
    test_tasks = DEFAULT_TEST_TASKS if args.test_tasks is None else args.test_tasks
    validation_tasks = (
        DEFAULT_VALIDATION_TASKS if args.validation_tasks is None else args.validation_tasks
    )
    _check_positive("--test-tasks", test_tasks)
    _check_positive("--validation-tasks", validation_tasks)
    if args.steps is not None:
        _check_positive("--steps", args.steps)
    baselines = _parse_baselines(args.baselines or ",".join(DEFAULT_BASELINES))
    grid = _parse_grid(args.lr_grid)
    _evaluate(
        args.optimizer,
        args.task,
        [*args.set, *_data_overrides(args)],
        args.steps,
        test_tasks,
        validation_tasks,
        baselines,
        grid,
        args.out,
        args.device,
        args.quiet,
        download=args.download,
        force=args.force,
    )
    return 0


def _preset_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluate flags that a figure preset sets (each setting's steps, its [evaluate])."""
    return {
        "--steps": args.steps,
        "--test-tasks": args.test_tasks,
        "--validation-tasks": args.validation_tasks,
        "--baselines": args.baselines,
        "--lr-grid": args.lr_grid,
    }


def _evaluate_figure(
    optimizer_path: str,
    preset: str,
    task_name: str | None,
    overrides: list[str],
    out_dir: str,
    force: bool,
    device: str,
    quiet: bool,
    download: bool = False,
) -> dict[str, Any]:
    """``l2o evaluate OPT --figure PRESET``: every setting of a figure preset (e.g. the paper's
    Figures 4 and 5 for MNIST, configs/mnist-fig4.toml and mnist-fig5.toml), each compared with
    tuned baselines as the preset says; one JSON, one loss plot per setting, the grid figure."""
    from l2o.checkpoint import atomic_write_text, load_checkpoint, resolve
    from l2o.evaluate import write_json
    from l2o.evaluate.draw import draw_settings
    from l2o.evaluate.figures import (
        evaluate_setting,
        figure_table,
        load_figure_preset,
        setting_family,
    )
    from l2o.runs import prepare_directory

    check_device(device)
    options, settings = load_figure_preset(preset)
    if not settings:
        raise InvalidInput(f"figure preset {preset} lists no [[setting]] and no [grid]")
    source = resolve(optimizer_path)
    optimizer, record = load_checkpoint(source)
    task_cfg = _task_config(record, task_name, overrides)
    inputs: list[Path] = [Path(preset)]
    for setting in settings:  # every setting's task is valid, its data found, before any run
        family = setting_family(task_cfg, setting, options)
        _prepare_data(family, download)
        inputs += _inputs(source, family)
    out = prepare_directory(out_dir, force, "evaluation", inputs)
    report: dict[str, Any] = {
        "figure": str(preset),
        "learned_optimizer": {"checkpoint": str(source), "spec": record["optimizer"]},
        "task": task_cfg,
        "settings": {},
    }
    for setting in settings:
        report["settings"][setting.name] = evaluate_setting(
            {"lstm": optimizer}, task_cfg, setting, options, device,
            progress=None if quiet else (lambda line: print(line, flush=True)),
        )  # fmt: skip
        write_json(out / "results.json", report)  # a long evaluation keeps what it has done
    figures = [p.name for p in draw_settings(report["settings"], out, "png")]
    table = figure_table(report["settings"])
    lines = [f"# {Path(preset).name}: {source}", "", table, ""]
    lines += [f"![{f}]({f})" for f in figures]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {len(figures)} figures")
    return report


def _task_config(record: dict[str, Any], task_name: str | None, overrides: list[str]) -> dict:
    """The task a checkpoint was trained on (or ``task_name``'s defaults), with task.* overrides."""
    from l2o.config import apply_overrides, parse_override

    for text in overrides:
        if parse_override(text)[0] != "task":
            raise InvalidInput(f"Invalid override {text!r} for evaluate (only task.* may be set)")
    # A run's checkpoint records its "task"; a pretrained optimizer the task it was "trained_on".
    task_cfg = dict(record.get("task") or record.get("trained_on") or {"name": "quadratic"})
    if task_name is not None and task_name != task_cfg.get("name"):
        task_cfg = {"name": task_name}
    return apply_overrides({"task": task_cfg}, overrides)["task"]


def demo_config(epochs: int, device: str = "cpu"):
    """The shipped ``quadratic-lstm``'s own recipe (its record: task, architecture, meta-training
    config, i.e. configs/quadratic.toml), shortened to ``epochs`` with 4 validation tasks."""
    from l2o import pretrained
    from l2o.config import config_from_dict

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


def cmd_demo(args: argparse.Namespace) -> int:
    from l2o.runs import prepare_directory, train

    _check_positive("--epochs", args.epochs)
    check_device(args.device)
    config = demo_config(args.epochs, args.device)
    out = prepare_directory(args.out, args.force, "demo")
    start = time.perf_counter()
    print(f"[1/2] meta-training the paper's 2x20 LSTM on 10-d quadratics for {args.epochs} epochs")
    train(config, out / "run", quiet=args.quiet)
    print("[2/2] comparing with SGD, NAG, RMSprop and Adam, each with a tuned learning rate")
    result = _evaluate(
        str(out / "run"),
        None,
        [],
        100,
        4,
        2,
        ["sgd", "nag", "rmsprop", "adam"],
        None,
        out / "evaluation",
        args.device,
        True,
    )
    ratio = result["lstm_over_adam"]
    print(
        f"LSTM / tuned Adam final loss: {ratio:.3f}  (demo took {time.perf_counter() - start:.0f}s)"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from l2o.evaluate.draw import draw

    for path in draw(args.path, args.out, args.format):
        print(f"wrote {path}")
    return 0


def cmd_pretrained(args: argparse.Namespace) -> int:
    from l2o import pretrained

    shipped = pretrained.list()
    if not shipped:
        print(
            "no pretrained optimizers are shipped with this installation; "
            "use a checkpoint path or a run directory instead"
        )
    width = max((len(name) for name in shipped), default=0) + 2
    for name, description in shipped.items():
        print(f"{name:<{width}}{description}")
    if shipped:
        print("\nuse one: l2o.load(NAME), or l2o.optim.LearnedOptimizer(model.parameters(), NAME)")
    return 0


def _inputs(checkpoint: Path, family: Any) -> list[Path]:
    """The files a command reads, which ``--force`` must never delete."""
    data_dir = getattr(family, "data_dir", "")
    return [checkpoint, *([Path(data_dir)] if data_dir else [])]


def _data_overrides(args: argparse.Namespace) -> list[str]:
    """--data-dir DIR as the override task.data_dir="DIR" (for tasks that read a dataset)."""
    if args.data_dir is None:
        return []
    return [f"task.data_dir={json.dumps(str(args.data_dir))}"]


def _prepare_data(family: Any, download: bool) -> None:
    """Fail early, before any directory is written, when a task's dataset is not found; with
    --download, fetch it first (torchvision, network)."""
    locate = getattr(family, "locate_data", None)
    if locate is not None:
        locate(download=download)
    elif download:
        raise InvalidInput(f"--download: task {family.name!r} reads no dataset")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="directory of the dataset's files, for tasks that read one (sets task.data_dir; "
        "default: $L2O_DATA, ~/.cache/l2o/data, /usr/share/datasets)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download the dataset if it is not found (needs torchvision and a network)",
    )


def _check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise InvalidInput(f"Invalid {flag}: {value} (must be >= 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2o", description="Learned optimizers in PyTorch.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of any error (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train a learned optimizer")
    p.add_argument("config", nargs="?", help="TOML config (default: all defaults)")
    p.add_argument("--run-dir", required=True, help="directory for checkpoints and metrics")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. meta.epochs=100 (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    _add_data_options(p)
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="compare a learned optimizer with tuned baselines")
    p.add_argument("optimizer", help="checkpoint, run directory or pretrained name")
    p.add_argument("--task", help="task family (default: the one it was trained on)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="task.KEY=VALUE",
        help="override a task option, e.g. task.num_problems=125 (repeatable)",
    )
    p.add_argument(
        "--figure",
        metavar="PRESET",
        help="a figure preset (configs/mnist-fig4.toml, mnist-fig5.toml, conv-fig6.toml): "
        "evaluate each of its settings as it says and draw the figure",
    )
    p.add_argument("--steps", type=int, help="steps per run (default: the training horizon)")
    p.add_argument(
        "--test-tasks", type=int, help=f"held-out test tasks (default {DEFAULT_TEST_TASKS})"
    )
    p.add_argument(
        "--validation-tasks",
        type=int,
        help=f"validation tasks for tuning learning rates (default {DEFAULT_VALIDATION_TASKS})",
    )
    p.add_argument(
        "--baselines",
        help=f"comma-separated baselines (default: {','.join(DEFAULT_BASELINES)})",
    )
    p.add_argument("--lr-grid", help="LOW,HIGH,PER_DECADE of the log grid (default 1e-4,10,4)")
    _add_data_options(p)
    p.add_argument("--out", default="evaluation", help="output directory (default: evaluation)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="quick end-to-end: meta-train on quadratics and compare")
    p.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plot", help="draw the figures of a run directory or results file")
    p.add_argument("path", help="run directory, or results.json written by l2o evaluate")
    p.add_argument("--out", help="output directory (default: RUN_DIR/figures or beside the JSON)")
    p.add_argument("--format", default="png", help="png (default) or svg")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("pretrained", help="list the shipped pretrained optimizers")
    p.set_defaults(func=cmd_pretrained)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; problems with the user's input or files (``L2OError``, and ``OSError``
    such as a full disk) print one line and exit 2; anything else is a bug in l2o: one line
    saying so and exit 1 (with ``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (L2OError, OSError) as e:
        if args.debug:
            raise
        print(f"l2o: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "l2o: interrupted; every file written so far is complete "
            "(continue a meta-training run with --resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            f"l2o: internal error: {type(e).__name__}: {_one_line(e)} (a bug in l2o: rerun with "
            f"--debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
