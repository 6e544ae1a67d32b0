"""The l2o command: end to end, and one-line errors with a non-zero exit for bad input."""

import json
from pathlib import Path

import pytest
import torch

import l2o
from cli_errors import one_line_error
from l2o.cli import main

ROOT = Path(__file__).resolve().parent.parent

FAST = [
    "--set", "task.num_problems=8",
    "--set", "meta.epochs=4",
    "--set", "meta.horizon=10",
    "--set", "meta.truncation=5",
    "--set", "meta.validate_every=2",
    "--set", "meta.validation_tasks=1",
]  # fmt: skip


def test_train_then_evaluate_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "configs/quadratic.toml", "--run-dir", str(run), *FAST]) == 0
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert (run / "config.toml").read_text().count("num_problems = 8") == 1
    out = tmp_path / "eval"
    argv = ["evaluate", str(run), "--out", str(out), "--test-tasks", "1", "--validation-tasks", "1",
            "--lr-grid", "1e-3,1,2", "--baselines", "sgd,adam"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert set(result["optimizers"]) == {"lstm", "sgd", "adam"}
    assert result["runs"] == 8 and result["steps"] == 10
    assert len(result["optimizers"]["adam"]["curve_mean"]) == 11
    assert (out / "loss.png").stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "lstm" in table and "adam" in table
    # Progress of tuning and evaluation: plain lines when stdout is not a terminal.
    total = 1 * 1 + 2 * (7 * 1 + 1)  # lstm on 1 test task; sgd, adam: 7 lrs x 1 + 1 test task
    assert f"evaluating {total}/{total}" in table and "tuning adam over 7 learning rates" in table


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            *("--set", "optimizer.momentum=[0.9, 0.99]", "--set", "optimizer.rms_decay=0.999"),
            *("--set", "optimizer.time_scales=[10, 100]"),
        ],
    ],
)
def test_resume_continues_a_run(tmp_path, capsys, extra):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), *FAST, *extra]) == 0
    resume = ["train", "--run-dir", str(run), "--resume", *FAST, *extra]
    assert main([*resume, "--set", "meta.epochs=6"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2, 3, 4, 5]
    assert "configuration differs" in one_line_error(capsys, [*resume, "--set", "task.dim=3"])
    # the learned optimizer comes back with the architecture it was trained with
    config = l2o.load(run).config
    features = (config.momentum, config.rms_decay, config.time_scales)
    assert features == (((0.9, 0.99), 0.999, (10.0, 100.0)) if extra else ((), 0.0, ()))


def test_existing_run_directory_is_refused_without_force(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    message = one_line_error(capsys, ["train", "--run-dir", str(run), *FAST])
    assert str(run) in message and "--force" in message
    assert (run / "precious.txt").read_text() == "keep me"
    # --force replaces only what l2o created: not this directory, but an earlier run, yes.
    message = one_line_error(capsys, ["train", "--run-dir", str(run), "--force", *FAST])
    assert "l2o did not create it" in message
    assert (run / "precious.txt").read_text() == "keep me"
    other = tmp_path / "other"
    assert main(["train", "--run-dir", str(other), "--quiet", *FAST]) == 0
    (other / "extra.txt").write_text("from the first run")
    assert main(["train", "--run-dir", str(other), "--force", "--quiet", *FAST]) == 0
    assert not (other / "extra.txt").exists()


@pytest.mark.parametrize(
    "extra", [[], ["--set", 'meta.train_only=["nothing.*"]'], ["--set", "meta.epochs=0"]]
)
def test_a_refused_run_announces_nothing(tmp_path, capsys, extra):
    # The "meta-training on ... -> RUN" line comes once the inputs are checked and the run
    # directory made, not before a refusal (an existing directory, a pattern matching nothing).
    run = tmp_path / "run"
    if not extra:
        run.mkdir()
        (run / "notes.txt").write_text("not a run")
    assert main(["train", "--run-dir", str(run), *FAST, *extra]) == 2
    assert capsys.readouterr().out == ""
    assert main(["train", "--run-dir", str(tmp_path / "good"), *FAST]) == 0
    assert capsys.readouterr().out.startswith("meta-training on quadratic for 4 epochs -> ")


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["task.name=quadratics"],
            "unknown task 'quadratics' (valid: quadratic, polynomial, simple, rosenbrock",
        ),
        (["meta.meta_lr=-0.01"], "Invalid meta_lr: -0.01"),
        (["meta.truncation=50", "meta.horizon=20"], "K = 50 is longer than the horizon T = 20"),
        (["optimizer.hidden_size=0"], "Invalid hidden_size: 0"),
        (["optimizer.preprocess=logsign"], "Invalid preprocess: 'logsign' (valid: none, log_sign)"),
        (["meta.epoch=3"], "unknown key(s) meta.epoch"),
        (["metaepochs=3"], "Invalid override 'metaepochs=3'"),
    ],
)
def test_bad_training_input_gives_one_line_errors(tmp_path, capsys, overrides, expected):
    argv = ["train", "--run-dir", str(tmp_path / "run")]
    for o in overrides:
        argv += ["--set", o]
    assert expected in one_line_error(capsys, argv)
    assert not (tmp_path / "run").exists()  # nothing was created


