"""benchmarks/art/run.py end to end on a tiny setting (16x16 images, 4 steps): the baselines
alone with their floor runs, then a learned optimizer against them re-using their tuned runs
(what it writes, every optimizer on the same images, f* below every run), and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from l2o import pretrained

pytest.importorskip("skimage")  # the default content and style pictures

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--set", "task.size=16", "--settings", "64x64,new-style", "--test-runs", "4",
    "--validation-runs", "2", "--problems-per-task", "2", "--steps", "4", "--lr-span", "0.5",
    "--per-decade", "2", "--image-steps", "2,4",
]  # fmt: skip


def run(out, *args):
    command = [sys.executable, "-m", "benchmarks.art.run", *TINY, "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    done = run(out, "--floor-steps", "8", "--floor-settings", "64x64", "--note", "a tiny test")
    assert done.returncode == 0, done.stderr
    return out


def test_baselines_alone_with_their_floor(baselines):
    result = json.loads((baselines / "art-baselines.json").read_text())
    assert result["lstm"] is None and result["note"] == "a tiny test"
    assert set(result["settings"]) == {"64x64", "new-style"}
    for entry in result["settings"].values():
        assert entry["runs"] == 4 and entry["steps"] == 4 and entry["task"]["size"] == [16, 16]
        assert set(entry["optimizers"]) == {"sgd", "nag", "rmsprop", "adam"}
        starts = {round(s["curve_mean"][0], 5) for s in entry["optimizers"].values()}
        assert len(starts) == 1  # the same images and theta_0 for every optimizer
        for s in entry["optimizers"].values():
            assert s["lr"] > 0 and len(s["final_losses"]) == 4 and len(s["curve_mean"]) == 5
            low, high = s["final_loss_interval"]
            assert low <= s["final_loss_mean"] <= high
        assert entry["optimizers"]["adam"]["over_adam"]["ratio"] == 1.0
    floor = result["settings"]["64x64"]
    assert floor["floor"]["steps"] == 8 and result["settings"]["new-style"]["floor"] is None
    for s in floor["optimizers"].values():
        assert all(f <= x for f, x in zip(floor["fstar"], s["final_losses"]))
        assert s["excess_mean"] >= 0 and 0 <= s["gap_left"] <= 1
    md = (baselines / "art-baselines.md").read_text()
    assert "a tiny test" in md and "excess / Adam's" in md
    for figure in ("64x64", "floor-64x64", "images-64x64", "new-style", "images-new-style"):
        assert f"](art-baselines-{figure}.png)" in md
        assert (baselines / f"art-baselines-{figure}.png").read_bytes().startswith(b"\x89PNG")


def test_a_learned_optimizer_against_the_baselines_it_reuses(baselines, tmp_path):
    shipped = pretrained.names()
    done = run(
        tmp_path, "--lstm", "quadratic-lstm", "--baselines-from",
        str(baselines / "art-baselines.json"), "--ship", "--floor-steps", "6",
        "--floor-settings", "new-style",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the quadratics' LSTM does not beat tuned Adam here: nothing is shipped
    assert "not shipped: " in done.stdout and pretrained.names() == shipped
    before = json.loads((baselines / "art-baselines.json").read_text())["settings"]
    result = json.loads((tmp_path / "art.json").read_text())
    assert result["lstm"]["path"] == "quadratic-lstm"
    for name, entry in result["settings"].items():
        lstm, adam = entry["optimizers"]["lstm"], entry["optimizers"]["adam"]
        assert adam["final_losses"] == before[name]["optimizers"]["adam"]["final_losses"]
        assert lstm["curve_mean"][0] == pytest.approx(adam["curve_mean"][0])
        ratio = lstm["over_adam"]["ratio"]
        assert ratio == pytest.approx(lstm["final_loss_mean"] / adam["final_loss_mean"])
    floor = result["settings"]["64x64"]
    assert all(f <= x for f, x in zip(floor["fstar"], floor["optimizers"]["lstm"]["curve_min"]))
    assert "excess_over_adam" in floor["optimizers"]["lstm"]
    # the floor runs of the file are kept; where it had none, they run at its tuned rates
    assert floor["floor"] == before["64x64"]["floor"]
    new = result["settings"]["new-style"]["floor"]
    assert new["steps"] == 6
    for name, runs in new["optimizers"].items():
        assert runs["lr"] == before["new-style"]["optimizers"][name]["lr"]
    assert "LSTM / tuned Adam at step 4" in (tmp_path / "art.md").read_text()


def test_errors_are_one_line(baselines, tmp_path):
    done = run(tmp_path, "--settings", "nope")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nope" in done.stderr
    done = run(tmp_path, "--lstm", "no-such-optimizer")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    other = json.loads((baselines / "art-baselines.json").read_text())
    other["settings"]["64x64"]["steps"] = 5
    (tmp_path / "other.json").write_text(json.dumps(other))
    done = run(tmp_path, "--baselines-from", str(tmp_path / "other.json"))
    assert done.returncode == 2 and "steps" in done.stderr


def test_a_diverged_baseline_read_back_is_reported_not_a_crash(baselines, tmp_path):
    # A run that diverged is NaN in memory and None in the result file (JSON has no NaN); a
    # learned optimizer's benchmark reusing that file reports the baseline as diverged.
    result = json.loads((baselines / "art-baselines.json").read_text())
    for setting in result["settings"].values():
        sgd = setting["optimizers"]["sgd"]
        sgd["final_losses"][0] = None
        sgd["curve_min"][0] = None
        sgd["curve_mean"][1:] = [None] * (len(sgd["curve_mean"]) - 1)  # f(theta_0) is finite
        sgd["summed_loss_mean"] = sgd["final_loss_mean"] = None
        if setting["floor"]:
            long = setting["floor"]["optimizers"]["sgd"]
            long["final_losses"][0] = long["curve_min"][0] = long["final_loss_mean"] = None
    (tmp_path / "diverged.json").write_text(json.dumps(result))
    done = run(
        tmp_path, "--lstm", "quadratic-lstm", "--baselines-from", str(tmp_path / "diverged.json")
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "art.json").read_text())
    for setting in report["settings"].values():
        sgd = setting["optimizers"]["sgd"]
        assert sgd["early_over_adam"] is None and sgd["summed_over_adam"] is None
        assert setting["optimizers"]["lstm"]["over_adam"]["ratio"] > 0
    assert "| sgd |" in (tmp_path / "art.md").read_text()
