"""Benchmark: the paper's neural art experiment (section 3.4, Figures 7-8) with the art family.

The LSTM meta-trained by configs/art.toml (``--lstm``: a run directory, a checkpoint or a
pretrained name) against SGD, NAG, RMSprop and Adam on held-out content (the test photographs;
other crops than the validation runs that tune the baselines), in every setting of
configs/art-fig7.toml: the training size and style (64x64), 128x128, and a style never seen.
Each baseline's learning rate is tuned per setting on validation runs
(``l2o.evaluate.compare.tune_learning_rate``) over a log grid centred on its ``l2o.art.DEFAULT_LR``
(``--lr-span`` decades either side, widened while the best is at an edge); every optimizer then
runs from a fresh state on the same test images (``run_on_tasks``, the rollouts of
``l2o evaluate``).

Is the problem easy for tuned baselines? With ``--floor-steps N`` each tuned baseline also runs N
steps on the same test images; f* of an image is the lowest loss any run reached on it, and the
report gives, besides f(theta_128) and its ratio to tuned Adam's, the excess over that floor
f(theta_128) - f* and its ratio to Adam's excess.

Writes, in benchmarks/art/results/ (--out), with NAME = --name (``art``; ``art-baselines``
without --lstm):

    NAME.json                   every number: per-image final losses, curves, tuned lrs, floors
    NAME.md                     tables with 95% intervals (bootstrap over images), machine
    NAME-<setting>.png          loss vs step, log scale (Figure 7)
    NAME-floor-<setting>.png    the baselines' excess over f* vs step (with --floor-steps)
    NAME-images-<setting>.png   content, style, LSTM and Adam at a few steps (Figure 8)

Reproduce, from the repository root (1 torch thread; the other core was busy):

    # the tuned baselines and their floor, no LSTM needed
    python -m benchmarks.art.run --floor-steps 1000 --floor-settings 64x64,new-style
    # the LSTM against them, on the same test images (their tuned runs are re-used; with
    # --floor-steps, floor runs at their tuned rates where the file has none)
    python -m benchmarks.art.run --lstm benchmarks/art/results/run \\
        --baselines-from benchmarks/art/results/art-baselines.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ROOT, machine, ratio_precision, results_dir, write_result
from l2o.art import DEFAULT_LR, resolve_optimizer
from l2o.checkpoint import load_checkpoint, resolve
from l2o.config import apply_overrides, load_config_dict
from l2o.data import DatasetError
from l2o.errors import CheckpointError, InvalidInput
from l2o.evaluate import plot_loss_curves, rollout
from l2o.evaluate.compare import OptimizerResult, run_on_tasks, tune_learning_rate
from l2o.evaluate.figures import EvaluationOptions, Setting, load_figure_preset, setting_family
from l2o.evaluate.report import save_figure
from l2o.meta.seeds import task_seed
from l2o.optimizers import make_baseline

TARGET = 0.8  # LSTM / tuned Adam, mean f(theta_128) on held-out content, 64x64, training style
DRAWS = 10000  # bootstrap resamples of the test images
EARLY = 32  # the table also compares mean f(theta_32) (one truncation) with tuned Adam's
T0 = time.perf_counter()


def say(line: str) -> None:
    print(f"[{(time.perf_counter() - T0) / 60:5.1f} min] {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lstm", default="", help="run dir, checkpoint or pretrained name")
    parser.add_argument("--config", default=str(ROOT / "configs" / "art.toml"), help="the task")
    parser.add_argument("--figure", default=str(ROOT / "configs" / "art-fig7.toml"))
    parser.add_argument("--settings", default="", help="comma-separated (default: all)")
    parser.add_argument("--set", action="append", default=[], help="task.KEY=VALUE (all settings)")
    parser.add_argument("--test-runs", type=int, help="held-out images (default: the preset's)")
    parser.add_argument("--validation-runs", type=int, help="images tuning each baseline")
    parser.add_argument("--problems-per-task", type=int, help="images stylised at once")
    parser.add_argument("--steps", type=int, help="steps per run (default: each setting's)")
    parser.add_argument("--baselines", default="sgd,nag,rmsprop,adam")
    parser.add_argument("--lr-span", type=float, default=1.0, help="decades either side")
    parser.add_argument("--per-decade", type=int, default=4, help="grid points per decade")
    parser.add_argument("--floor-steps", type=int, default=0, help="0: no floor runs")
    parser.add_argument("--floor-settings", default="", help="comma-separated (default: all)")
    parser.add_argument("--baselines-from", default="", help="a result JSON to take them from")
    parser.add_argument("--image-steps", default="8,32,128", help="Figure 8's columns")
    parser.add_argument("--images", type=int, default=2, help="Figure 8's rows (0: none)")
    parser.add_argument("--name", default="", help="result files' name (art / art-baselines)")
    parser.add_argument("--out", default=str(results_dir("art")))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--note", default="", help="how the machine was loaded, etc.")
    parser.add_argument(
        "--ship", action="store_true",
        help="save --lstm into l2o/pretrained as art-lstm if it beats tuned Adam at 64x64 (the "
        "ratio's whole 95%% interval below 1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (InvalidInput, CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    name = args.name or ("art" if args.lstm else "art-baselines")
    out = Path(args.out)
    base = apply_overrides(load_config_dict(args.config), args.set).get("task", {})
    if base.get("name") != "art":
        raise InvalidInput(f"{args.config}: not an art task (task.name = {base.get('name')!r})")
    options, settings = load_figure_preset(args.figure)
    options = EvaluationOptions(
        test_runs=args.test_runs or options.test_runs,
        validation_runs=args.validation_runs or options.validation_runs,
        problems_per_task=args.problems_per_task or options.problems_per_task,
        baselines=tuple(b for b in args.baselines.split(",") if b),
        lr_grid=options.lr_grid,
    )
    settings = pick(settings, args.settings, "--settings")
    if args.steps:
        settings = [replace(s, steps=args.steps) for s in settings]
    floor_names = {s.name for s in pick(settings, args.floor_settings, "--floor-settings")}
    image_steps = [int(s) for s in args.image_steps.split(",") if s]
    previous = None
    if args.baselines_from:
        path = Path(args.baselines_from)
        if not path.is_file():
            raise InvalidInput(f"--baselines-from: no such file {path}")
        previous = json.loads(path.read_text())
    learned, lstm_info = {}, None
    if args.lstm:
        optimizer, label = resolve_optimizer(args.lstm, None)
        learned["lstm"] = optimizer.eval()
        _, record = load_checkpoint(resolve(args.lstm))
        lstm_info = {
            "path": label,
            "trained_on": record.get("task") or record.get("trained_on"),
            "metrics": record.get("metrics"),
            "optimizer": record.get("optimizer"),
        }
    report: dict[str, Any] = {
        "name": name,
        "target": TARGET,
        "config": str(args.config),
        "figure": str(args.figure),
        "overrides": args.set,
        "evaluation": {
            "test_runs": options.test_runs,
            "validation_runs": options.validation_runs,
            "problems_per_task": options.problems_per_task,
            "baselines": list(options.baselines),
            "lr_grid": "DEFAULT_LR x 10^(i / per_decade), |i| <= span x per_decade, widened "
            "while the best is at an edge",
            "lr_span_decades": args.lr_span,
            "per_decade": args.per_decade,
            "floor_steps": args.floor_steps,
        },
        "lstm": lstm_info,
        "baselines_from": args.baselines_from or None,
        "load_average_before": os.getloadavg(),
        "settings": {},
        "note": args.note,
    }
    for setting in settings:
        say(f"[{setting.name}] {setting.title}")
        old = None
        if previous is not None:
            old = previous.get("settings", {}).get(setting.name)
            if old is None:
                raise InvalidInput(f"--baselines-from: no setting {setting.name!r} in it")
        result = run_setting(setting, options, base, learned, args, old,
                             setting.name in floor_names)  # fmt: skip
        report["settings"][setting.name] = result
        figures = result["figures"] = [f"{name}-{setting.name}.png"]
        plot_loss_curves(
            result, out / figures[0],
            f"{setting.title}\nmean over {result['runs']} held-out images (shaded: 25-75%)",
        )  # fmt: skip
        if result.get("floor"):
            figures.append(f"{name}-floor-{setting.name}.png")
            plot_floor(result, out / figures[-1], setting)
        if args.images and image_steps and "adam" in result["optimizers"]:
            figures.append(f"{name}-images-{setting.name}.png")
            family = setting_family(base, setting, options)
            lrs = {"adam": result["optimizers"]["adam"]["lr"]}
            plot_images(family, learned, lrs, image_steps, args.images, out / figures[-1], setting)
        report["load_average_after"] = os.getloadavg()
        report["machine"] = machine()
        write_result(out, name, report, markdown(report))  # after every setting: partial results
    if args.ship:
        return ship(args.lstm, report, out / f"{name}.json")
    return 0


def ship(lstm: str, report: dict[str, Any], results: Path) -> int:
    """Save the LSTM as the pretrained ``art-lstm`` if it beats tuned Adam at 64x64."""
    from l2o.checkpoint import save_checkpoint

    setting = report["settings"].get("64x64")
    if not lstm or setting is None or "adam" not in setting["optimizers"]:
        raise InvalidInput("--ship needs --lstm and the 64x64 setting with Adam")
    ratio = setting["optimizers"]["lstm"]["over_adam"]
    if ratio["ratio_95_interval"][1] >= 1:
        print(f"not shipped: LSTM / tuned Adam {ratio['ratio']:.3f} at 64x64")
        return 0
    optimizer, record = load_checkpoint(resolve(lstm))
    try:
        where = str(results.resolve().relative_to(ROOT))
    except ValueError:
        where = str(results)
    shipped = {
        "description": "the paper's 2x20 LSTM meta-trained to stylise 64x64 images "
        "(configs/art.toml: one style, the random multi-scale feature net)",
        "trained_on": record["task"],
        "training": record["training"],
        "metrics": record["metrics"],
        "benchmark": {
            "steps": setting["steps"],
            "test_runs": setting["runs"],
            "over_tuned_adam": {
                k: {"ratio": r["optimizers"]["lstm"]["over_adam"]["ratio"],
                    "ratio_95_interval": r["optimizers"]["lstm"]["over_adam"]["ratio_95_interval"]}
                for k, r in report["settings"].items() if "adam" in r["optimizers"]
            },
            "excess_over_tuned_adam": {
                k: r["optimizers"]["lstm"]["excess_over_adam"]["ratio"]
                for k, r in report["settings"].items()
                if "excess_over_adam" in r["optimizers"]["lstm"]
            },
            "final_loss": {k: v["final_loss_mean"] for k, v in setting["optimizers"].items()},
            "tuned_lr": {k: v["lr"] for k, v in setting["optimizers"].items() if v["lr"]},
            "machine": report["machine"]["cpu"],
            "results": where,
        },
        "command": "l2o train configs/art.toml --run-dir benchmarks/art/results/run; "
        "python -m benchmarks.art.run --lstm benchmarks/art/results/run --ship",
    }  # fmt: skip
    dest = ROOT / "src" / "l2o" / "pretrained" / "art-lstm"
    save_checkpoint(dest, optimizer, shipped)
    print(f"shipped {dest}.safetensors")
    return 0


def pick(settings: list[Setting], names: str, flag: str) -> list[Setting]:
    if not names:
        return settings
    known = {s.name: s for s in settings}
    wanted = [n for n in names.split(",") if n]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidInput(
            f"{flag}: unknown setting(s) {', '.join(unknown)} (valid: {', '.join(known)})"
        )
    return [known[n] for n in wanted]


# -- one setting ------------------------------------------------------------------------------------
def run_setting(
    setting: Setting,
    options: EvaluationOptions,
    base: dict[str, Any],
    learned: dict[str, Any],
    args: argparse.Namespace,
    old: dict[str, Any] | None,
    with_floor: bool,
) -> dict[str, Any]:
    family = setting_family(base, setting, options)
    family.locate_data()  # every picture read before any work: a bad file is one line
    n_val = options.validation_runs // options.problems_per_task
    n_test = options.test_runs // options.problems_per_task
    result: dict[str, Any] = {
        "setting": {"name": setting.name, "title": setting.title, "task": dict(setting.task)},
        "task": json.loads(json.dumps(family.to_config())),
        "steps": setting.steps,
        "runs": options.test_runs,
        "num_test_tasks": n_test,
        "num_validation_tasks": n_val,
        "optimizers": {},
        "floor": None,
    }
    for name, optimizer in learned.items():
        say(f"[{setting.name}] {name} on {options.test_runs} test images")
        result["optimizers"][name] = entry(
            run_on_tasks(name, optimizer, family, setting.steps, "test", n_test)
        )
    if old is not None:  # the baselines' tuned runs of an earlier result, on the same images
        for key in ("task", "steps", "runs"):
            if old[key] != result[key]:
                raise InvalidInput(
                    f"--baselines-from: setting {setting.name} has {key} {old[key]!r}, here "
                    f"{result[key]!r}"
                )
        for name in options.baselines:
            if name not in old["optimizers"]:
                raise InvalidInput(f"--baselines-from: setting {setting.name} has no {name}")
            result["optimizers"][name] = old["optimizers"][name]
        result["floor"] = old.get("floor")
        result["baselines_seconds"] = old.get("baselines_seconds")
        if result["floor"] is None and with_floor and args.floor_steps:  # at their tuned lrs
            result["floor"] = floor(family, result, options, n_test, args.floor_steps, setting.name)
    else:
        start = time.perf_counter()
        for name in options.baselines:
            lr, scores, edge = tune(name, family, setting.steps, n_val, args, setting.name)
            test = run_on_tasks(
                name, make_baseline(name, lr), family, setting.steps, "test", n_test
            )
            result["optimizers"][name] = entry(replace(test, lr=lr, tuning=scores))
            result["optimizers"][name]["lr_at_grid_edge"] = edge
        if with_floor and args.floor_steps:
            result["floor"] = floor(family, result, options, n_test, args.floor_steps, setting.name)
        result["baselines_seconds"] = time.perf_counter() - start
    analyse(result)
    return result


def entry(r: OptimizerResult) -> dict[str, Any]:
    """``OptimizerResult.summary()`` plus each image's f(theta_T) and lowest f(theta_t)."""
    s = r.summary()
    losses = r.losses.double()
    s["final_losses"] = [float(v) for v in losses[-1]]
    s["curve_min"] = [float(v) for v in losses.nan_to_num(math.inf).min(0).values]
    return s


