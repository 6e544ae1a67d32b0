"""benchmarks/coupling/run.py end to end on tiny runs: two-epoch meta-trainings of the LSTM+GAC
and NTM-BFGS presets, then the comparison on small quadratics (what it writes, every optimizer
on the same functions, the classical methods within the evaluation budget)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from l2o import pretrained
from l2o.config import load_config
from l2o.runs import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["meta.epochs=2", "meta.validate_every=1", "meta.validation_tasks=1", "task.num_problems=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for preset in ("quadratic-gac", "quadratic-ntm-bfgs"):
        config = load_config(ROOT / "configs" / f"{preset}.toml", TINY)
        train(config, root / preset, force=True, quiet=True, tensorboard=False)
    return root


def run(runs, out, *args):
    command = [
        sys.executable, "-m", "benchmarks.coupling.run",
        "--gac-run", str(runs / "quadratic-gac"), "--ntm-run", str(runs / "quadratic-ntm-bfgs"),
        "--dims", "3,5", "--steps", "8", "--problems", "4", "--test-tasks", "2",
        "--validation-tasks", "1", "--out", str(out), "--name", "coupling-tiny",
        *[a for s in TINY for a in ("--set", s)], *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_compares_every_optimizer_on_the_same_functions(runs, tmp_path):
    shipped = pretrained.names()
    done = run(runs, tmp_path, "--note", "a tiny test", "--ship")
    assert done.returncode == 0, done.stderr
    # two epochs of meta-training do not beat quadratic-lstm: nothing is shipped
    assert "not shipped: " in done.stdout and pretrained.names() == shipped
    result = json.loads((tmp_path / "coupling-tiny.json").read_text())
    assert set(result["settings"]) == {"3d", "5d"} and result["reference"] == "quadratic-lstm"
    expected = {"quadratic-lstm", "lstm-gac", "ntm-bfgs", "adam", "nag", "lbfgs"}
    expected |= {"lbfgs-wolfe", "cg"}
    for label, entry in result["settings"].items():
        assert f"{entry['task']['dim']}d" == label and entry["runs"] == 8 and entry["steps"] == 8
        optimizers = entry["optimizers"]
        assert set(optimizers) == expected
        # the same initial points: every curve starts at the same mean f(theta_0)
        starts = {round(s["curve_mean"][0], 4) for s in optimizers.values()}
        assert len(starts) == 1
        for name, s in optimizers.items():
            assert len(s["curve_mean"]) == 9
            low, high = s["final_loss_95_interval"]
            assert low <= s["final_loss_mean"] <= high
            assert s["ratio_to_reference"]["ratio"] == pytest.approx(
                s["final_loss_mean"] / optimizers["quadratic-lstm"]["final_loss_mean"]
            )
            assert (s["lr"] is not None) == (name in ("adam", "nag", "lbfgs"))
        assert optimizers["cg"]["iterations_min_max"] == [4, 4]  # 8 evaluations, 2 each
        assert optimizers["lbfgs-wolfe"]["iterations_mean"] <= 8
        assert optimizers["adam"]["ratio_to_adam"]["ratio"] == 1.0
    for name in ("lstm-gac", "ntm-bfgs"):
        assert result["meta_training"][name]["epochs"] == 2
        assert result["meta_training"][name]["seconds"] > 0
    assert result["meta_training"]["quadratic-lstm"]["epochs"] == 4000  # its record's
    assert result["headline"]["best_coupled"] in ("lstm-gac", "ntm-bfgs")
    assert result["headline"]["setting"] == "3d"
    md = (tmp_path / "coupling-tiny.md").read_text()
    assert "a tiny test" in md and "](coupling-tiny-3d.png)" in md and "Command:" in md
    assert "| lbfgs-wolfe |" in md and "/ quadratic-lstm" in md
    assert (tmp_path / "coupling-tiny-3d.png").is_file()
    assert (tmp_path / "coupling-tiny-5d.png").is_file()


def test_refuses_a_run_of_another_configuration(runs, tmp_path):
    done = run(runs, tmp_path, "--set", "meta.epochs=3")
    assert done.returncode != 0
    assert "trained with another configuration" in done.stderr
