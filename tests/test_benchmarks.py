"""The benchmark tools end to end on tiny IDX files (benchmarks/tools/checkpoints.py,
headroom.py, meta_runs.py: what they write, and their errors; benchmarks/conv/run.py), run as
modules from the repository root as benchmarks/README.md says; and the layout of benchmarks/
(a package, one naming scheme for result files, an index that lists them all)."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2o.data import write_idx

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 32)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    return root


def run_module(module, *args, timeout=300):
    """``python -m <module> <args>`` from the repository root."""
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def run_script(module, idx_dir, out, name, steps, *args):
    """A benchmark tool on the tiny IDX files: 3 runs in tasks of 2 nets, batches of 16."""
    return run_module(
        module,
        *args,
        *("--set", f"task.data_dir={json.dumps(str(idx_dir))}", "--set", "task.batch_size=16"),
        *("--runs", "3", "--problems-per-task", "2", "--steps", str(steps)),
        *("--out", str(out), "--name", name),
    )


def run(idx_dir, out, *args):
    return run_script("benchmarks.tools.checkpoints", idx_dir, out, "side-by-side", 6, *args)


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


def run_headroom(idx_dir, out, *args):
    config = ("--config", str(ROOT / "configs" / "mnist.toml"), "--tune-runs", "2")
    return run_script("benchmarks.tools.headroom", idx_dir, out, "headroom", 5, *config, *args)


def test_headroom_steps_and_per_tensor_rates(idx_dir, tmp_path):
    done = run_headroom(
        idx_dir,
        tmp_path,
        "--long-steps",
        "40",
        "--adam-lr",
        "0.03",
        "--nag-lr",
        "0.3",
        "--window",
        "3",
        "--target",
        "0.95",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "headroom.json").read_text())
    assert result["lrs"] == {"adam": 0.03, "nag": 0.3}

    # the step each reaches 0.95 x Adam's loss at step 5, recomputed from the mean curves
    def smooth(curve, t):
        window = curve[max(0, t - 1) : t + 2]
        return sum(window) / len(window)

    adam = result["mean_curves"]["adam"]
    goal = 0.95 * smooth(adam, 5)
    for name, curve in result["mean_curves"].items():
        assert len(curve) == 41
        hits = [t for t in range(41) if smooth(curve, t) <= goal * (1 + 1e-9)]
        assert hits and result["reach_step"][name] == hits[0]
    # coordinate descent keeps the best trial
    best = min(result["search"], key=lambda trial: trial["validation"])
    assert result["multipliers"] == best["multipliers"]
    assert set(result["multipliers"]) == {
        "layers.0.weight",
        "layers.0.bias",
        "layers.2.weight",
        "layers.2.bias",
    }
    rows = {row["optimizer"]: row for row in result["rows"]}
    assert rows["adam"]["ratio"] == 1.0
    assert rows["adam"]["loss_at_T"] == pytest.approx(adam[5], rel=1e-6)
    md = (tmp_path / "headroom.md").read_text()
    assert "| per-tensor adam |" in md and "![mean loss curves](headroom.png)" in md
    assert (tmp_path / "headroom.png").read_bytes()[:4] == b"\x89PNG"


def test_per_tensor_adam_at_x1_is_adam(idx_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.common import loss_curves as curves
    from benchmarks.tools.headroom import per_tensor_adam

    from l2o.config import load_config
    from l2o.meta.seeds import task_seed
    from l2o.optimizers import Adam

    config = load_config(
        ROOT / "configs" / "mnist.toml",
        [f"task.data_dir={json.dumps(str(idx_dir))}", "task.batch_size=16"],
    )
    task = config.task.sample(task_seed("test", 0))
    names = task.param_names
    adam = curves(Adam(0.01), [task], 4)
    assert curves(per_tensor_adam(0.01, names, dict.fromkeys(names, 1.0)), [task], 4).equal(adam)
    faster = dict.fromkeys(names, 1.0) | {"layers.0.weight": 3.0}
    assert not curves(per_tensor_adam(0.01, names, faster), [task], 4).equal(adam)


def test_headroom_bad_arguments_are_one_line_errors(idx_dir, tmp_path):
    short = run_headroom(
        idx_dir, tmp_path, "--long-steps", "5", "--adam-lr", "0.03", "--nag-lr", "0.3"
    )
    assert short.returncode == 2 and "--long-steps must be > --steps (5), got 5" in short.stderr
    negative = run_headroom(idx_dir, tmp_path, "--adam-lr", "-1", "--nag-lr", "0.3")
    assert (
        negative.returncode == 2
        and "learning rates must be > 0, got {'adam': -1.0}" in negative.stderr
    )
    untuned = run_headroom(idx_dir, tmp_path, "--adam-lr", "0.03")
    assert untuned.returncode == 2 and "tuned ['nag'] for no setting" in untuned.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def write_metrics(run_dir, scores, epochs):
    """A run directory whose metrics.jsonl validated at the epochs of ``scores`` (1-based)."""
    run_dir.mkdir(parents=True)
    lines = []
    for epoch in range(epochs):
        entry = {"epoch": epoch, "meta_loss": 1.0, "seconds": 3.0 * (epoch + 1)}
        if epoch + 1 in scores:
            entry["validation_final_loss"] = scores[epoch + 1]
        lines.append(json.dumps(entry))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def run_meta_runs(tmp_path, *args):
    out = ("--out", str(tmp_path / "out"), "--name", "v")
    return run_module("benchmarks.tools.meta_runs", *args, *out, timeout=120)


def test_meta_runs_puts_validations_side_by_side(tmp_path):
    a = write_metrics(tmp_path / "a", {2: 0.5, 4: 0.3, 6: 0.4}, 6)
    b = write_metrics(tmp_path / "b", {2: 0.6, 4: 0.7}, 5)  # stopped early
    done = run_meta_runs(tmp_path, f"preset={a}", f"variant={b}", "--note", "two runs")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "v.json").read_text())
    assert result["runs"]["preset"]["best_epoch"] == 4
    assert result["runs"]["preset"]["best_validation"] == 0.3
    assert result["runs"]["variant"]["epochs"] == 5
    assert result["runs"]["variant"]["seconds"] == 15.0
    md = (tmp_path / "out" / "v.md").read_text()
    assert "| 4 | **0.3000** | 0.7000 |" in md
    assert "| 6 | 0.4000 | - |" in md
    assert "| variant | " in md and "two runs" in md
    assert (tmp_path / "out" / "v.png").stat().st_size > 0


def test_meta_runs_errors_are_one_line(tmp_path):
    a = write_metrics(tmp_path / "a", {2: 0.5}, 2)
    empty = write_metrics(tmp_path / "empty", {}, 1)
    damaged = write_metrics(tmp_path / "damaged", {2: 0.5}, 2)
    (damaged / "metrics.jsonl").write_text('{"epoch": 0,, "x": 1}\n{"epoch": 1}\n')
    for args, message in [
        ((f"{tmp_path / 'nowhere'}",), "is not LABEL=RUN_DIR"),
        ((f"x={tmp_path / 'nowhere'}",), "no metrics.jsonl in"),
        ((f"x={a}", f"x={a}"), "label 'x' given twice"),
        ((f"x={empty}",), "holds no validation"),
        ((f"x={damaged}",), "line 1 is not valid JSON"),
    ]:
        done = run_meta_runs(tmp_path, *args)
        assert done.returncode != 0
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_meta_runs_without_out_needs_the_runs_task(tmp_path):
    # --out defaults to benchmarks/<task>/results, the task read from the run's config.toml
    a = write_metrics(tmp_path / "a", {2: 0.5}, 2)
    done = run_module("benchmarks.tools.meta_runs", f"x={a}", "--name", "v", timeout=120)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "config.toml" in done.stderr and "give --out" in done.stderr
    (a / "config.toml").write_text("[meta]\nepochs = 2\n")
    done = run_module("benchmarks.tools.meta_runs", f"x={a}", "--name", "v", timeout=120)
    assert done.returncode != 0 and "names no task; give --out" in done.stderr


CONV_FIGURE = """
[evaluate]
test_runs = 4
validation_runs = 2
problems_per_task = 2
baselines = ["nag", "adam"]
lr_grid = [1e-2, 1.0, 1]