def tune(name: str, family, steps: int, n_val: int, args, setting: str):
    """The learning rate of baseline ``name`` with the lowest mean final loss on validation
    images, over DEFAULT_LR x 10^(i / per_decade), |i| <= span x per_decade, extended by as
    much again (at most 3 times) while the best is at an edge. Returns (lr, scores, edge)."""
    per = args.per_decade
    k = max(1, round(args.lr_span * per))
    centre = math.log10(DEFAULT_LR[name])
    scores: dict[float, float] = {}
    low, high, todo = -k, k, list(range(-k, k + 1))
    for _ in range(4):
        grid = [10 ** (centre + i / per) for i in todo]
        try:
            scores.update(tune_learning_rate(name, family, steps, n_val, grid)[1])
        except InvalidInput:  # every new one diverged: the best stays where it was
            scores.update({lr: math.inf for lr in grid})
        best = min(scores, key=lambda lr: scores[lr])
        if best == min(scores) or not math.isfinite(scores[best]):  # all diverged: lower
            todo, low = list(range(low - k, low)), low - k
        elif best == max(scores):
            todo, high = list(range(high + 1, high + k + 1)), high + k
        else:
            say(f"[{setting}] {name}: tuned lr {best:.4g} ({len(scores)} tried)")
            return best, scores, False
    if not math.isfinite(scores[best]):
        raise InvalidInput(f"every learning rate of {name} diverged on {setting}")
    say(f"[{setting}] {name}: tuned lr {best:.4g} at the edge of {len(scores)} tried")
    return best, scores, True


