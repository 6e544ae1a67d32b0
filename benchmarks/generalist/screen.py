"""Screen (issue #26): can a hand-written per-tensor learning-rate adaptation find each held-out
task's learning rate, starting where the generalist starts (Adam at 0.01)?

The first generalist (docs/experiments/generalist.md) ended at 1.16-2.94 of tuned Adam on the
held-out suite, furthest on the quadratics, whose tuned Adam rate (1.78) is 178 times its
nominal 0.01: its scheduler moves a tensor's rate at most 7.4 times either way. Before building
a wider adaptation into the learned optimizer (and meta-training it for hours), this screen
measures, with no meta-training at all, what a hand-written rule does from the same start:
the untrained optimizer of configs/generalist.toml with ``lr_adaptation = beta``, which is Adam
at 0.01 whose log rate per tensor j follows the normalised hypergradient rule of Baydin et al.
(2018) (``l2o.optimizers.mlp``; tests/test_mlp_optimizer.py checks it against the rule by hand):

    d_{t-1} = m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)      Adam's previous direction
    log lr_j += beta * cos(g_t, d_{t-1})  (over tensor j; within exp(+-7) of 0.01)
    theta -= lr_j * m_hat_t / (sqrt(v_hat_t) + eps)

(f(theta - lr d) falls further along d while g_t and d_{t-1} point the same way: raise the rate;
it oscillates when they point apart: lower it.) Each rule runs on the suite's own test tasks
(the same seeds as ``l2o suite``), and its mean final loss is divided by tuned Adam's from the
committed suite result of the first generalist (benchmarks/generalist/results/generalist.json);
Adam at its stored tuned rate is rerun on each entry to check that the tasks are the same.

    python -m benchmarks.generalist.screen [--betas 0,0.05,0.1,0.2] [--entries a,b]
        [--learned NAME=CHECKPOINT ...] [--name generalist-screen]

``--learned`` adds learned optimizers (a checkpoint, a run directory's best, or a pretrained
name) to the same table: a cheap screen of meta-trained checkpoints before the full suite
(``benchmarks.generalist.run``, which also tunes the baselines and times every step).

Writes benchmarks/generalist/results/generalist-screen.{json,md} (``--name``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import l2o
from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.evaluate.compare import run_on_tasks
from l2o.evaluate.suite import SUITE, select
from l2o.optimizers import make_baseline
from l2o.optimizers.base import StepOptimizer
from l2o.runs import build_learned_optimizer

SUITE_RESULT = ROOT / "benchmarks/generalist/results/generalist.json"
PRESET = ROOT / "configs/generalist.toml"


def tuned_adam_rerun(entry, family, stored: dict) -> dict:
    """The stored tuned Adam of a suite entry, rerun on its test tasks (of ``family``, the
    entry's, which the caller has built): its rate, the stored mean final loss
    (``tuned_adam_final``, what the screens divide by) and the rerun's."""
    adam = stored[entry.name]["optimizers"]["adam"]
    check = run_on_tasks("adam", make_baseline("adam", adam["lr"]), family, entry.steps,
                         "test", entry.test_tasks)  # fmt: skip
    return {
        "tuned_adam_lr": adam["lr"],
        "tuned_adam_final": stored[entry.name]["adam_final_loss"],
        "adam_rerun": float(check.losses.double().mean(1)[-1]),
    }


def untrained(beta: float) -> StepOptimizer:
    """The preset's optimizer before meta-training, with the adaptation's gain ``beta``
    (0: none, Adam at the nominal rate)."""
    config = load_config(PRESET, [f"optimizer.lr_adaptation={beta}"])
    return build_learned_optimizer(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--betas", default="0,0.03,0.1,0.3")
    parser.add_argument("--entries", help="comma-separated suite entries (default: all)")
    parser.add_argument("--learned", nargs="*", default=[], help="NAME=CHECKPOINT ...")
    parser.add_argument("--name", default="generalist-screen")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stored = json.loads(SUITE_RESULT.read_text())["suite"]["entries"]
    betas = [float(b) for b in args.betas.split(",")] if args.betas else []
    sources = dict(item.partition("=")[::2] for item in args.learned)  # name: checkpoint
    learned = {name: l2o.load(where) for name, where in sources.items()}
    entries = select(args.entries.split(",") if args.entries else None, SUITE)
    result = {
        "betas": betas,
        "preset": str(PRESET.relative_to(ROOT)),
        "entries": {},
        "note": args.note,
    }
    rows = []
    for entry in entries:
        family = entry.family()
        started = time.perf_counter()
        out = tuned_adam_rerun(entry, family, stored)
        target, rerun = out["tuned_adam_final"], out["adam_rerun"]
        for beta in betas:
            r = run_on_tasks(f"hd{beta}", untrained(beta), family, entry.steps, "test",
                             entry.test_tasks)  # fmt: skip
            final = float(r.losses.double().mean(1)[-1])
            out[f"beta={beta:g}"] = {"final": final, "over_tuned_adam": final / target}
        for name, optimizer in learned.items():
            r = run_on_tasks(name, optimizer, family, entry.steps, "test", entry.test_tasks)
            final = float(r.losses.double().mean(1)[-1])
            out[name] = {"final": final, "over_tuned_adam": final / target}
        out["seconds"] = time.perf_counter() - started
        result["entries"][entry.name] = out
        columns = [f"beta={b:g}" for b in betas] + list(learned)
        cells = " | ".join(f"{out[k]['over_tuned_adam']:.3f}" for k in columns)
        rows.append(
            f"| {entry.name} | {out['tuned_adam_lr']:.3g} | {rerun / target:.4f} | {cells} |"
        )
        print(rows[-1], flush=True)
    result["machine"] = machine()
    head = " | ".join([f"β = {b:g}" for b in betas] + [f"`{n}`" for n in learned])
    result["learned"] = sources
    lines = [
        "# Screen: a hand-written per-tensor learning-rate adaptation from Adam at 0.01 (#26)"
        if betas
        else "# Screen: learned optimizers on the held-out suite's test tasks (#26)",
        "",
        "Mean final loss over tuned Adam's (both on the suite's test tasks) of Adam whose rate per",
        "tensor follows log lr += β cos(g_t, d_{t-1}) from 0.01: configs/generalist.toml's optimizer",
        "untrained, with `lr_adaptation` = β (`benchmarks/generalist/screen.py`; β = 0 is Adam at",
        "0.01, the first generalist's start). `rerun` is Adam at its stored tuned",
        "rate rerun here over the stored figure (1 = the same tasks).",
        *(
            [
                "Learned optimizers (`--learned`): "
                + ", ".join(f"`{n}` = {w}" for n, w in sources.items())
                + ".",
            ]
            if learned
            else []
        ),
        "",
        f"| entry | tuned Adam lr | rerun | {head} |",
        "|---|---|---|" + "---|" * (len(betas) + len(learned)),
        *rows,
    ]
    write_result(results_dir("generalist"), args.name, result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
