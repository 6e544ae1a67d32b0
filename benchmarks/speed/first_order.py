"""Benchmark (issue #30): first-order meta-gradients with and without a graph through the task.

``TruncatedBPTT`` computes a first-order meta-gradient by default as one vector-Jacobian product
through the optimizer's steps, the task evaluated on copies of theta cut from the graph
(``l2o.meta.truncated_bptt``); ``through_task=True`` backpropagates through the task's graph as
autograd does for ``unroll``, a second pass through every f(theta_t). For each preset, the same
truncations from the same states by both paths, in turn in the same process (one torch thread,
denormals flushed as meta-training does), the freshly initialised optimizer of the preset:
median seconds per truncation and the largest difference of a meta-gradient tensor, relative to
the largest entry of all the reference's tensors.

    python -m benchmarks.speed.first_order [--truncations 12]

Writes benchmarks/speed/results/speed-first-order.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.devices import flush_denormals
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.runs import build_learned_optimizer

PRESETS = ("quadratic-paper", "mnist", "conv", "generalist")


def measure(preset: str, truncations: int) -> dict:
    config = load_config(ROOT / "configs" / f"{preset}.toml")
    torch.manual_seed(0)
    optimizer = build_learned_optimizer(config)
    meta = config.meta
    paths = {
        "through the task": TruncatedBPTT(meta_loss=meta.meta_loss, through_task=True),
        "vector-Jacobian product": TruncatedBPTT(meta_loss=meta.meta_loss),
    }
    weights = [1.0] * meta.truncation
    times: dict[str, list[float]] = {name: [] for name in paths}
    difference = 0.0
    seed = 0
    state = None
    task = None
    for k in range(truncations + 1):  # the first: warm-up
        if state is None or state.step >= meta.horizon:  # a fresh task after each horizon
            task = config.task.sample(seed)
            seed += 1
            state = init_unroll(task, optimizer).detached()
        results = {}
        for name, estimator in paths.items():
            start = time.perf_counter()
            results[name] = estimator.meta_gradient(optimizer, task, state, weights)
            if k:
                times[name].append(time.perf_counter() - start)
        ref, fast = results["through the task"].grads, results["vector-Jacobian product"].grads
        scale = max(float(g.abs().max()) for g in ref) or 1.0
        difference = max(
            difference, *(float((a - b).abs().max()) / scale for a, b in zip(fast, ref))
        )
        state = results["through the task"].state
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "preset": preset,
        "truncation": meta.truncation,
        "optimizer": optimizer.spec()["kind"],
        "seconds": medians,
        "speedup": medians["through the task"] / medians["vector-Jacobian product"],
        "max_relative_difference": difference,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truncations", type=int, default=12)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(results_dir("speed")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with flush_denormals():
        for preset in args.presets:
            rows.append(measure(preset, args.truncations))
            print(rows[-1], flush=True)
    result = {"truncations": args.truncations, "presets": rows, "note": args.note}
    result["machine"] = machine()
    lines = [
        "# First-order meta-gradients: through the task's graph or not",
        "",
        f"Median seconds per truncation over {args.truncations} truncations (after one), both "
        "paths from the same states in turn, one torch thread (`benchmarks/speed/first_order.py`). "
        "Difference: the largest of a meta-gradient tensor, relative to the largest entry of "
        "the reference's.",
        "",
        "| preset | optimizer | K | through the task (s) | vector-Jacobian product (s) | "
        "speedup | difference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['preset']} | {r['optimizer']} | {r['truncation']} | "
        f"{r['seconds']['through the task']:.3f} | "
        f"{r['seconds']['vector-Jacobian product']:.3f} | {r['speedup']:.2f}x | "
        f"{r['max_relative_difference']:.1e} |"
        for r in rows
    ]
    write_result(args.out, "speed-first-order", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