def test_bad_config_files(tmp_path, capsys):
    assert "config file not found" in one_line_error(
        capsys, ["train", str(tmp_path / "x.toml"), "--run-dir", str(tmp_path / "r")]
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[meta\nepochs = 3")
    assert "is not valid TOML" in one_line_error(
        capsys, ["train", str(bad), "--run-dir", str(tmp_path / "r")]
    )


def test_evaluate_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "no checkpoint or pretrained optimizer named" in one_line_error(
        capsys, ["evaluate", str(tmp_path / "missing"), "--out", out]
    )
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert "corrupt" in one_line_error(capsys, ["evaluate", str(corrupt), "--out", out])
    assert "unknown optimizer 'adamw' in --baselines" in one_line_error(
        capsys, ["evaluate", str(corrupt), "--out", out, "--baselines", "adam,adamw"]
    )
    assert "Invalid --test-tasks: 0" in one_line_error(
        capsys, ["evaluate", str(corrupt), "--out", out, "--test-tasks", "0"]
    )
    assert "Invalid --lr-grid" in one_line_error(
        capsys, ["evaluate", str(corrupt), "--out", out, "--lr-grid", "1,0.1"]
    )


def test_demo_meta_trains_and_compares(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "evaluation" / "results.json").read_text())
    assert set(result["optimizers"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert result["lstm_over_adam"] > 0
    assert (out / "run" / "checkpoints" / "best.safetensors").is_file()
    assert "LSTM / tuned Adam final loss" in capsys.readouterr().out
    assert "exists and is not empty" in one_line_error(
        capsys, ["demo", "--epochs", "2", "--out", str(out)]
    )


def test_demo_runs_the_shipped_quadratic_preset_shortened():
    # The demo takes its recipe from the shipped quadratic-lstm's record, which must be what
    # configs/quadratic.toml says: a preset changed without reshipping fails here.
    from l2o.config import load_config
    from l2o.pipelines import demo_config

    preset = load_config(
        ROOT / "configs" / "quadratic.toml",
        ["meta.epochs=40", "meta.validate_every=10", "meta.validation_tasks=4"],
    )
    assert demo_config(40).to_dict() == preset.to_dict()


FIGURE = """
[evaluate]
test_runs = 4
validation_runs = 2
problems_per_task = 2
baselines = ["sgd", "adam"]
lr_grid = [1e-2, 1.0, 4]

[[setting]]
name = "as-trained"
title = "as trained"
steps = 6
task = {}

[[setting]]
name = "dim-5"
steps = 9
task = { dim = 5 }
"""


def test_evaluate_a_figure_preset(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--quiet", *FAST]) == 0
    preset = tmp_path / "fig.toml"
    preset.write_text(FIGURE)
    out = tmp_path / "fig"
    assert main(["evaluate", str(run), "--figure", str(preset), "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert list(result["settings"]) == ["as-trained", "dim-5"]
    short, small = result["settings"]["as-trained"], result["settings"]["dim-5"]
    assert (short["steps"], short["runs"], short["task"]["dim"]) == (6, 4, 10)
    assert (small["steps"], small["task"]["dim"]) == (9, 5)
    assert set(small["optimizers"]) == {"lstm", "sgd", "adam"}
    assert len(small["optimizers"]["adam"]["curve_mean"]) == 10
    assert small["lstm_over_adam"] == pytest.approx(
        small["optimizers"]["lstm"]["final_loss_mean"]
        / small["optimizers"]["adam"]["final_loss_mean"]
    )
    assert (out / "dim-5.loss.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| as trained | 6 | 4 |" in report and "![dim-5.loss.png](dim-5.loss.png)" in report
    assert "| dim-5 | 9 | 4 |" in capsys.readouterr().out
    # Refused: an existing output directory, flags the preset sets, a setting's bad task option
    # (before anything is written), a missing preset.
    argv = ["evaluate", str(run), "--figure", str(preset)]
    assert "exists" in one_line_error(capsys, [*argv, "--out", str(out)])
    assert "--steps cannot be combined with --figure" in one_line_error(
        capsys, [*argv, "--out", str(tmp_path / "o"), "--steps", "5"]
    )
    preset.write_text(FIGURE.replace("{ dim = 5 }", "{ dims = 5 }"))
    assert "dims" in one_line_error(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    assert "figure preset not found" in one_line_error(
        capsys, ["evaluate", str(run), "--figure", str(tmp_path / "no.toml"), "--out", "x"]
    )


def test_train_initialised_from_a_trained_optimizer(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "configs/quadratic.toml", "--run-dir", str(first), *FAST]) == 0
    trained = l2o.load(first).state_dict()
    # A tiny meta-learning rate: the fine-tuned run keeps the weights it started from...
    tuned = tmp_path / "tuned"
    argv = ["train", "configs/quadratic.toml", "--run-dir", str(tuned), *FAST,
            "--set", f"meta.init_from={first}", "--set", "meta.meta_lr=1e-12"]  # fmt: skip
    assert main(argv) == 0
    for name, value in l2o.load(tuned).state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=1e-9)
    # ...while the same run from the seed's random init does not start there.
    fresh = tmp_path / "fresh"
    argv = ["train", "configs/quadratic.toml", "--run-dir", str(fresh), *FAST,
            "--set", "meta.meta_lr=1e-12"]  # fmt: skip
    assert main(argv) == 0
    assert not torch.allclose(
        l2o.load(fresh).state_dict()["cells.0.weight"], trained["cells.0.weight"]
    )
    # The run records where it started; resuming continues from its own last checkpoint.
    assert f'init_from = "{first}"' in (tuned / "config.toml").read_text()
    resume = ["train", "configs/quadratic.toml", "--run-dir", str(tuned), "--resume", *FAST,
              "--set", f"meta.init_from={first}", "--set", "meta.meta_lr=1e-12",
              "--set", "meta.epochs=6"]  # fmt: skip
    assert main(resume) == 0
    assert len((tuned / "metrics.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize(
    "source,expected",
    [
        (
            "quadratic-lstm",
            "differs from the config's (preprocess = 'none' there, 'log_sign' here)",
        ),
        ("no-such-optimizer", "no checkpoint or pretrained optimizer named 'no-such-optimizer'"),
    ],
)
def test_bad_init_from_gives_one_line_errors(tmp_path, capsys, source, expected):
    argv = ["train", "--run-dir", str(tmp_path / "run"), *FAST,
            "--set", "optimizer.preprocess=log_sign", "--set", f"meta.init_from={source}"]  # fmt: skip
    assert expected in one_line_error(capsys, argv)
    assert not (tmp_path / "run").exists()
