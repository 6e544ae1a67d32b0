"""Benchmark (issue #30): does torch.compile pay for the meta-training step?

The meta-gradient of one truncation of the paper's quadratic preset (configs/quadratic-paper.toml:
128 problems of 10 coordinates, 2x20 LSTM, truncation of 20 steps, first-order), eager against
the same with the LSTM optimizer's differentiable ``step`` wrapped in ``torch.compile`` (inductor,
the default backend; ``dynamic=True``: with ``dynamic=False`` the step number, a Python int,
makes a new graph at every step until dynamo's cache limit, after which it runs eager). The task's
gradients and the meta-loss stay eager (``torch.autograd.grad`` inside the unroll breaks a
graph anyway). Reported: the first call's seconds (compilation included), the median seconds
per truncation after it, each version in turn in the same process (one torch thread), and the
largest relative difference of the meta-gradients from eager's.

    python -m benchmarks.speed.compile [--rounds 5]

Writes benchmarks/speed/results/speed-compile.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.runs import build_learned_optimizer

CONFIG = ROOT / "configs/quadratic-paper.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    config = load_config(CONFIG)
    optimizer = build_learned_optimizer(config)
    task = config.task.sample(0)
    estimator = TruncatedBPTT(meta_loss=config.meta.meta_loss)
    weights = [1.0] * config.meta.truncation

    def truncation() -> list[torch.Tensor]:
        return estimator.meta_gradient(optimizer, task, init_unroll(task, optimizer), weights).grads

    eager = optimizer.step
    versions = {"eager": eager}
    first: dict[str, float] = {}
    grads: dict[str, list[torch.Tensor]] = {}
    versions["compiled"] = torch.compile(eager, dynamic=True)
    for name, step in versions.items():
        optimizer.step = step
        start = time.perf_counter()
        grads[name] = truncation()
        first[name] = time.perf_counter() - start
        print(name, "first call", round(first[name], 2), "s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, step in versions.items():
            optimizer.step = step
            start = time.perf_counter()
            truncation()
            times[name].append(time.perf_counter() - start)
    optimizer.step = eager
    rows, result = [], {"versions": {}, "note": args.note, "machine": machine()}
    base = statistics.median(times["eager"])
    for name in versions:
        median = statistics.median(times[name])
        diff = max(
            float((a - b).abs().max() / (b.abs().max() + 1e-30))
            for a, b in zip(grads[name], grads["eager"])
        )
        result["versions"][name] = {
            "first_call_s": first[name], "median_s": median, "times_s": times[name],
            "speedup": base / median, "max_relative_difference": diff,
        }  # fmt: skip
        rows.append(
            f"| {name} | {first[name]:.2f} | {median * 1000:.1f} | {base / median:.2f}x | {diff:.1e} |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# torch.compile of the LSTM optimizer's step in meta-training (#30)",
        "",
        "One truncation's meta-gradient (20 steps, forward and backward) of "
        "configs/quadratic-paper.toml (128 problems of 10 coordinates, 2x20 LSTM), eager and with "
        "the optimizer's differentiable `step` in `torch.compile(dynamic=True)` (inductor), each in turn in the "
        f"same process, {args.rounds} rounds after the first call "
        "(`benchmarks/speed/compile.py`). Difference: the largest relative difference of a "
        "meta-gradient tensor from eager's.",
        "",
        "| version | first call (s) | per truncation (ms) | speed vs eager | difference |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]
    write_result(results_dir("speed"), "speed-compile", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
