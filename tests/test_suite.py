"""The held-out suite (l2o.evaluate.suite, l2o.pipelines.suite, ``l2o suite``)."""

import json
import math

import numpy as np
import pytest
import torch

from cli_errors import one_line_error
from l2o.cli import main
from l2o.data import write_idx
from l2o.errors import InvalidInput, L2OError
from l2o.evaluate.compare import Comparison, OptimizerResult
from l2o.evaluate.suite import SUITE, SuiteEntry, select, steps_to_reach, summarize
from l2o.pipelines import suite


def _write_fake_mnist(directory, n_train=64, n_test=16):
    """Tiny IDX files in the real format (random images and labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            directory / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))  # fmt: skip


TINY = [
    SuiteEntry("quad", "quadratic", {"dim": 3, "num_problems": 4}, steps=6, test_tasks=2),
    SuiteEntry(
        "mlp", "mnist",
        {"dataset": "fashion-mnist", "hidden_sizes": [4], "batch_size": 8, "num_problems": 2},
        steps=4, test_tasks=1, validation_tasks=1,
    ),
    SuiteEntry(
        "conv", "conv",
        {"dataset": "fashion-mnist", "channels": [2], "hidden_sizes": [], "batch_size": 8},
        steps=3, test_tasks=1, validation_tasks=1,
    ),
]  # fmt: skip


def test_the_default_suite_has_the_issues_entries():
    by_name = {e.name: e for e in SUITE}
    assert len(by_name) == len(SUITE)
    wanted = {
        ("mnist", (20,), "sigmoid", 100),
        ("mnist", (64, 64), "relu", 1000),
        ("mnist", (20,), "sigmoid", 10000),
    }
    mlps = {
        (e.task, tuple(e.options["hidden_sizes"]), e.options["activation"], e.steps)
        for e in SUITE
        if e.task == "mnist"
    }
    assert wanted <= mlps
    assert {e.steps for e in SUITE if e.task == "conv"} == {100, 1000}
    assert any(e.task == "quadratic" and e.options["dim"] == 10 and e.steps == 100 for e in SUITE)
    for e in SUITE:  # every entry builds its family (no data read)
        assert e.family().name == e.task
        if e.task != "quadratic":
            assert e.options["dataset"] == "fashion-mnist"


def test_entries_are_checked_selected_and_scaled():
    with pytest.raises(InvalidInput, match="Invalid steps of suite entry 'x': 0"):
        SuiteEntry("x", "quadratic", steps=0)
    with pytest.raises(
        InvalidInput, match="unknown suite entry 'nope' \\(valid: quad, mlp, conv\\)"
    ):
        select(["nope"], TINY)
    assert [e.name for e in select(["mlp", "quad"], TINY)] == ["mlp", "quad"]
    small = SUITE[-1].scaled(0.01)
    assert (small.steps, small.test_tasks, small.validation_tasks) == (100, 1, 1)
    assert SUITE[0].scaled(0.01).steps == 2  # at least 2 steps
    assert SUITE[0].scaled(1) is SUITE[0]


def test_steps_to_reach():
    assert steps_to_reach([3.0, 2.0, 1.0], 2.0) == 1
    assert steps_to_reach([3.0, 2.0, 1.0], 0.5) is None
    assert steps_to_reach([3.0, math.nan, 1.0], 2.0) == 2
    assert steps_to_reach([3.0, 2.0], math.inf) is None


def _result(name, curves, seconds, lr=None):
    return OptimizerResult(name, torch.tensor(curves, dtype=torch.float32).T, seconds, lr=lr)


def test_summary_ratios_steps_seconds_and_divergence():
    # 2 test tasks of 1 run each, 4 steps: columns are runs.
    results = {
        "lstm": _result("lstm", [[4, 2, 1, 0.5, 0.5], [4, 3, 2, 1, 0.5]], 0.8),
        "adam": _result("adam", [[4, 3, 2, 1.5, 1], [4, 3, 2, 1.5, 1]], 0.4, lr=0.1),
        "nag": _result("nag", [[4, 3, 2, 2, 2], [4, 3, 9, math.inf, math.inf]], 0.4, lr=0.01),
    }
    s = summarize(Comparison({"name": "x"}, 4, 2, 1, results))
    assert s["adam"]["final_loss_mean"] == 1.0 and s["adam"]["final_loss_over_adam"] == 1.0
    assert s["adam"]["steps_to_adam_final"] == 4
    assert s["lstm"]["final_loss_over_adam"] == 0.5
    assert s["lstm"]["steps_to_adam_final"] == 3  # mean curve 4, 2.5, 1.5, 0.75, 0.5
    assert s["lstm"]["seconds_per_step"] == pytest.approx(0.8 / (4 * 2))
    assert s["lstm"]["seconds_to_adam_final"] == pytest.approx(3 * 0.1)
    assert s["nag"]["diverged_runs"] == 1 and s["nag"]["final_loss_mean"] == math.inf
    assert s["nag"]["steps_to_adam_final"] is None and s["nag"]["seconds_to_adam_final"] is None
    assert s["nag"]["curve_mean"][-1] is None and s["nag"]["lr"] == 0.01


def test_the_suite_pipeline_on_tiny_tasks(tmp_path):
    data = tmp_path / "data"
    _write_fake_mnist(data)
    out = tmp_path / "suite"
    report = suite(
        "quadratic-lstm", out, entries=TINY, grid=[1e-2, 1e-1, 1.0], data_dir=data, quiet=True
    )
    for name in ("results.json", "report.md", "suite.png", ".l2o"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["entries"]) == list(report["entries"]) == ["quad", "mlp", "conv"]
    assert saved["entries"]["mlp"]["task"]["data_dir"] == str(data)
    assert saved["entries"]["conv"]["task"]["data_dir"] == str(data)
    for name, entry in saved["entries"].items():
        steps = entry["steps"]
        assert steps == {"quad": 6, "mlp": 4, "conv": 3}[name]
        assert entry["runs"] == {"quad": 8, "mlp": 2, "conv": 1}[name]
        opts = entry["optimizers"]
        assert list(opts) == ["quadratic-lstm", "adam", "nag"]  # a pretrained one by its name
        adam = opts["adam"]["final_loss_mean"]
        assert adam == entry["adam_final_loss"] == opts["adam"]["curve_mean"][-1]
        assert opts["adam"]["lr"] in (1e-2, 1e-1, 1.0) and opts["quadratic-lstm"]["lr"] is None
        for s in opts.values():
            assert len(s["curve_mean"]) == steps + 1
            assert s["final_loss_over_adam"] == pytest.approx(s["final_loss_mean"] / adam)
            reached = [t for t, v in enumerate(s["curve_mean"]) if v is not None and v <= adam]
            assert s["steps_to_adam_final"] == (reached[0] if reached else None)
            if reached:
                assert s["seconds_to_adam_final"] == pytest.approx(
                    reached[0] * s["seconds_per_step"]
                )
            assert s["diverged_runs"] == 0
        assert opts["adam"]["steps_to_adam_final"] <= steps
    table = (out / "report.md").read_text()
    assert "| quad | 6 | 8 | quadratic-lstm |" in table and "![suite](suite.png)" in table


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scale": 0}, "Invalid scale: 0"),
        ({"baselines": ["nag"]}, "must include adam"),
        ({"baselines": ["adam", "adamw"]}, "unknown optimizer 'adamw'"),
        ({"only": ["nope"]}, "unknown suite entry 'nope'"),
        ({"data_dir": "/nonexistent-l2o"}, "data directory /nonexistent-l2o does not exist"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(L2OError, match=message):
        suite("quadratic-lstm", tmp_path / "suite", entries=TINY, quiet=True, **kwargs)
    assert not (tmp_path / "suite").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "suite"
    assert "no checkpoint or pretrained optimizer named 'nope'" in one_line_error(
        capsys, ["suite", "nope", "--out", str(out), "--quick"]
    )
    assert "unknown suite entry 'conv'" in one_line_error(
        capsys, ["suite", "quadratic-lstm", "--only", "conv", "--out", str(out)]
    )
    assert "--quick is --scale 0.01" in one_line_error(
        capsys, ["suite", "quadratic-lstm", "--quick", "--scale", "0.1", "--out", str(out)]
    )
    assert not out.exists()
    assert main(["suite", "--list"]) == 0
    assert "fmnist-mlp20-sigmoid-T10000" in capsys.readouterr().out
    argv = ["suite", "quadratic-lstm", "--only", "quadratic-10d-T100", "--quick", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| quadratic-10d-T100 | 2 | 128 | quadratic-lstm |" in printed
    for name in ("results.json", "report.md", "suite.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["scale"] == 0.01 and len(saved["grid"]) == 6


def test_each_optimizer_is_timed_on_one_problem_alone():
    from l2o.evaluate.suite import time_one_problem
    from l2o.optimizers import Adam
    from l2o.tasks import MixtureFamily, QuadraticFamily

    family = QuadraticFamily(dim=3, num_problems=64)
    seconds = time_one_problem({"a": Adam(lr=0.1), "b": Adam(lr=0.01)}, family, 5)
    assert set(seconds) == {"a", "b"} and all(0 < s < 1 for s in seconds.values())
    mixture = MixtureFamily(members=({"name": "quadratic"},))
    assert time_one_problem({"a": Adam()}, mixture, 5) is None  # no num_problems option
