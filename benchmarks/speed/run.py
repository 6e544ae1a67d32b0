"""Benchmark: what one ``step()`` of a learned optimizer costs next to ``torch.optim.Adam``.

For each shipped pretrained optimizer (or, while none is shipped, a freshly initialised
paper-default ``CoordinatewiseLSTM()``: 2 layers of 20 units; the cost does not depend on the
weights), driven through the torch.optim front-end ``l2o.optim.LearnedOptimizer``, and for
``torch.optim.Adam(foreach=True)``, at 10k, 100k and 1M parameters (4 tensors: two "weights"
holding 70% and 30% of them, two small "biases"), it measures

- the wall-clock of one ``step()``: 3 warm-up steps, then the median of several repetitions;
- the same optimizer's ``step`` called directly (``l2o.optimizers`` interface, no front-end),
  to show what the front-end itself adds; and l2o's own Adam through the front-end;
- the optimizer state in bytes per parameter (every state tensor's storage, counted once), and
  the peak memory that building the optimizer and taking 3 steps adds over the parameters and
  gradients, per parameter (on the CPU: the rise of the peak resident set size, VmHWM, of a
  fresh process; on CUDA: ``max_memory_allocated``).

and writes benchmarks/speed/results/speed.{json,md}. Reproduce, from the repository root:

    python -m benchmarks.speed.run [--device cuda] [--threads 1] [--sizes 10000,100000,1000000]

``--generalist`` measures instead the architecture shipped as the generalist (the
``[optimizer]`` of ``--config``, configs/generalist.toml: the MLP optimizer, ``kind = "mlp"``),
on the 1,001,000 parameters of ``nn.Linear(1000, 1000)``, each learned optimizer timed in turn
with a ``torch.optim.Adam(foreach=True)`` of its own (one step of each per round, so that both
meet the same load; ``GENERALIST_ROUNDS``): through the front-end (its step without autograd,
the fast path of ``l2o.optimizers.mlp``), its reference step (the differentiable one meta-training runs, here
with no graph recorded: what the front-end ran before the fast path), the same with the
nominal term reading tanh(h) (``nominal_squash = "tanh"``, the preset's until session 24) and
the default ``kind = "mlp"`` architecture through the front-end; the same time, state and
peak-memory columns; and writes benchmarks/speed/results/speed-generalist.{json,md}:

    python -m benchmarks.speed.run --generalist [--config configs/generalist.toml] [--repeats 25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import l2o
from benchmarks.common import ROOT, machine, machine_markdown, results_dir
from l2o.checkpoint import atomic_write_text
from l2o.config import load_config
from l2o.optim import LearnedOptimizer
from l2o.optimizers import (
    Adam,
    CoordinatewiseLSTM,
    MLPOptimizerConfig,
    PerParameterMLP,
    StepOptimizer,
)
from l2o.optimizers.base import detach_state

FRESH = "fresh-lstm"
FRESH_LABEL = "fresh CoordinatewiseLSTM() 2x20"
ADAM = "torch-adam"


def make_params(n: int, device: str) -> list[torch.Tensor]:
    """n parameters in 4 tensors, each with a fixed random gradient."""
    sizes = [7 * n // 10 - 100, 100, n - 7 * n // 10 - 10, 10]
    g = torch.Generator().manual_seed(0)
    params = []
    for size in sizes:
        p = torch.randn(size, generator=g).to(device).requires_grad_()
        p.grad = 1e-3 * torch.randn(size, generator=g).to(device)
        params.append(p)
    return params


def learned(name: str, device: str) -> StepOptimizer:
    if name == FRESH:
        return CoordinatewiseLSTM().to(device)
    return l2o.load(name, device=device)


def builders(names: list[str], device: str) -> dict[str, Callable]:
    """kind -> (params -> object with a no-argument ``step``)."""
    out: dict[str, Callable] = {ADAM: lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)}
    out["l2o-adam"] = lambda ps: LearnedOptimizer(ps, optimizer=Adam(lr=1e-3))
    for name in names:
        out[name] = lambda ps, name=name: LearnedOptimizer(ps, optimizer=learned(name, device))
        out[f"{name} (direct)"] = lambda ps, name=name: DirectStep(learned(name, device), ps)
    return out


class DirectStep:
    """Calls ``StepOptimizer.step`` on the gradients with no front-end, as the unroll does."""

    def __init__(self, optimizer: StepOptimizer, params: list[torch.Tensor]) -> None:
        self.optimizer, self.params = optimizer, params
        self.state = optimizer.init_state([p.detach() for p in params])

    @torch.no_grad()
    def step(self) -> None:
        updates, self.state = self.optimizer.step([p.grad for p in self.params], self.state)
        for p, u in zip(self.params, updates):
            p.add_(u)


GENERALIST_CONFIG = "configs/generalist.toml"
GENERALIST_KINDS = {  # kind -> label
    ADAM: "torch.optim.Adam(foreach=True)",
    "generalist": "generalist, front-end (step without autograd)",
    "generalist-reference": "generalist, reference step (no graph; the front-end's before)",
    "generalist-tanh": 'generalist with nominal_squash = "tanh" (until session 24), front-end',
    "mlp-defaults": 'default kind = "mlp" (2 x 32, 5 momenta, 11 step features), front-end',
}
# The kinds timed in the same rounds, each group with one Adam of its own.
GENERALIST_ROUNDS = [["generalist", "generalist-tanh"], ["generalist-reference"], ["mlp-defaults"]]


def linear_params(device: str) -> list[torch.Tensor]:
    """The weight and bias of ``nn.Linear(1000, 1000)`` (1,001,000 parameters), each with a
    fixed random gradient."""
    g = torch.Generator().manual_seed(0)
    params = [p.detach().to(device).requires_grad_() for p in nn.Linear(1000, 1000).parameters()]
    for p in params:
        p.grad = 1e-3 * torch.randn(p.shape, generator=g).to(device)
    return params


def mlp_optimizer(config: MLPOptimizerConfig, device: str) -> PerParameterMLP:
    """The MLP optimizer with its weights moved from their start by seeded noise (the
    read-outs start at zero), so that every term is at work as in a meta-trained one."""
    torch.manual_seed(1)
    opt = PerParameterMLP(config).to(device)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return opt


def generalist_builders(config_path: str, device: str) -> dict[str, Callable]:
    """kind -> (params -> object with a no-argument ``step``), for ``--generalist``."""
    config = load_config(config_path).optimizer
    if not isinstance(config, MLPOptimizerConfig):
        raise SystemExit(f'{config_path}: [optimizer] is not kind = "mlp"')
    return {
        ADAM: lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "generalist": lambda ps: LearnedOptimizer(ps, optimizer=mlp_optimizer(config, device)),
        "generalist-reference": lambda ps: ReferenceStep(mlp_optimizer(config, device), ps),
        "generalist-tanh": lambda ps: LearnedOptimizer(
            ps, optimizer=mlp_optimizer(replace(config, nominal_squash="tanh"), device)
        ),
        "mlp-defaults": lambda ps: LearnedOptimizer(
            ps, optimizer=mlp_optimizer(MLPOptimizerConfig(), device)
        ),
    }


class ReferenceStep(DirectStep):
    """The MLP optimizer's reference step (the differentiable one of meta-training), with its
    weights frozen so that no graph is recorded: the maths the front-end ran before the step
    without autograd existed."""

    def __init__(self, optimizer: PerParameterMLP, params: list[torch.Tensor]) -> None:
        super().__init__(optimizer.requires_grad_(False), params)

    def step(self) -> None:
        with torch.enable_grad():  # the reference path: autograd on, nothing to record
            grads = [p.grad for p in self.params]
            values = [p.detach() for p in self.params]
            updates, state = self.optimizer.step(grads, self.state, params=values)
        self.state = detach_state(state)
        with torch.no_grad():
            for p, u in zip(self.params, updates):
                p.add_(u)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def state_bytes(opt) -> int:
    """Bytes of all state tensors, each storage counted once."""
    storages: dict[int, int] = {}

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            s = value.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    visit(opt.state)
    return sum(storages.values())


def time_steps(optimizers: dict[str, object], device: str, repeats: int) -> dict[str, list]:
    """Seconds of ``repeats`` steps of each optimizer, taken in turn (one step of each per
    round), so that optimizers compared with each other meet the same load on a shared
    machine. Only optimizers with similar working sets are timed together: a step that follows
    an LSTM step finds its data evicted from the caches."""
    for opt in optimizers.values():
        for _ in range(3):  # warm-up: first-step state allocation, allocator caches, kernels
            opt.step()
    sync(device)
    seconds: dict[str, list] = {kind: [] for kind in optimizers}
    for _ in range(repeats):
        for kind, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            sync(device)
            seconds[kind].append(time.perf_counter() - start)
    return seconds


def time_steps_and_cpu(
    optimizers: dict[str, object], device: str, repeats: int
) -> tuple[dict[str, list], dict[str, list]]:
    """``time_steps``, with the CPU time of this thread for each step as well: on a shared
    machine the wall-clock also counts the time the thread waited for a core, which falls on
    long steps more than on short ones; the CPU time does not."""
    for opt in optimizers.values():
        for _ in range(3):
            opt.step()
    sync(device)
    wall: dict[str, list] = {kind: [] for kind in optimizers}
    cpu: dict[str, list] = {kind: [] for kind in optimizers}
    for _ in range(repeats):
        for kind, opt in optimizers.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            opt.step()
            sync(device)
            cpu[kind].append(time.thread_time() - start_cpu)
            wall[kind].append(time.perf_counter() - start)
    return wall, cpu


def peak_step_bytes(
    kind: str, n: int, device: str, names: list[str], config: str | None = None
) -> int:
    """Memory one optimizer adds over parameters and gradients at its peak (state included);
    ``config``: a ``--generalist`` kind, on nn.Linear(1000, 1000)."""
    if device.startswith("cuda"):
        params = linear_params(device) if config else make_params(n, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        build = generalist_builders(config, device) if config else builders(names, device)
        opt = build[kind](params)
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: in a fresh process, so that the peak resident set size belongs to this case alone.
    command = [sys.executable, "-m", "benchmarks.speed.run", "--peak-of", kind, "--n", str(n)]
    command += ["--names", *names, "--threads", str(torch.get_num_threads())]
    if config:
        command += ["--generalist", "--config", config]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.strip().splitlines()[-1])


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(key)


def _peak_in_this_process(kind: str, n: int, names: list[str], config: str | None) -> int:
    # First the same optimizer on 1000 parameters, so that one-off allocations (thread pools,
    # library workspaces) happen before the measurement, not in it.
    if config:  # --generalist: nn.Linear(1000, 1000)
        build = generalist_builders(config, "cpu")[kind]
        small = [torch.randn(30, 30, requires_grad=True), torch.randn(30, requires_grad=True)]
        for p in small:
            p.grad = torch.randn_like(p)
        warm = build(small)
    else:
        build = builders(names, "cpu")[kind]
        warm = build(make_params(1000, "cpu"))
    for _ in range(3):
        warm.step()
    del warm
    params = linear_params("cpu") if config else make_params(n, "cpu")
    base = _proc_status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current one (Linux >= 4.0)
    opt = build(params)
    for _ in range(3):
        opt.step()
    return _proc_status("VmHWM:") - base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, torch's parallel ops wait for "
        "busy cores and small steps take milliseconds instead of microseconds)",
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--note", default="", help="a sentence on how it was run, for the report")
    parser.add_argument("--out", default=str(results_dir("speed")))
    parser.add_argument(
        "--generalist",
        action="store_true",
        help="measure the generalist architecture (--config's [optimizer]) on nn.Linear(1000, "
        "1000) against torch.optim.Adam instead, into speed-generalist.{json,md}",
    )
    parser.add_argument("--config", default=GENERALIST_CONFIG, help="with --generalist")
    parser.add_argument(
        "--repeats", type=int, default=25, help="with --generalist: timed rounds per pair"
    )
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak_of:
        config = args.config if args.generalist else None
        print(_peak_in_this_process(args.peak_of, args.n, args.names or [], config))
        return 0
    if args.generalist:
        return generalist(args)

    sizes = [int(s) for s in args.sizes.split(",")]
    shipped = l2o.pretrained.names()
    names = shipped or [FRESH]
    labels = {ADAM: "torch.optim.Adam(foreach=True)", "l2o-adam": "l2o Adam, front-end"}
    for name in names:
        label = FRESH_LABEL if name == FRESH else f"pretrained {name}"
        labels[name] = f"{label}, front-end"
        labels[f"{name} (direct)"] = f"{label}, direct `step`"

    rows = []
    for n in sizes:
        repeats = 25 if n <= 10_000 else 11 if n <= 100_000 else 5
        optimizers = {
            kind: build(make_params(n, args.device))
            for kind, build in builders(names, args.device).items()
        }
        seconds = {}
        for pair in [[ADAM, "l2o-adam"], *([name, f"{name} (direct)"] for name in names)]:
            seconds |= time_steps({k: optimizers[k] for k in pair}, args.device, repeats)
        medians = {kind: statistics.median(s) for kind, s in seconds.items()}
        for kind, opt in optimizers.items():
            row = {
                "optimizer": kind,
                "label": labels[kind],
                "params": n,
                "step_seconds_median": medians[kind],
                "step_seconds": seconds[kind],
                "state_bytes_per_param": state_bytes(opt) / n,
            }
            rows.append(row)
        del optimizers
        for row in rows[-len(medians) :]:
            kind = row["optimizer"]
            row["peak_step_bytes_per_param"] = peak_step_bytes(kind, n, args.device, names) / n
            print(
                f"{n:>8} {kind:<28} {1e3 * medians[kind]:9.2f} ms  "
                f"state {row['state_bytes_per_param']:6.1f} B/param  "
                f"peak {row['peak_step_bytes_per_param']:6.1f} B/param",
                flush=True,
            )
        for row in rows:
            if row["params"] == n:
                row["ratio_to_torch_adam"] = row["step_seconds_median"] / medians[ADAM]

    result = {
        "benchmark": "optim_overhead",
        "device": args.device,
        "sizes": sizes,
        "pretrained_shipped": shipped,
        "threads": args.threads,
        "note": args.note,
        "results": rows,
        "machine": machine(),
    }
    out = Path(args.out)
    atomic_write_text(out / "speed.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "speed.md", markdown(result, labels))
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0


def markdown(result: dict, labels: dict[str, str]) -> str:
    m = result["machine"]
    lines = [
        "# Cost of one optimizer step: learned optimizer vs torch.optim.Adam",
        "",
        "Wall-clock of one `step()` (median after 3 warm-up steps; 25 / 11 / 5 repetitions at",
        "10k / 100k / 1M parameters in 4 tensors), its ratio to `torch.optim.Adam(foreach=True)`",
        "at the same size, the optimizer state per parameter, and the peak memory that building",
        "the optimizer and taking 3 steps adds over the parameters and gradients, per parameter",
        "(state and the step's temporaries; "
        + (
            "`torch.cuda.max_memory_allocated`)."
            if result["device"].startswith("cuda")
            else "the rise of the peak resident set size of a fresh process, so allocator "
            "slack counts too)."
        ),
        "torch's and l2o's Adam are timed in turn, one step of each per round, and so are the",
        "learned optimizer's front-end and direct `step`, so that the two of a pair meet the",
        "same load.",
        "'front-end' is `l2o.optim.LearnedOptimizer(params, optimizer=...)`; 'direct `step`'",
        "calls the optimizer's `step(grads, state)` itself, as the meta-training unroll does.",
        "",
        "| optimizer | params | step (ms) | × torch Adam | state (B/param) | peak (B/param) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {labels[r['optimizer']]} | {r['params']:,} | {1e3 * r['step_seconds_median']:.2f} "
            f"| {r['ratio_to_torch_adam']:.1f} | {r['state_bytes_per_param']:.1f} "
            f"| {r['peak_step_bytes_per_param']:.1f} |"
        )
    if not result["pretrained_shipped"]:
        lines += [
            "",
            "No pretrained optimizer was shipped when this ran, so the learned optimizer is a",
            "freshly initialised paper-default `CoordinatewiseLSTM()` (2 layers of 20 units, the",
            "architecture of the paper's optimizers); its cost does not depend on its weights.",
        ]
    lines += [
        "",
        "Reading it: the LSTM runs two 20-unit LSTM layers for every coordinate, so its step",
        "costs two to three orders of magnitude more than Adam's few elementwise operations, and",
        "it keeps 4 x 20 float32 numbers (h and c of 2 layers) per coordinate: 320 bytes/param",
        "against Adam's 8. A step without autograd runs the coordinates in chunks of",
        f"{CoordinatewiseLSTM.chunk_size:,}, so its temporaries (the gates) are those of one chunk.",
        "What the front-end adds to the same optimizer's direct `step` (median",
        "front-end / median direct): " + front_end_ratios(result) + ".",
        "",
        "At 10k parameters the peak-memory column is within allocator noise: memory already",
        "resident from the setup absorbs small allocations (torch's Adam may read 0).",
        "",
        f"torch CPU threads: {result['threads']} (`--threads`). {result['note']}".rstrip(),
        "",
        machine_markdown(m),
    ]
    return "\n".join(lines) + "\n"


def machine_load() -> dict:
    """What else ran: the 1-minute load average and the busiest other processes (``ps``'s
    CPU %, over each one's lifetime)."""
    load: dict = {"time": time.strftime("%H:%M:%S UTC", time.gmtime())}
    try:
        with open("/proc/loadavg") as f:
            load["load_average_1min"] = float(f.read().split()[0])
        done = subprocess.run(
            ["ps", "-eo", "pid=,pcpu=,args=", "--sort=-pcpu"], capture_output=True, text=True
        )
    except (OSError, ValueError):
        return load
    others = []
    for line in done.stdout.splitlines():
        pid, cpu, command = line.split(None, 2)
        if int(pid) != os.getpid() and float(cpu) >= 5.0:
            others.append({"cpu_percent": float(cpu), "command": command[:120]})
    load["other_processes"] = others[:4]
    return load


def describe_load(load: dict) -> str:
    others = "; ".join(
        f"{p['cpu_percent']:.0f}% {p['command']}" for p in load.get("other_processes", [])
    )
    return f"{load['time']}: 1-minute load average {load.get('load_average_1min', '?')}" + (
        f"; other processes: {others}" if others else ""
    )


def _generalist_row(kind: str, n: int, optimizers: dict, seconds: dict, cpu: dict) -> dict:
    """One row of ``--generalist``: ``kind``'s times against the Adam timed in its rounds."""
    adam, learned = (statistics.median(seconds[k]) for k in (ADAM, kind))
    adam_cpu, learned_cpu = (statistics.median(cpu[k]) for k in (ADAM, kind))
    return {
        "optimizer": kind,
        "label": GENERALIST_KINDS[kind],
        "params": n,
        "step_seconds_median": learned,
        "step_seconds": seconds[kind],
        "torch_adam_seconds_median": adam,
        "torch_adam_seconds": seconds[ADAM],
        "ratio_to_torch_adam": learned / adam,
        "step_cpu_seconds_median": learned_cpu,
        "step_cpu_seconds": cpu[kind],
        "torch_adam_cpu_seconds_median": adam_cpu,
        "torch_adam_cpu_seconds": cpu[ADAM],
        "cpu_ratio_to_torch_adam": learned_cpu / adam_cpu,
        "state_bytes_per_param": state_bytes(optimizers[kind]) / n,
        "torch_adam_state_bytes_per_param": state_bytes(optimizers[ADAM]) / n,
    }


def generalist(args: argparse.Namespace) -> int:
    """``--generalist``: each learned optimizer against a torch Adam of its own, in turn."""
    load_before = machine_load()
    build = generalist_builders(args.config, args.device)
    n = sum(p.numel() for p in linear_params("cpu"))
    rows = []
    # The two nominal_squash variants in the same rounds (their difference is a tenth, the
    # machine's drift between runs as much), each other kind with an Adam of its own.
    for kinds in GENERALIST_ROUNDS:
        # The reference step takes ~10x the others' time: fewer rounds.
        repeats = args.repeats // 4 if "generalist-reference" in kinds else args.repeats
        pair = {ADAM: build[ADAM](linear_params(args.device))}
        for kind in kinds:
            pair[kind] = build[kind](linear_params(args.device))
        seconds, cpu = time_steps_and_cpu(pair, args.device, max(3, repeats))
        for kind in kinds:
            rows.append(_generalist_row(kind, n, pair, seconds, cpu))
        del pair
    rows.sort(key=lambda row: list(GENERALIST_KINDS).index(row["optimizer"]))
    for row in rows:
        kind = row["optimizer"]
        row["peak_step_bytes_per_param"] = (
            peak_step_bytes(kind, n, args.device, [], args.config) / n
        )
        print(
            f"{kind:<22} {1e3 * row['step_seconds_median']:8.2f} ms  torch Adam "
            f"{1e3 * row['torch_adam_seconds_median']:6.2f} ms  x{row['ratio_to_torch_adam']:6.1f}"
            f"  (CPU time x{row['cpu_ratio_to_torch_adam']:6.1f})"
            f"  state {row['state_bytes_per_param']:5.1f}  peak "
            f"{row['peak_step_bytes_per_param']:6.1f} B/param",
            flush=True,
        )
    load_after = machine_load()  # before the peak-memory processes start
    adam_peak = peak_step_bytes(ADAM, n, args.device, [], args.config) / n
    config = load_config(args.config).optimizer
    result = {
        "benchmark": "speed-generalist",
        "device": args.device,
        "params": n,
        "model": "nn.Linear(1000, 1000)",
        "config": args.config,
        "optimizer": PerParameterMLP(config).spec(),
        "threads": args.threads,
        "repeats": args.repeats,
        "chunk_size": PerParameterMLP.chunk_size,
        "torch_adam_peak_step_bytes_per_param": adam_peak,
        "load": {"before": load_before, "after_timing": load_after},
        "note": args.note,
        "results": rows,
        "machine": machine(),
    }
    out = Path(args.out)
    atomic_write_text(out / "speed-generalist.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "speed-generalist.md", generalist_markdown(result))
    print(f"wrote {out / 'speed-generalist.json'} and {out / 'speed-generalist.md'}")
    return 0


def generalist_markdown(result: dict) -> str:
    spec = result["optimizer"]
    architecture = (
        f"hidden_size = {spec['hidden_size']}, num_layers = {spec['num_layers']}, momentum = "
        f"{spec['momentum']}, time_scales = {spec['time_scales']}, scheduler_size = "
        f"{spec.get('scheduler_size', 0)}, lr_adaptation = {spec.get('lr_adaptation', 0.0)}"
    )
    lines = [
        "# Cost of one step of the generalist architecture vs torch.optim.Adam",
        "",
        f"The MLP optimizer as `{result['config']}` configures it ({architecture}) on the",
        f"{result['params']:,} parameters of `{result['model']}`, CPU, {result['threads']}"
        " torch thread(s). Each learned optimizer is timed in turn with a",
        "`torch.optim.Adam(foreach=True)` of its own (one step of each per round, "
        f"{result['repeats']} rounds",
        "after 3 warm-up steps; a quarter of them for the slow reference step; the two",
        "generalist front-ends, tanh and hardtanh, in the same rounds with one Adam), so that",
        "they meet the same load; a ratio is the learned step's median over that Adam's median, of",
        "the wall-clock and of the CPU time of the thread (`time.thread_time`; on a shared",
        "machine the wall-clock also counts the time spent waiting for a core, which falls on",
        "long steps more than on short ones). Adam's time also depends on what ran before it: a",
        "step with a large working set (the reference step) evicts Adam's data from the caches.",
        "'front-end' is `l2o.optim.LearnedOptimizer(params, optimizer=...)`, whose step runs",
        "without autograd: the fast path of `l2o.optimizers.mlp` (chunks of "
        f"{result['chunk_size']:,} coordinates, the",
        "normaliser folded into the first layer's weights, the state stepped in place). The",
        "reference step is the differentiable one that meta-training runs (here with no graph",
        "recorded), which the front-end ran before the fast path. The weights are the",
        "optimizers' initial ones moved by seeded noise; the cost does not depend on them.",
        "State: every state tensor's storage, counted once. Peak: the rise of the peak resident",
        "set size of a fresh process that builds the optimizer and takes 3 steps, over the",
        "parameters and gradients (so allocator slack counts too), per parameter.",
        "",
        "| optimizer | step (ms) | its torch Adam (ms) | × torch Adam | CPU (ms) "
        "| Adam CPU (ms) | × torch Adam (CPU) | state (B/param) | peak (B/param) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['label']} | {1e3 * r['step_seconds_median']:.2f} "
            f"| {1e3 * r['torch_adam_seconds_median']:.2f} | {r['ratio_to_torch_adam']:.1f} "
            f"| {1e3 * r['step_cpu_seconds_median']:.2f} "
            f"| {1e3 * r['torch_adam_cpu_seconds_median']:.2f} "
            f"| {r['cpu_ratio_to_torch_adam']:.1f} "
            f"| {r['state_bytes_per_param']:.1f} | {r['peak_step_bytes_per_param']:.1f} |"
        )
    adam_state = result["results"][0]["torch_adam_state_bytes_per_param"]
    lines += [
        "",
        f"torch.optim.Adam(foreach=True): state {adam_state:.1f} B/param, peak "
        f"{result['torch_adam_peak_step_bytes_per_param']:.1f} B/param.",
        "",
        f"torch CPU threads: {result['threads']} (`--threads`). {result['note']}".rstrip(),
        "",
        "What else ran (processes above 5% CPU, as `ps` gives it: over each one's lifetime):",
        "before the timing, " + describe_load(result["load"]["before"]) + "; after it, ",
        describe_load(result["load"]["after_timing"]) + ".",
        "",
        machine_markdown(result["machine"]),
    ]
    return "\n".join(lines) + "\n"


def front_end_ratios(result: dict) -> str:
    medians = {(r["optimizer"], r["params"]): r["step_seconds_median"] for r in result["results"]}
    parts = []
    for (kind, n), median in medians.items():
        direct = medians.get((f"{kind} (direct)", n))
        if direct:
            parts.append(f"{median / direct:.2f} at {n:,} ({kind})")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
