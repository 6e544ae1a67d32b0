"""The ``l2o`` command: train, evaluate, suite, demo, pretrained, art.

    l2o train configs/quadratic.toml --run-dir runs/q --set meta.epochs=500
    l2o evaluate runs/q --out runs/q/evaluation
    l2o suite runs/q --out runs/q/suite
    l2o plot runs/q
    l2o demo
    l2o pretrained
    l2o art --content photo.jpg --style painting.png --optimizer adam --out out.png

The command parses and dispatches; what each one runs is a library function (l2o.runs.train,
l2o.pipelines.evaluate_checkpoint / evaluate_figure / suite / demo). Errors in the user's input
print one line naming the bad value and exit with status 2.

``l2o train`` and ``l2o evaluate`` also run under torchrun (``l2o.distributed``,
docs/distributed.md): ``torchrun --nproc_per_node=2 -m l2o train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from l2o import distributed
from l2o.errors import InvalidInput, L2OError
from l2o.pipelines import DEFAULT_BASELINES

# The commands that run under torchrun, shared among its processes.
DISTRIBUTED_COMMANDS = ("train", "evaluate")

DEFAULT_TEST_TASKS = 8
DEFAULT_VALIDATION_TASKS = 2


def cmd_train(args: argparse.Namespace) -> int:
    from l2o.config import load_config
    from l2o.pipelines import prepare_data
    from l2o.runs import train

    world = distributed.World.current()

    def load() -> Any:
        config = load_config(args.config, [*args.set, *_data_overrides(args)])
        prepare_data(config.task, args.download)
        return config

    config = world.agree(load)
    quiet = args.quiet or not world.is_main
    state = train(
        config,
        args.run_dir,
        force=args.force,
        resume=args.resume,
        quiet=quiet,
        inputs=[args.config] if args.config else [],
        restarted=distributed.restart_count() > 0,
        world=world,
    )
    if not world.is_main:
        return 0
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
    from l2o.evaluate import format_table
    from l2o.evaluate.figures import figure_table
    from l2o.pipelines import evaluate_checkpoint, evaluate_figure

    common = dict(
        task=args.task,
        overrides=[*args.set, *_data_overrides(args)],
        device=args.device,
        force=args.force,
        download=args.download,
        quiet=args.quiet,
    )
    world = distributed.World.current()
    if args.figure is not None:
        if world.distributed:
            raise InvalidInput(
                "l2o evaluate --figure runs in one process: run it without torchrun (l2o "
                "evaluate without --figure is shared among torchrun's processes)"
            )
        given = [flag for flag, value in _preset_flags(args).items() if value is not None]
        if given:
            raise InvalidInput(
                f"{given[0]} cannot be combined with --figure (the figure preset "
                f"{args.figure} sets it; edit a copy of the preset instead)"
            )
        report = evaluate_figure(args.optimizer, args.figure, args.out, **common)
        print(figure_table(report["settings"]))
        print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}")
        return 0
    for flag, value in [("--test-tasks", args.test_tasks), ("--validation-tasks",
                        args.validation_tasks), ("--steps", args.steps)]:  # fmt: skip
        if value is not None and value < 1:
            raise InvalidInput(f"Invalid {flag}: {value} (must be >= 1)")
    result = evaluate_checkpoint(
        args.optimizer,
        args.out,
        steps=args.steps,
        test_tasks=DEFAULT_TEST_TASKS if args.test_tasks is None else args.test_tasks,
        validation_tasks=(
            DEFAULT_VALIDATION_TASKS if args.validation_tasks is None else args.validation_tasks
        ),
        baselines=_parse_baselines(args.baselines or ",".join(DEFAULT_BASELINES)),
        grid=_parse_grid(args.lr_grid),
        world=world,
        **common,
    )
    if not world.is_main:
        return 0
    out = Path(args.out)
    print(format_table(result))
    print(f"wrote {out / 'results.json'}, {out / 'report.md'}, loss.png and final_loss.png")
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


QUICK_SCALE = 0.01
QUICK_GRID = "1e-4,10,1"


def cmd_suite(args: argparse.Namespace) -> int:
    from l2o.evaluate.suite import SUITE, select, suite_table
    from l2o.pipelines import suite

    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    chosen = select(only)
    if args.list:
        for e in chosen:
            print(f"{e.name:<30}{e.task:<10}T={e.steps:<7}{e.test_tasks} test / "
                  f"{e.validation_tasks} validation tasks  {e.note}")  # fmt: skip
        return 0
    if args.optimizer is None:
        raise InvalidInput("l2o suite needs an OPTIMIZER (a pretrained name, checkpoint or run)")
    if args.quick and args.scale is not None:
        raise InvalidInput("--quick is --scale 0.01: give one of them")
    scale = QUICK_SCALE if args.quick else 1.0 if args.scale is None else args.scale
    grid = args.lr_grid or (QUICK_GRID if args.quick else None)
    report = suite(
        args.optimizer,
        args.out,
        entries=SUITE,
        only=only,
        scale=scale,
        baselines=_parse_baselines(args.baselines) if args.baselines else ("adam", "nag"),
        grid=_parse_grid(grid),
        data_dir=args.data_dir,
        device=args.device,
        force=args.force,
        download=args.download,
        quiet=args.quiet,
    )
    out = Path(args.out)
    print(suite_table(report["entries"]))
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / 'suite.png'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from l2o.pipelines import demo

    if args.epochs < 1:
        raise InvalidInput(f"Invalid --epochs: {args.epochs} (must be >= 1)")
    result = demo(args.out, args.epochs, args.device, force=args.force, quiet=args.quiet)
    print(
        f"LSTM / tuned Adam final loss: {result['lstm_over_adam']:.3f}  "
        f"(demo took {result['demo_seconds']:.0f}s)"
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


def cmd_art(args: argparse.Namespace) -> int:
    from l2o.art import save_image, stylise
    from l2o.config import apply_overrides, parse_override
    from l2o.data.pictures import check_suffix, image_path
    from l2o.errors import RunDirectoryExists

    out = Path(args.out)
    check_suffix(out.suffix)  # every input is checked before the optimization runs
    for text in args.set:
        if parse_override(text)[0] != "task":
            raise InvalidInput(f"Invalid override {text!r} for art (only task.* may be set)")
    options = apply_overrides({}, args.set).get("task", {})
    if args.network is not None:
        options["network"] = args.network
    if args.weights is not None:
        options["weights"] = args.weights
        options.setdefault("network", "vgg19")
    if args.init is not None:
        options["init"] = args.init
    for given in (args.content, args.style):
        if out.resolve() == image_path(given).resolve():
            raise RunDirectoryExists(f"refusing to write {out}: it is an input ({given})")
    if out.exists() and not args.force:
        raise RunDirectoryExists(f"{out} exists; use --force to overwrite it")
    if out.exists() and not out.is_file():
        raise RunDirectoryExists(f"{out} exists and is not a file")
    result = stylise(
        args.content, args.style, args.optimizer, args.steps, lr=args.lr,
        size=_parse_size(args.size), seed=args.seed, device=args.device, **options,
    )  # fmt: skip
    save_image(out, result.image)
    if not args.quiet:
        t = result.terms
        print(
            f"{result.optimizer}, {args.steps} steps in {result.seconds:.1f}s: f {float(result.losses[0]):.4g} "
            f"-> {float(result.losses[-1]):.4g} (content {t['content']:.3g}, style {t['style']:.3g}, "
            f"tv {t['tv']:.3g}); network: {result.network}"
        )
        height, width = result.image.shape[1:]
        print(f"wrote {out} ({height} x {width} pixels)")
    return 0


def _parse_size(text: str | None) -> int | tuple[int, int] | None:
    """--size N (the longer side) or HxW."""
    if text is None:
        return None
    try:
        if "x" in text:
            height, width = text.split("x")
            return int(height), int(width)
        return int(text)
    except ValueError as e:
        raise InvalidInput(
            f"Invalid --size {text!r} (a side like 128, or HEIGHTxWIDTH like 64x96)"
        ) from e


def _data_overrides(args: argparse.Namespace) -> list[str]:
    """--data-dir DIR as the override task.data_dir="DIR" (for tasks that read a dataset)."""
    if args.data_dir is None:
        return []
    return [f"task.data_dir={json.dumps(str(args.data_dir))}"]


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

    p = sub.add_parser(
        "suite", help="the held-out suite: a learned optimizer against tuned Adam and NAG"
    )
    p.add_argument("optimizer", nargs="?", help="checkpoint, run directory or pretrained name")
    p.add_argument("--only", metavar="NAME,...", help="run only these entries (see --list)")
    p.add_argument("--list", action="store_true", help="list the suite's entries and exit")
    p.add_argument(
        "--scale",
        type=float,
        help="multiply every horizon (and, below 1, the numbers of tasks) by this (default 1)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: --scale {QUICK_SCALE} and --lr-grid {QUICK_GRID}",
    )
    p.add_argument(
        "--baselines", help="comma-separated baselines, adam among them (default adam,nag)"
    )
    p.add_argument("--lr-grid", help="LOW,HIGH,PER_DECADE of the log grid (default 1e-4,10,4)")
    p.add_argument(
        "--data-dir",
        help="directory of the image tasks' datasets (default: $L2O_DATA, ~/.cache/l2o/data, "
        "/usr/share/datasets)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download a dataset that is not found (needs torchvision and a network)",
    )
    p.add_argument("--out", default="suite", help="output directory (default: suite)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_suite)

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

    p = sub.add_parser("art", help="stylise a picture with any optimizer (neural art, §3.4)")
    p.add_argument("--content", required=True, help="the photograph (PNG/JPEG, or a sample name)")
    p.add_argument(
        "--style", default="skimage/ihc", help="the style picture (PNG/JPEG, or a sample name)"
    )
    p.add_argument(
        "--optimizer",
        default="adam",
        help="a hand-designed optimizer (sgd, nag, rmsprop, adam, lbfgs) or a learned one "
        "(pretrained name, checkpoint or run directory); default adam",
    )
    p.add_argument("--lr", type=float, help="learning rate of a hand-designed optimizer")
    p.add_argument("--steps", type=int, default=128, help="optimizer steps (default 128)")
    p.add_argument(
        "--size",
        help="N: the longer side N pixels, aspect kept; HxW: exactly (default: the photo's "
        "own size, at most 256 on the longer side)",
    )
    p.add_argument(
        "--network", choices=["random", "vgg19"], help="feature network (default random)"
    )
    p.add_argument("--weights", help="VGG-19 weights file (.pth state dict or .safetensors)")
    p.add_argument("--init", choices=["noise", "content"], help="theta_0 (default noise)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="task.KEY=VALUE",
        help="any other art task option, e.g. task.content_weight=4 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of theta_0's noise (default 0)")
    p.add_argument("--out", required=True, help="the picture to write (.png, .jpg)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_art)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    """torchrun's SIGTERM: say so on one line and stop at once, as a kill would (whatever is
    being written stays a temporary file, which ``--resume`` removes; metrics.jsonl's last
    line, if cut short, is dropped)."""
    rank, size = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "?")
    print(
        f"l2o: process {rank} of {size} stopped by torchrun (SIGTERM: another process of the "
        f"job stopped, or the job was stopped); the files written so far are complete "
        f"(continue with --resume; torchrun --max-restarts does it by itself)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(143)


def _leaving(world: distributed.World) -> None:
    """This process is about to say why it stops: a SIGTERM from torchrun now (the others stop
    too) only ends it, without a second line."""
    if world.distributed:
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(143))


def _join_job(args: argparse.Namespace) -> distributed.World:
    """Under torchrun: refuse the commands that run in one process; join the job's process
    group for the others, and turn torchrun's SIGTERM into one line."""
    if not distributed.under_torchrun():
        return distributed.World()
    if args.command not in DISTRIBUTED_COMMANDS:
        message = (
            f"l2o {args.command} runs in one process: run it without torchrun (under torchrun: "
            f"{' and '.join('l2o ' + c for c in DISTRIBUTED_COMMANDS)})"
        )
        raise distributed.SharedError(message, show=os.environ.get("RANK", "0") == "0")
    signal.signal(signal.SIGTERM, _terminate)
    return distributed.init_from_environment()


