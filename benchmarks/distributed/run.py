"""Benchmark: meta-training epochs per second in 1 and 2 processes (issue #29, torchrun).

Meta-trains a preset (default configs/quadratic.toml: the paper's 2x20 LSTM on 128 10-d
quadratics per task, T = 100 in truncations of 20, second-order meta-gradients) with a
meta-batch of ``--tasks-per-epoch`` tasks (default 2) for ``--epochs`` epochs, in one process
(``l2o train``) and in 2 processes (``torchrun --standalone --nproc_per_node=2 -m l2o train``,
gloo), each process with 1 torch thread, ``--repeats`` times in turn. Both give the same
meta-batch, so the same weights (checked: the largest difference between the last checkpoints
is reported); what differs is the time. Reports epochs per second from each run's
``metrics.jsonl`` (the meta-training wall-clock, without starting Python and torch: over all
epochs, and over the epochs after the first), the speed-up of 2 processes, the whole command's
wall-clock, and the machine's load before and after (the numbers depend on what else runs).

Then the sharded learned optimizer step (``benchmarks.distributed.sharded_step``): the pretrained
``quadratic-lstm`` on ``nn.Linear(1000, 1000)`` (1M parameters), ``LearnedOptimizer`` and
``ShardedLearnedOptimizer`` timed in turn, in 1 and in 2 processes: seconds per step, state per
process, and how far apart their parameters end.

Writes benchmarks/distributed/results/distributed.{json,md}. Reproduce, from the repository
root:

    python -m benchmarks.distributed.run      (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.common import ROOT, machine, results_dir, write_result

PROCESSES = (1, 2)


def load() -> dict[str, object]:
    """The 1-minute load average and the busiest processes (what else used the cores)."""
    with open("/proc/loadavg") as f:
        average = float(f.read().split()[0])
    ps = subprocess.run(
        ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[1:]
    ps = [" ".join(p.split()[1:]) for p in ps if int(p.split()[0]) != os.getpid()][:3]
    return {"load_average_1min": average, "busiest": [p[:120] for p in ps]}


def command(processes: int, config: str, run: Path, overrides: list[str]) -> list[str]:
    train = ["-m", "l2o", "train", config, "--run-dir", str(run), "--quiet", *overrides]
    if processes == 1:
        return [sys.executable, *train]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [sys.executable, *launcher, *train]


def one_run(processes: int, config: str, run: Path, overrides: list[str]) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        command(processes, config, run, overrides), env=env, cwd=ROOT, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    seconds = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").open()]
    return {
        "processes": processes,
        "epochs": len(seconds),
        "meta_training_seconds": seconds[-1],
        "epochs_per_second": len(seconds) / seconds[-1],
        "epochs_per_second_after_the_first": (len(seconds) - 1) / (seconds[-1] - seconds[0]),
        "command_seconds": wall,
    }


def sharded_step(processes: int, size: int, steps: int) -> dict[str, object]:
    """``benchmarks.distributed.sharded_step`` in ``processes`` processes: its JSON line."""
    module = ["-m", "benchmarks.distributed.sharded_step", "--size", str(size)]
    module += ["--steps", str(steps)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    argv = [sys.executable, *(launcher if processes > 1 else []), *module]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"sharded step in {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quadratic.toml"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--tasks-per-epoch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--step-size", type=int, default=1000, help="nn.Linear(N, N) (1000)")
    parser.add_argument("--step-steps", type=int, default=3, help="timed steps (3)")
    parser.add_argument("--out", default=str(results_dir("distributed")))
    parser.add_argument("--name", default="distributed")
    parser.add_argument("--note", default="", help="a sentence for the .md (e.g. machine load)")
    args = parser.parse_args()
    overrides = [
        f"meta.epochs={args.epochs}",
        f"meta.tasks_per_epoch={args.tasks_per_epoch}",
        f"meta.validate_every={args.epochs}",  # one validation, after the last epoch
        *args.set,
    ]
    overrides = [arg for o in overrides for arg in ("--set", o)]
    before = load()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n in PROCESSES:
                run = Path(tmp) / f"p{n}-r{repeat}"
                runs.append({"repeat": repeat, **one_run(n, args.config, run, overrides)})
                print(json.dumps(runs[-1]), flush=True)
        last = {n: load_file(str(Path(tmp) / f"p{n}-r0" / "checkpoints" / "last.safetensors"))
                for n in PROCESSES}  # fmt: skip
        weights_apart = max(
            float((last[1][k] - last[2][k]).abs().max()) for k in last[1] if k in last[2]
        )
    steps = [sharded_step(n, args.step_size, args.step_steps) for n in PROCESSES]
    for found in steps:
        print(json.dumps(found), flush=True)
    after = load()
    summary = {}
    for n in PROCESSES:
        mine = [r for r in runs if r["processes"] == n]
        summary[n] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("epochs_per_second", "epochs_per_second_after_the_first",
                        "command_seconds", "meta_training_seconds")
        }  # fmt: skip
    speedup = summary[2]["epochs_per_second"] / summary[1]["epochs_per_second"]
    result = {
        "config": os.path.relpath(args.config, ROOT),
        "overrides": args.set,
        "epochs": args.epochs,
        "tasks_per_epoch": args.tasks_per_epoch,
        "repeats": args.repeats,
        "torch_threads_per_process": 1,
        "runs": runs,
        "median": {str(n): s for n, s in summary.items()},
        "speedup_2_over_1": speedup,
        "last_weights_max_abs_difference_1_vs_2": weights_apart,
        "sharded_step": steps,
        "load_before": before,
        "load_after": after,
        "note": args.note,
        "machine": machine(),
    }
    rows = [
        "| processes | epochs / s | after the first epoch | meta-training s | command s (with start-up) |",
        "|---|---|---|---|---|",
    ]
    for n in PROCESSES:
        s = summary[n]
        rows.append(
            f"| {n} | {s['epochs_per_second']:.3f} | {s['epochs_per_second_after_the_first']:.3f} "
            f"| {s['meta_training_seconds']:.1f} | {s['command_seconds']:.1f} |"
        )
    lines = [
        f"# Distributed meta-training: {result['config']}, {args.epochs} epochs of "
        f"{args.tasks_per_epoch} tasks",
        "",
        f"Medians of {args.repeats} runs each, 1 torch thread per process (one process: `l2o "
        f"train`; two: `torchrun --standalone --nproc_per_node=2 -m l2o train`, gloo); epochs "
        f"per second from the runs' own meta-training wall-clock (metrics.jsonl), the command's "
        f"seconds include starting Python, torch and the job.",
        "",
        *rows,
        "",
        f"2 processes / 1 process: **{speedup:.2f}x** the epochs per second. The last weights "
        f"of the 1- and 2-process runs differ by at most {weights_apart:.3g} (the same "
        f"meta-batch).",
        "",
        f"## The sharded step: `quadratic-lstm` on nn.Linear({args.step_size}, "
        f"{args.step_size}) ({steps[0]['parameters']:,} parameters)",
        "",
        "Median seconds of "
        f"{args.step_steps} steps; in 2 processes both step at once, each timed between "
        "barriers (the unsharded step runs whole on each).",
        "",
        "| processes | unsharded s / step | sharded s / step | unsharded state MB | sharded "
        "state MB (this process) | parameters apart / moved |",
        "|---|---|---|---|---|---|",
        *[
            f"| {s['processes']} | {s['unsharded_seconds_per_step']:.3f} | "
            f"{s['sharded_seconds_per_step']:.3f} | {s['unsharded_state_bytes'] / 1e6:.0f} | "
            f"{s['sharded_state_bytes_this_process'] / 1e6:.0f} | "
            f"{s['parameters_apart_over_moved']:.2g} |"
            for s in steps
        ],
        "",
        f"Load (1-minute average) before: {before['load_average_1min']:.2f}, after: "
        f"{after['load_average_1min']:.2f}. Busiest processes before: "
        + "; ".join(f"`{p}`" for p in before["busiest"]),
    ]
    write_result(args.out, args.name, result, lines)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
