"""benchmarks/checkpoints.py end to end on tiny IDX files: what it writes, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2o.data import write_idx

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "checkpoints.py"


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 32)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    return root


def run(idx_dir, out, *args):
    command = [
        sys.executable,
        str(SCRIPT),
        *args,
        "--set",
        f"task.data_dir={json.dumps(str(idx_dir))}",
        "--set",
        "task.batch_size=16",
        "--runs",
        "3",
        "--problems-per-task",
        "2",
        "--steps",
        "6",
        "--out",
        str(out),
        "--name",
        "side-by-side",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_compares_checkpoints_and_baselines_in_steps(idx_dir, tmp_path):
    done = run(idx_dir, tmp_path, "shipped=mnist-mlp-lstm", "--adam-lr", "0.01")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "side-by-side.json").read_text())
    assert result["runs"] == 4  # 3 runs asked, in tasks of 2 problems
    shipped, adam = result["optimizers"]["shipped"], result["optimizers"]["adam"]
    assert adam["lr"] == 0.01 and shipped["lr"] is None
    assert adam["ratio"] == 1.0 and adam["mean_loss_over_steps_ratio"] == 1.0
    for row in (shipped, adam):
        curve = row["curve_mean"]
        assert len(curve) == 7 and len(row["curve_q25"]) == 7
        # the mean over steps 1..T of the mean curve is the mean of the per-run averages
        assert row["mean_loss_over_steps"] == pytest.approx(sum(curve[1:]) / 6, rel=1e-6)
        assert row["final_loss_mean"] == pytest.approx(curve[-1], rel=1e-6)
    assert shipped["ratio"] == pytest.approx(shipped["final_loss_mean"] / adam["final_loss_mean"])
    names = ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert list(result["initial_weight_norms_mean"]) == names
    for row in (shipped, adam):
        assert list(row["weight_norms_mean"]) == names
        # 6 steps move theta away from theta_0
        assert row["weight_norms_mean"] != result["initial_weight_norms_mean"]
    md = (tmp_path / "side-by-side.md").read_text()
    assert "| parameter | step 0 | shipped | adam |" in md
    assert "| shipped | mnist-mlp-lstm |" in md and "![loss curves](side-by-side.png)" in md
    assert (tmp_path / "side-by-side.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_are_one_line_errors(idx_dir, tmp_path):
    untuned = run(idx_dir, tmp_path, "a=mnist-mlp-lstm", "--adam-lr", "0.01", "--baselines", "nag")
    assert untuned.returncode == 2
    assert "tuned ['nag'] for no setting" in untuned.stderr
    unknown = run(idx_dir, tmp_path, "a=mnist-mlp-lstm", "--adam-lr", "0.01", "--baselines", "x")
    assert unknown.returncode == 2 and "unknown --baselines ['x']" in unknown.stderr
    clash = run(idx_dir, tmp_path, "adam=mnist-mlp-lstm", "--adam-lr", "0.01")
    assert clash.returncode == 2 and "checkpoint labels ['adam']" in clash.stderr
    assert not list(tmp_path.iterdir())  # nothing written
