"""Fault injection: SIGKILL a meta-training run at random moments, resume it each time, and
get exactly what an uninterrupted run gives (docs/reliability.md)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

KILLS = 20
EPOCHS = 90
ARGS = [
    "--set", "task.num_problems=8",
    "--set", f"meta.epochs={EPOCHS}",
    "--set", "meta.horizon=10",
    "--set", "meta.truncation=5",
    "--set", "meta.validate_every=1",  # a checkpoint every epoch: kills land in writes too
    "--set", "meta.validation_tasks=1",
    "--quiet",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _command(run: Path) -> list[str]:
    resume = ["--resume"] if (run / "config.toml").exists() else []
    return [sys.executable, "-m", "l2o", "train", "--run-dir", str(run), *ARGS, *resume]


def _wait_for_an_epoch(metrics: Path, process: subprocess.Popen, timeout: float = 30) -> None:
    """Return once ``metrics`` has grown (an epoch ended) or the process has exited."""
    size = metrics.stat().st_size if metrics.exists() else 0
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if metrics.exists() and metrics.stat().st_size > size:
            return
        time.sleep(0.01)


def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"{name}.safetensors"))


def _steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()  # applies the purge that a resumed run's SummaryWriter(purge_step=) asks for
    return [e.step for e in events.Scalars(tag)]


def test_random_sigkills_then_resume_give_the_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), env=ENV, check=True, timeout=300)

    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    while kills < KILLS:
        process = subprocess.Popen(_command(run), env=ENV, stderr=subprocess.PIPE)
        if rng.random() < 0.2:  # while Python starts, or the run directory is being set up
            time.sleep(rng.uniform(0.0, 3.0))
        else:  # while it meta-trains: after its next epoch, within about two more
            _wait_for_an_epoch(run / "metrics.jsonl", process)
            time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is not None:  # finished (or failed) before the kill
            assert process.returncode == 0, process.stderr.read().decode()
            run_done = True
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    else:
        run_done = False
    if not run_done:
        finished = subprocess.run(_command(run), env=ENV, capture_output=True, timeout=300)
        assert finished.returncode == 0, finished.stderr.decode()
    assert kills >= KILLS, f"only {kills} kills landed before the run finished"

    for name in ("last", "best"):
        ours, theirs = _weights(run, name), _weights(reference, name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}: {key} differs"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(EPOCHS))
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    expected = list(range(1, EPOCHS + 1))
    assert _steps(run, "meta/loss") == expected
    assert _steps(run, "validation/final_loss") == expected
