"""Shared helpers of the benchmark scripts: where results go, machine description, result files."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import l2o
from l2o.checkpoint import atomic_write_text
from l2o.evaluate import rollout, write_json

ROOT = Path(__file__).resolve().parent.parent  # the repository


def results_dir(experiment: str) -> Path:
    """benchmarks/<experiment>/results: where an experiment's result files are written."""
    return ROOT / "benchmarks" / experiment / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "l2o": l2o.__version__,
        "git_commit": commit or None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
    }


def machine_markdown(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU used"
    return (
        f"Measured on {m['cpu']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}{gpu}), "
        f"Python {m['python']}, torch {m['torch']}, l2o {m['l2o']} (commit {m['git_commit']}), "
        f"{m['date']}.\n\nCommand:\n\n```\n{m['command']}\n```\n"
    )


def ratio_precision(
    learned: torch.Tensor, baseline: torch.Tensor, block: int, draws: int, seed: int = 0
) -> dict[str, Any]:
    """How precise mean(learned) / mean(baseline) is, from the final losses of the same runs:
    the ratio over all runs, a bootstrap 95% interval (runs resampled in pairs, ``draws``
    resamples) and the ratio of each consecutive block of ``block`` runs."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(learned), (draws, len(learned)), generator=g)
    boot = learned[index].mean(1) / baseline[index].mean(1)
    return {
        "ratio": float(learned.mean() / baseline.mean()),
        "ratio_95_interval": [float(boot.quantile(0.025)), float(boot.quantile(0.975))],
        "ratio_per_block": [
            float(learned[i : i + block].mean() / baseline[i : i + block].mean())
            for i in range(0, len(learned), block)
        ],
    }


def loss_curves(optimizer, tasks: list, steps: int) -> torch.Tensor:
    """f(theta_t) for t = 0..steps of every problem of ``tasks``, float64, shape (steps + 1,
    problems, the tasks' concatenated), each task from a fresh optimizer state."""
    return torch.cat(
        [rollout(optimizer, t, steps).losses.double().reshape(steps + 1, -1) for t in tasks], 1
    )


def final_losses(optimizers: dict[str, Any], tasks: list, steps: int) -> dict[str, torch.Tensor]:
    """f(theta_steps) of every problem of ``tasks`` (concatenated, float64) for each optimizer,
    each run from a fresh state on the same tasks."""
    return {label: loss_curves(opt, tasks, steps)[-1] for label, opt in optimizers.items()}


def write_result(out: str | Path, name: str, result: dict[str, Any], lines: list[str]) -> None:
    """Write ``result`` (with its "note" and "machine") to <out>/<name>.json, and the markdown
    ``lines`` followed by the note and the machine to <out>/<name>.md, which it also prints."""
    out = Path(out)
    write_json(out / f"{name}.json", result)
    lines = [*lines, "", result["note"], "", machine_markdown(result["machine"])]
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print((out / f"{name}.md").read_text())