def floor(family, result, options, n_test: int, steps: int, setting: str) -> dict[str, Any]:
    """Each tuned baseline run ``steps`` steps on the test images (at its tuned lr)."""
    out: dict[str, Any] = {"steps": steps, "optimizers": {}}
    for name in options.baselines:
        lr = result["optimizers"][name]["lr"]
        say(f"[{setting}] floor: {name} (lr {lr:.4g}) for {steps} steps")
        r = run_on_tasks(name, make_baseline(name, lr), family, steps, "test", n_test)
        losses = r.losses.double()
        out["optimizers"][name] = {
            "lr": lr,
            "final_losses": [float(v) for v in losses[-1]],
            "curve_min": [float(v) for v in losses.nan_to_num(math.inf).min(0).values],
            "curve_mean": [float(v) for v in losses.mean(1)],
            "seconds": r.seconds,
        }
    return out


def mean_interval(x: torch.Tensor, seed: int = 0) -> list[float]:
    """A bootstrap 95% interval of the mean of ``x`` (images resampled)."""
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(0, len(x), (DRAWS, len(x)), generator=g)].mean(1)
    return [float(means.quantile(0.025)), float(means.quantile(0.975))]


def _over(a: float | None, b: float | None) -> float | None:
    """a / b; None where either is missing or not finite (a run that diverged)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _losses(values: list[float | None], diverged: float = math.nan) -> torch.Tensor:
    """Per-image losses as float64; None (a diverged run, as a result file read back with
    --baselines-from holds it: JSON has no NaN) becomes ``diverged``."""
    return torch.tensor([diverged if x is None else x for x in values], dtype=torch.float64)


def analyse(result: dict[str, Any]) -> None:
    """Intervals, ratios to tuned Adam and, with floor runs, the excess over f* per image."""
    opts = result["optimizers"]
    final = {k: _losses(v["final_losses"]) for k, v in opts.items()}
    block = result["runs"] // max(result["num_test_tasks"], 1)
    floor_runs = (result.get("floor") or {}).get("optimizers", {})
    fstar = None
    if floor_runs:
        every = [_losses(v["curve_min"], math.inf) for v in [*opts.values(), *floor_runs.values()]]
        fstar = torch.stack(every).min(0).values
        result["fstar"] = [float(v) for v in fstar]
        result["fstar_mean"] = float(fstar.mean())
        for v in floor_runs.values():
            long = _losses(v["final_losses"])
            v["final_loss_mean"] = float(long.mean())
            v["excess_mean"] = float((long - fstar).mean())
    early = min(EARLY, result["steps"])
    result["early_step"] = early
    for k, v in opts.items():
        v["final_loss_mean"] = float(final[k].mean())  # NaN where a run diverged (None if read)
        v["final_loss_interval"] = mean_interval(final[k])
        if "adam" in final:
            v["over_adam"] = ratio_precision(final[k], final["adam"], block, DRAWS)
            adam = opts["adam"]
            v["summed_over_adam"] = _over(v["summed_loss_mean"], adam["summed_loss_mean"])
            v["early_over_adam"] = _over(v["curve_mean"][early], adam["curve_mean"][early])
        if fstar is not None:
            excess = final[k] - fstar
            v["excess_mean"] = float(excess.mean())
            v["excess_interval"] = mean_interval(excess)
            v["final_over_fstar"] = float(final[k].mean() / fstar.mean())
            start = torch.tensor(v["curve_mean"][0], dtype=torch.float64)
            v["gap_left"] = float(excess.mean() / (start - fstar.mean()))
            if "adam" in final:
                v["excess_over_adam"] = ratio_precision(excess, final["adam"] - fstar, block, DRAWS)


# -- figures ----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_floor(result: dict[str, Any], path: Path, setting: Setting) -> None:
    """Mean excess over f* vs step of each tuned baseline's long run, log-log."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    fstar = result["fstar_mean"]
    for name, v in result["floor"]["optimizers"].items():
        excess = [
            c - fstar if c is not None and c - fstar > 0 else math.nan for c in v["curve_mean"]
        ]
        ax.plot(range(1, len(excess)), excess[1:], label=f"{name} (lr {v['lr']:.3g})")
    ax.axvline(result["steps"], color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean f(θ_t) − f*")
    ax.set_title(
        f"{setting.title}\nexcess over the floor f* (mean {fstar:.4g}), "
        f"{result['runs']} images; dashed: step {result['steps']}",
        fontsize=9,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_images(family, learned, lrs, steps: list[int], rows: int, path: Path, setting) -> None:
    """Figure 8: per test image, the content, the style, then the LSTM's and tuned Adam's
    image after each of ``steps`` steps (a rollout from a fresh state for each)."""
    task = family.sample(task_seed("test", 0))
    rows = min(rows, task.num_problems)
    columns: list[tuple[str, torch.Tensor]] = []
    optimizers = {**learned, **{k: make_baseline(k, lr) for k, lr in lrs.items()}}
    for name, optimizer in optimizers.items():
        for s in steps:
            images = task.images(rollout(optimizer, task, s).params).cpu()
            columns.append((f"{name}, step {s}", images))
    plt = _pyplot()
    n = 2 + len(columns)
    fig, axes = plt.subplots(rows, n, figsize=(1.5 * n, 1.6 * rows + 0.5), dpi=120, squeeze=False)
    style = task.style.cpu().clamp(0, 1)
    for r in range(rows):
        pictures = [("content", task.content[r].cpu()), ("style", style)]
        pictures += [(label, images[r]) for label, images in columns]
        for c, (label, picture) in enumerate(pictures):
            ax = axes[r][c]
            ax.imshow(picture.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=7)
    fig.suptitle(f"{setting.title} (adam lr {lrs['adam']:.3g})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# -- the report -------------------------------------------------------------------------------------
def _interval(v: list[float] | None) -> str:
    return "" if not v else f" ({v[0]:.3g}-{v[1]:.3g})"


def markdown(report: dict[str, Any]) -> list[str]:
    e = report["evaluation"]
    lstm = report["lstm"]
    lines = [
        "# Neural art (paper section 3.4, Figs. 7-8): "
        + ("the LSTM against tuned baselines" if lstm else "tuned baselines and their floor"),
        "",
        f"Held-out content (the test photographs), {e['test_runs']} images per setting, the "
        f"same for every optimizer; each baseline's learning rate tuned per setting on "
        f"{e['validation_runs']} validation images (other crops) over a log grid of "
        f"{e['per_decade']} per decade, {e['lr_span_decades']:g} decade(s) either side of "
        "`l2o.art.DEFAULT_LR`, widened while the best was at an edge. Intervals: bootstrap 95% "
        "over the images (paired for ratios). Columns f(θ_32) / Adam's and summed loss / "
        "Adam's: mean f at step 32 and mean Σ_{t=1..T} f(θ_t), each over tuned Adam's (its "
        "learning rate tuned for f(θ_T)).",
        "",
    ]
    if lstm:
        lines += [f"LSTM: `{lstm['path']}`" + _training(lstm), ""]
    if report.get("baselines_from"):
        lines += [f"Baselines (tuned lrs and test runs) from `{report['baselines_from']}`.", ""]
    if e["floor_steps"] or any(r.get("floor") for r in report["settings"].values()):
        lines += [
            "f* of an image: the lowest loss any run reached on it, the long runs included "
            "(each tuned baseline for the floor's steps at the learning rate tuned for the "
            "setting's steps). Excess: f(θ_T) − f*. gap left: mean excess / (mean f(θ_0) − "
            "mean f*).",
            "",
        ]
    for name, r in report["settings"].items():
        lines += setting_lines(name, r, bool(lstm))
    return lines


def _training(lstm: dict[str, Any]) -> str:
    m = lstm.get("metrics") or {}
    if "meta_training_seconds" not in m:
        return ""
    return (
        f" (the checkpoint of epoch {m.get('best_epoch')}, after "
        f"{m['meta_training_seconds'] / 60:.1f} min of meta-training; its validation f(θ_T) "
        f"{m.get('best_validation_final_loss', float('nan')):.4g}, the run's best)"
    )


def setting_lines(name: str, r: dict[str, Any], with_lstm: bool) -> list[str]:
    opts = r["optimizers"]
    fl = r.get("floor")
    lines = [f"## {r['setting']['title'] or name} (`{name}`), step {r['steps']}", ""]
    if with_lstm and "adam" in opts:
        o = opts["lstm"]["over_adam"]
        lines += [
            f"**LSTM / tuned Adam at step {r['steps']}: {o['ratio']:.3f}"
            f"{_interval(o['ratio_95_interval'])}**"
            + (f" (target ≤ {TARGET} at 64x64)" if name == "64x64" else "")
            + (
                f"; excess over f*: LSTM / Adam {opts['lstm']['excess_over_adam']['ratio']:.3f}"
                f"{_interval(opts['lstm']['excess_over_adam']['ratio_95_interval'])}"
                if fl
                else ""
            )
            + f"; summed loss: LSTM / Adam {_f3(opts['lstm']['summed_over_adam'])}",
            "",
        ]
    early = r.get("early_step", EARLY)
    head = (
        f"| optimizer | tuned lr | f(θ_0) | f(θ_T) mean (95%) | / Adam (95%) | f(θ_{early}) / "
        "Adam's | summed loss / Adam's |"
    )
    rule = "|---|---|---|---|---|---|---|"
    if fl:
        head += " excess f(θ_T) − f* (95%) | excess / Adam's (95%) | f(θ_T) / f* | gap left |"
        rule += "---|---|---|---|"
    lines += [head + " s / image |", rule + "---|"]
    for k, v in opts.items():
        lr = (
            "-"
            if v["lr"] is None
            else f"{v['lr']:.3g}" + (" (edge)" if v.get("lr_at_grid_edge") else "")
        )
        o = v.get("over_adam")
        row = (
            f"| {k} | {lr} | {v['curve_mean'][0]:.4g} | {v['final_loss_mean']:.4g}"
            f"{_interval(v['final_loss_interval'])} | "
            + (f"{o['ratio']:.3f}{_interval(o['ratio_95_interval'])}" if o else "-")
            + " | "
            + (f"{_f3(v['early_over_adam'])} | {_f3(v['summed_over_adam'])}" if o else "- | -")
            + " |"
        )
        if fl:
            x = v.get("excess_over_adam")
            row += (
                f" {v['excess_mean']:.3g}{_interval(v['excess_interval'])} | "
                + (f"{x['ratio']:.3f}{_interval(x['ratio_95_interval'])}" if x else "-")
                + f" | {v['final_over_fstar']:.3f} | {v['gap_left']:.3f} |"
            )
        lines.append(row + f" {v['seconds'] / r['runs']:.2f} |")
    lines.append("")
    if fl:
        lines += [
            f"Floor: f* mean {r['fstar_mean']:.4g}; each tuned baseline after {fl['steps']} "
            "steps: "
            + ", ".join(
                f"{k} {v['final_loss_mean']:.4g} (excess {v['excess_mean']:.3g})"
                for k, v in fl["optimizers"].items()
            )
            + ".",
            "",
        ]
    lines += [f"![{Path(f).stem}]({f})" for f in r.get("figures", [])]
    lines.append("")
    return lines


if __name__ == "__main__":
    sys.exit(main())