[[setting]]
name = "all-labels"
title = "all labels"
steps = 3
task = { classes = [] }

[[setting]]
name = "2-labels"
title = "labels 0-1"
steps = 3
task = { classes = [0, 1] }
"""


def test_conv_benchmark_end_to_end(idx_dir, tmp_path, monkeypatch):
    """benchmarks/conv/run.py meta-trains tiny variants, then evaluates every setting with the
    library's l2o.evaluate.figures.evaluate_setting; a non-finite test metric is a dash."""
    figure = tmp_path / "figure.toml"
    figure.write_text(CONV_FIGURE)
    out = tmp_path / "out"
    tiny = [
        "task.batch_size=16", "task.channels=[4, 4, 4]", "task.hidden_sizes=[8]",
        "meta.epochs=1", "meta.horizon=2", "meta.truncation=2", "meta.validate_every=1",
        "meta.validation_tasks=1",
    ]  # fmt: skip
    done = run_module(
        "benchmarks.conv.run",
        *("--datasets", "fashion-mnist", "--variants", "lstm,lstm-sub"),
        *("--figure", str(figure), "--data-dir", str(idx_dir)),
        *("--run-dir", str(tmp_path / "runs"), "--out", str(out)),
        *[arg for override in tiny for arg in ("--set", override)],
    )
    assert done.returncode == 0, done.stderr
    assert "[fashion-mnist] [2-labels] evaluating lstm-sub on 2 test tasks" in done.stdout
    report = json.loads((out / "conv.json").read_text())
    result = report["datasets"]["fashion-mnist"]
    assert list(result["training"]) == ["lstm", "lstm-sub"]
    assert list(result["settings"]) == ["all-labels", "2-labels"]
    for name, setting in result["settings"].items():
        assert setting["setting"]["name"] == name and setting["runs"] == 4
        assert list(setting["optimizers"]) == ["lstm", "lstm-sub", "nag", "adam"]
        adam = setting["optimizers"]["adam"]["final_loss_mean"]
        for label in ("lstm", "lstm-sub"):
            o = setting["optimizers"][label]
            assert setting["over_adam"][label] == pytest.approx(o["final_loss_mean"] / adam)
        for o in setting["optimizers"].values():
            assert 0 <= o["test_accuracy_mean"] <= 1 and o["test_loss_mean"] > 0
        assert (out / f"conv-fashion-mnist-{name}.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "conv.md").read_text()
    assert "| lstm-sub | " in md and "![2-labels](conv-fashion-mnist-2-labels.png)" in md

    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.conv.run import markdown

    result["settings"]["2-labels"]["optimizers"]["nag"]["test_loss_mean"] = None
    result["settings"]["2-labels"]["optimizers"]["nag"]["test_accuracy_mean"] = None
    row = next(line for line in markdown(report).splitlines()[::-1] if line.startswith("| nag"))
    assert row.split(" | ")[5:7] == ["-", "-"]


SCRIPTS = sorted(p for p in BENCHMARKS.rglob("*.py") if "results" not in p.parts)
EXPERIMENTS = sorted(p.parent.name for p in BENCHMARKS.glob("*/run.py"))


def test_benchmarks_is_a_package_of_modules_without_path_hacks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    assert EXPERIMENTS == [
        "art", "conv", "coupling", "distributed", "estimators", "generalist", "mnist", "quadratic",
        "speed",
    ]  # fmt: skip
    for path in SCRIPTS:
        assert (path.parent / "__init__.py").is_file(), path
        assert "sys.path" not in path.read_text(), path
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        importlib.import_module(module.removesuffix(".__init__"))


def test_result_files_follow_one_naming_scheme_and_are_indexed():
    readme = (BENCHMARKS / "README.md").read_text()
    results = sorted(p for p in BENCHMARKS.rglob("results/*") if p.is_file())
    assert len(results) > 100
    for path in results:
        experiment = path.parent.parent.name
        # benchmarks/<experiment>/results/<experiment>[-<variant>].{json,md,png}
        assert path.parent.parent.parent == BENCHMARKS and experiment in EXPERIMENTS, path
        assert re.fullmatch(rf"{experiment}(-[a-z0-9.-]+)?\.(json|md|png)", path.name), path
        if path.suffix == ".png":  # a figure of a report in the same folder
            assert any(f"]({path.name})" in md.read_text() for md in path.parent.glob("*.md"))
        else:  # every report is a pair, listed in the index
            assert path.with_suffix(".json" if path.suffix == ".md" else ".md").is_file(), path
        if path.suffix == ".md":
            assert f"({path.relative_to(BENCHMARKS)})" in readme, f"{path} not in the index"