def main(argv: list[str] | None = None) -> int:
    """Run the command; problems with the user's input or files (``L2OError``, and ``OSError``
    such as a full disk) print one line and exit 2; anything else is a bug in l2o: one line
    saying so and exit 1 (with ``--debug``: the traceback).

    Under torchrun every process runs the command (``l2o.distributed``); an error that every
    process meets alike is printed once, by rank 0, others by the process that met them,
    named ("process 1 of 2: ...")."""
    args = build_parser().parse_args(argv)
    world = distributed.World()
    where = ""
    done = False
    try:
        world = _join_job(args)
        where = f"{world.describe()}: " if world.distributed else ""
        status = args.func(args)
        done = True
        return status
    except distributed.SharedError as e:
        _leaving(world)
        if args.debug:
            raise
        if e.show:
            print(f"l2o: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (L2OError, OSError) as e:
        _leaving(world)
        if args.debug:
            raise
        message = _one_line(e)
        if isinstance(e, distributed.ProcessLost):
            where = ""  # it names the process itself
        print(f"l2o: error: {where}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _leaving(world)
        print(
            f"l2o: {where}interrupted; every file written so far is complete "
            "(continue a meta-training run with --resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        _leaving(world)
        if args.debug:
            raise
        print(
            f"l2o: internal error: {where}{type(e).__name__}: {_one_line(e)} (a bug in l2o: "
            f"rerun with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        if world.distributed and done:  # after a failure the group may not come apart
            distributed.finish()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
