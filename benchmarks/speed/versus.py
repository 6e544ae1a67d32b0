"""Benchmark (issue #30): today's implementation against commit 1fba373's, side by side.

Both implementations run in the same process, in turn: commit 1fba373's ``src/l2o`` (and its
presets, whose option names differ) is extracted with ``git archive`` into a temporary folder
and imported as the package ``l2o_1fba373`` (its imports renamed), beside today's ``l2o``; every
measurement alternates between the two (reference, current, reference, current, ...), so that
both meet the same load on a shared machine. One torch thread (``OMP_NUM_THREADS=1``).

- Meta-training: each version's ``MetaTrainer`` on the paper's quadratic preset
  (configs/quadratic-paper.toml), the MNIST preset (configs/mnist.toml) and the conv preset
  (configs/conv.toml), one epoch of each in turn (``train_epoch``; today's inside
  ``flush_denormals``, as its ``run`` does); the median seconds per epoch after one warm-up
  epoch. Epochs of a freshly initialised optimizer, as a run starts.
- The learned step: ``LearnedOptimizer(params, "mnist-mlp-lstm")`` of each version at 1M
  parameters (4 tensors) and ``torch.optim.Adam(foreach=True)``, one ``step()`` of each per
  round (median after warm-up); and, in a fresh process per version, the peak memory the
  optimizer adds (rise of the peak resident set size, per parameter).
- A profile of the current implementation: the operations that take the most time in an epoch
  of the quadratic preset and in a 1M-parameter step (torch.profiler, self CPU time).

Writes benchmarks/speed/results/speed-versus.{json,md}. Needs the git history (commit 1fba373).

    python -m benchmarks.speed.versus [--scale 1] [--note "..."]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, results_dir, write_result
from benchmarks.speed.run import _proc_status

REFERENCE = "1fba373"
MODULES = ("config", "runs", "meta.train")  # what building a trainer takes
PRESETS = {  # preset: epochs timed of each version
    "quadratic-paper": 100,
    "mnist": 12,
    "conv": 6,
}


def extract(commit: str, into: Path) -> Path:
    """commit's src/ and configs/ under ``into``."""
    archive = subprocess.run(
        ["git", "archive", commit, "src", "configs"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_worker(src: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed.versus", "--worker", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- the reference, imported beside today's l2o -------------------------------------------------


def import_reference(tree: Path):
    """Commit REFERENCE's package, copied from ``tree`` (an extracted src/) as l2o_1fba373."""
    package = tree / "l2o_1fba373"
    (tree / "l2o").rename(package)
    pattern = re.compile(r"\b(from|import) l2o\b")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(r"\1 l2o_1fba373", path.read_text()))
    # imported from its folder as a package (its submodules found through its __path__)
    spec = importlib.util.spec_from_file_location(
        package.name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package.name] = module
    spec.loader.exec_module(module)
    return module


def trainer(package, config_path: Path, run_dir: Path):
    """A version's MetaTrainer on a preset, as its ``l2o train`` builds it."""
    modules = {m: importlib.import_module(f"{package.__name__}.{m}") for m in MODULES}
    config = modules["config"].load_config(str(config_path))
    optimizer = modules["runs"].build_learned_optimizer(config)
    return modules["meta.train"].MetaTrainer(optimizer, config.task, config.meta, run_dir)


def flush(name: str):
    """Today's run flushes denormals (l2o.devices.flush_denormals); 1fba373's did not."""
    from l2o.devices import flush_denormals

    return flush_denormals() if name == "current" else contextlib.nullcontext()


def time_epochs(versions: dict, configs: dict, epochs: int, tmp: Path) -> dict[str, list[float]]:
    """Seconds of each epoch of each version, one epoch of each in turn."""
    trainers = {
        name: trainer(package, configs[name], tmp / f"run-{name}")
        for name, package in versions.items()
    }
    times: dict[str, list[float]] = {name: [] for name in versions}
    for epoch in range(epochs + 1):  # the first: warm-up
        for name, t in trainers.items():
            start = time.perf_counter()
            with flush(name):
                t.train_epoch(epoch)
            if epoch:
                times[name].append(time.perf_counter() - start)
    return times


def time_steps(versions: dict, n: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each ``step()``: each version's front-end and torch Adam, one each per round."""
    import torch

    sizes = [7 * n // 10 - 100, 100, n - 7 * n // 10 - 10, 10]
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(size, generator=g) for size in sizes]
    grads = [1e-3 * torch.randn(size, generator=g) for size in sizes]

    def params():
        ps = [v.clone().requires_grad_() for v in values]
        for p, grad in zip(ps, grads):
            p.grad = grad.clone()
        return ps

    optimizers = {
        name: importlib.import_module(f"{package.__name__}.optim").LearnedOptimizer(
            params(), package.load("mnist-mlp-lstm")
        )
        for name, package in versions.items()
    }
    optimizers["torch Adam"] = torch.optim.Adam(params(), foreach=True)
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for round_ in range(repeats + 3):  # 3 warm-up rounds
        for name, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    return times


# --- workers: a fresh process with PYTHONPATH set to one tree's src/ ---------------------------


def worker_step(package_name: str, n: int) -> dict:
    """Peak memory of 3 steps of ``LearnedOptimizer(params, "mnist-mlp-lstm")`` at n: the rise
    of this process's peak resident set size (VmHWM, reset first) over the parameters and
    gradients, per parameter; after the same on 1000 parameters, so that one-off allocations
    (thread pools, library workspaces) happen before the measurement."""
    import torch

    torch.set_num_threads(1)
    package = importlib.import_module(package_name)
    optim = importlib.import_module(f"{package_name}.optim")
    name = "mnist-mlp-lstm"

    def params(size: int) -> list:
        sizes = [7 * size // 10 - 100, 100, size - 7 * size // 10 - 10, 10]
        g = torch.Generator().manual_seed(0)
        ps = [torch.randn(s, generator=g).requires_grad_() for s in sizes]
        for p in ps:
            p.grad = 1e-3 * torch.randn(p.shape, generator=g)
        return ps

    warm = optim.LearnedOptimizer(params(1000), package.load(name))
    for _ in range(3):
        warm.step()
    del warm
    ps = params(n)
    base = _proc_status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set size (Linux >= 4.0)
    opt = optim.LearnedOptimizer(ps, package.load(name))
    for _ in range(3):
        opt.step()
    return {"peak_bytes_per_param": (_proc_status("VmHWM:") - base) / n}


def worker_profile(config: str, n: int) -> dict:
    """Top operations by self CPU time: 3 epochs of ``config`` (after one), one step at n."""
    import torch
    from torch.profiler import profile

    import l2o
    from l2o.config import load_config
    from l2o.devices import flush_denormals
    from l2o.meta import init_unroll
    from l2o.optim import LearnedOptimizer
    from l2o.optimizers import CoordinatewiseLSTM

    torch.set_num_threads(1)
    cfg = load_config(config)
    opt = CoordinatewiseLSTM(cfg.optimizer)
    estimator = cfg.meta.objective.make_estimator()
    weights = cfg.meta.objective.truncation_weights()

    def epoch(seed: int) -> None:
        task = cfg.task.sample(seed)
        state = init_unroll(task, opt)
        for w in weights:
            state = estimator.meta_gradient(opt, task, state, w).state

    def top(prof, rows: int = 8) -> list[dict]:
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        return [
            {"op": e.key, "calls": e.count, "share": e.self_cpu_time_total / total}
            for e in events[:rows]
        ]

    with flush_denormals():
        epoch(0)
        with profile() as prof:
            for seed in range(1, 4):
                epoch(seed)
    sizes = [7 * n // 10, n - 7 * n // 10]
    params = [torch.randn(s).requires_grad_() for s in sizes]
    for p in params:
        p.grad = 1e-3 * torch.randn_like(p)
    learned = LearnedOptimizer(params, l2o.load("mnist-mlp-lstm"))
    for _ in range(3):
        learned.step()
    with profile() as step_prof:
        learned.step()
    return {"epoch": top(prof), "step": top(step_prof)}


# --- the benchmark -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=9, help="timed steps of each")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--scale", type=float, default=1.0, help="times the epochs of PRESETS")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", default=str(results_dir("speed")))
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "step":
            result = worker_step(rest[0], int(rest[1]))
        else:
            result = worker_profile(rest[0], int(rest[1]))
        print(json.dumps(result))
        return

    import torch

    import l2o

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tree = extract(REFERENCE, Path(tmp))
        versions = {REFERENCE: import_reference(tree / "src"), "current": l2o}
        folders = {REFERENCE: tree / "configs", "current": ROOT / "configs"}
        presets = [p for p in args.presets.split(",") if p]
        epochs = {}
        for preset in presets:
            configs = {name: folder / f"{preset}.toml" for name, folder in folders.items()}
            count = max(2, round(PRESETS[preset] * args.scale))
            epochs[preset] = time_epochs(versions, configs, count, Path(tmp) / preset)
            medians = {k: statistics.median(v) for k, v in epochs[preset].items()}
            print(preset, {k: f"{v * 1000:.1f} ms" for k, v in medians.items()}, flush=True)
        steps = time_steps(versions, args.params, args.repeats)
        print({k: f"{statistics.median(v) * 1000:.2f} ms" for k, v in steps.items()}, flush=True)
        peaks = {
            REFERENCE: run_worker(tree / "src", ["step", "l2o_1fba373", str(args.params)]),
            "current": run_worker(ROOT / "src", ["step", "l2o", str(args.params)]),
        }
    profile = run_worker(
        ROOT / "src", ["profile", str(ROOT / "configs" / "quadratic-paper.toml"), str(args.params)]
    )

    rows = []
    for preset in presets:
        ref = statistics.median(epochs[preset][REFERENCE])
        cur = statistics.median(epochs[preset]["current"])
        rows.append({"preset": preset, "reference_s": ref, "current_s": cur, "speedup": ref / cur})
    adam = statistics.median(steps["torch Adam"])
    step_rows = [
        {
            "implementation": name,
            "step_s": statistics.median(steps[name]),
            "times_adam": statistics.median(steps[name]) / adam,
            "peak_bytes_per_param": peaks[name]["peak_bytes_per_param"],
        }
        for name in versions
    ]
    lines = [
        f"# Speed: today's implementation against commit {REFERENCE}'s, side by side",
        "",
        "Meta-training, seconds per epoch: median over the epochs after one warm-up, each "
        "version's MetaTrainer taking one epoch in turn in the same process (one torch thread; "
        "a freshly initialised optimizer, as a run starts):",
        "",
        f"| preset | epochs | {REFERENCE} (s/epoch) | current (s/epoch) | speedup |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {len(epochs[r['preset']]['current'])} | {r['reference_s']:.3f} | "
            f"{r['current_s']:.3f} | {r['speedup']:.2f}x |"
        )
    lines += [
        "",
        f'One `step()` of `LearnedOptimizer(params, "mnist-mlp-lstm")` at {args.params:,} '
        "parameters, each version's and `torch.optim.Adam(foreach=True)` in turn in the same "
        f"process (median of {args.repeats}, after 3 warm-up rounds; torch Adam "
        f"{adam * 1000:.2f} ms); peak: in a fresh process per version, the rise of the peak "
        "resident set size over the parameters and gradients, per parameter:",
        "",
        "| implementation | step (ms) | x torch Adam | peak (B/param) |",
        "|---|---:|---:|---:|",
    ]
    for r in step_rows:
        lines.append(
            f"| {r['implementation']} | {r['step_s'] * 1000:.1f} | {r['times_adam']:.0f} | "
            f"{r['peak_bytes_per_param']:.0f} |"
        )
    steps_title = f"a {args.params:,}-parameter step"
    for name, title in (("epoch", "an epoch of quadratic-paper"), ("step", steps_title)):
        lines += ["", f"Where the time goes now, {title} (torch.profiler, self CPU time):", ""]
        lines += ["| operation | calls | share |", "|---|---:|---:|"]
        lines += [f"| {e['op']} | {e['calls']} | {e['share']:.0%} |" for e in profile[name]]
    result = {
        "reference": REFERENCE,
        "epochs": epochs,
        "meta_training": rows,
        "steps": steps,
        "step": step_rows,
        "peaks": peaks,
        "profile": profile,
        "note": args.note or "(no note)",
        "machine": machine(),
    }
    write_result(args.out, "speed-versus", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
