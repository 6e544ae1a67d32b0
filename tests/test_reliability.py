"""Nothing is lost and every bad input gets one line: the probes of docs/reliability.md.

Each test is a probe a new user ran (issue #24) and the behaviour it must have now: --force
never deletes what it must not, every input is checked before the first write, resume and
interruption keep metrics and TensorBoard exact, monitoring never stops a run, and internal
errors say that they are bugs.
"""

import json
import math
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch

import l2o
from cli_errors import one_line_error
from l2o.cli import main
from l2o.config import config_from_dict
from l2o.errors import L2OError, MetaTrainingDiverged
from l2o.evaluate import rollout
from l2o.meta import MetaTrainConfig, MetaTrainer
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
from l2o.tasks import TASK_FAMILIES, QuadraticFamily

FAST = [
    "--set", "task.num_problems=8",
    "--set", "meta.epochs=4",
    "--set", "meta.horizon=10",
    "--set", "meta.truncation=5",
    "--set", "meta.validate_every=2",
    "--set", "meta.validation_tasks=1",
    "--quiet",
]  # fmt: skip
EVALUATE = ["--test-tasks", "1", "--validation-tasks", "1", "--lr-grid", "1e-2,1,1",
            "--baselines", "adam", "--quiet"]  # fmt: skip
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="probes a machine without CUDA")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "run"
    assert main(["train", "--run-dir", str(path), *FAST]) == 0
    (path / "sentinel.txt").write_text("keep me")
    return path


# -- --force ----------------------------------------------------------------------------------
def test_evaluate_into_its_own_run_directory_is_refused(run, capsys):
    before = _snapshot(run)
    message = one_line_error(
        capsys, ["evaluate", str(run), "--out", str(run), "--force", *EVALUATE]
    )
    assert message.startswith(f"l2o: error: refusing to replace {run} with --force: it holds")
    assert _snapshot(run) == before
    assert l2o.load(run) is not None


def test_force_never_replaces_the_current_directory(run, tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    (here / "sentinel.txt").write_text("keep me")
    monkeypatch.chdir(here)
    message = one_line_error(capsys, ["evaluate", str(run), "--out", ".", "--force", *EVALUATE])
    assert "it is the current directory" in message
    message = one_line_error(capsys, ["evaluate", str(run), "--out", "..", "--force", *EVALUATE])
    assert "it holds the current directory" in message
    assert (here / "sentinel.txt").read_text() == "keep me"


def test_force_never_replaces_the_home_directory(run, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "sentinel.txt").write_text("keep me")
    (home / ".l2o").write_text('{"kind": "evaluation"}')  # even if it looks like l2o's
    monkeypatch.setenv("HOME", str(home))
    message = one_line_error(
        capsys, ["evaluate", str(run), "--out", str(home), "--force", *EVALUATE]
    )
    assert "it is your home directory" in message
    assert (home / "sentinel.txt").read_text() == "keep me"


def test_force_replaces_only_an_l2o_directory_of_the_same_kind(run, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "sentinel.txt").write_text("keep me")
    message = one_line_error(
        capsys, ["evaluate", str(run), "--out", str(other), "--force", *EVALUATE]
    )
    assert "l2o did not create it" in message
    assert (other / "sentinel.txt").read_text() == "keep me"
    second = tmp_path / "second-run"
    assert main(["train", "--run-dir", str(second), *FAST]) == 0
    message = one_line_error(
        capsys, ["evaluate", str(run), "--out", str(second), "--force", *EVALUATE]
    )
    assert "it holds an l2o run directory, not an evaluation directory" in message
    assert (second / "checkpoints" / "best.safetensors").is_file()
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", str(run), "--out", str(evaluation), *EVALUATE]) == 0
    (evaluation / "old.txt").write_text("from the first evaluation")
    assert main(["evaluate", str(run), "--out", str(evaluation), "--force", *EVALUATE]) == 0
    assert not (evaluation / "old.txt").exists() and (evaluation / "results.json").is_file()


def test_force_never_replaces_a_run_that_holds_the_config_file(run, capsys):
    config = run / "config.toml"
    before = _snapshot(run)
    message = one_line_error(
        capsys, ["train", str(config), "--run-dir", str(run), "--force", "--quiet"]
    )
    assert f"it holds {config}, an input of this command" in message
    assert _snapshot(run) == before


def test_force_with_resume_is_refused(run, capsys):
    message = one_line_error(capsys, ["train", "--run-dir", str(run), "--force", "--resume", *FAST])
    assert "--force and --resume cannot be combined" in message


# -- every input is checked before the first write ---------------------------------------------
@NO_CUDA
def test_an_unavailable_device_keeps_the_previous_run(run, tmp_path, capsys):
    before = _snapshot(run)
    argv = ["train", "--run-dir", str(run), "--force", *FAST, "--set", 'meta.device="cuda"']
    message = one_line_error(capsys, argv)
    assert "Invalid device: 'cuda': CUDA is not available on this machine" in message
    assert _snapshot(run) == before
    out = tmp_path / "evaluation"
    message = one_line_error(capsys, ["evaluate", str(run), "--out", str(out), "--device", "cuda"])
    assert "CUDA is not available" in message and not out.exists()
    message = one_line_error(capsys, ["demo", "--out", str(out), "--device", "cuda:0"])
    assert "CUDA is not available" in message and not out.exists()


def _config_fields():
    cases = [("optimizer", f, None) for f in fields(LSTMConfig)]
    cases += [("meta", f, None) for f in fields(MetaTrainConfig)]
    for name, cls in TASK_FAMILIES.items():
        cases += [("task", f, name) for f in fields(cls) if f.name != "name"]
    return cases


def test_every_config_value_of_the_wrong_type_is_one_line():
    """Every option of every section, given a string, a list, a table, a bool or a NaN where
    it wants something else: an L2OError (one line in the CLI), never a TypeError."""
    accepted = []
    for section, field, task in _config_fields():
        default = field.default if field.default is not MISSING else None
        for value in ("abc", [1, 2], {"a": 1}, True, math.nan):
            if type(value) is type(default) or (isinstance(default, tuple) and value == [1, 2]):
                continue  # a value of the field's own type (validity is tested elsewhere)
            data = {section: {field.name: value}}
            if task:
                data["task"]["name"] = task
            try:
                config_from_dict(data)
                accepted.append((section, task, field.name, value))
            except L2OError:
                pass
    assert accepted == []


@pytest.mark.parametrize(
    "setting",
    ["meta.clip_grad_norm=abc", "optimizer.output_scale=abc", "optimizer.p=abc",
     "optimizer.forget_bias=abc", "optimizer.p=true", "meta.seed=true"],
)  # fmt: skip
def test_bad_values_on_the_command_line_are_one_line(setting, tmp_path, capsys):
    message = one_line_error(capsys, ["train", "--run-dir", str(tmp_path / "r"), "--set", setting])
    key = setting.split("=")[0].split(".")[1]
    assert f"Invalid {key}:" in message
    assert not (tmp_path / "r").exists()


def test_internal_errors_say_so_and_debug_shows_the_traceback(capsys, monkeypatch):
    def broken(args):
        raise ValueError("boom")

    monkeypatch.setattr("l2o.cli.cmd_pretrained", broken)
    message = one_line_error(capsys, ["pretrained"], code=1)
    assert message.startswith("l2o: internal error: ValueError: boom (a bug in l2o")
    assert "--debug" in message
    with pytest.raises(ValueError, match="boom"):
        main(["--debug", "pretrained"])


def test_rollout_works_inside_no_grad():
    task = QuadraticFamily(num_problems=4).sample(3)
    optimizer = l2o.load("quadratic-lstm")
    expected = rollout(optimizer, task, 5).losses
    with torch.no_grad():
        assert torch.equal(rollout(optimizer, task, 5).losses, expected)


# -- monitoring never stops a run ----------------------------------------------------------------
def test_huge_finite_updates_do_not_stop_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), *FAST[:-1], "--set", "optimizer.output_scale=1e30"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("histograms whose values cannot be binned are skipped") == 1
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and "no validation scored a finite loss" in warning[0]
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert l2o.load(run / "checkpoints" / "last") is not None


def test_a_failing_monitor_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    from l2o.monitor import Monitor

    def broken(self, *args):
        raise RuntimeError("disk full for event files")

    monkeypatch.setattr(Monitor, "validation", broken)
    run = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="monitoring failed in validation") as caught:
        assert main(["train", "--run-dir", str(run), *FAST]) == 0
    assert sum("monitoring failed" in str(w.message) for w in caught) == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert (run / "checkpoints" / "best.safetensors").is_file()


# -- resume and interruption ---------------------------------------------------------------------
def test_resume_with_another_config_names_the_key(run, capsys):
    argv = ["train", "--run-dir", str(run), "--resume", *FAST, "--set", "meta.truncation=2"]
    message = one_line_error(capsys, argv)
    assert (
        "meta.truncation = 5 there, 2 now" in message and "only meta.epochs may change" in message
    )


def test_resume_with_fewer_epochs_is_refused_and_changes_nothing(run, capsys):
    before = _snapshot(run)
    argv = ["train", "--run-dir", str(run), "--resume", *FAST, "--set", "meta.epochs=2"]
    message = one_line_error(capsys, argv)
    assert "it has done 4 epochs already" in message
    assert _snapshot(run) == before


def test_resume_drops_the_metrics_after_the_checkpoint(run):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    # What a kill leaves: epochs after the checkpoint (here a fake 5th) and a half-written line.
    metrics.write_text(
        "\n".join([*lines, lines[-1].replace('"epoch": 3', '"epoch": 4')]) + '\n{"ep'
    )
    assert main(["train", "--run-dir", str(run), "--resume", *FAST, "--set", "meta.epochs=6"]) == 0
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4, 5]


def test_ctrl_c_before_the_first_checkpoint_can_be_resumed(tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference"
    assert main(["train", "--run-dir", str(reference), *FAST]) == 0
    original = MetaTrainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    run = tmp_path / "run"
    monkeypatch.setattr(MetaTrainer, "train_epoch", interrupted)
    assert main(["train", "--run-dir", str(run), *FAST]) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()
    monkeypatch.setattr(MetaTrainer, "train_epoch", original)
    message = one_line_error(capsys, ["train", "--run-dir", str(run), *FAST])
    assert "exists and is not empty" in message
    assert main(["train", "--run-dir", str(run), "--resume", *FAST]) == 0
    epochs = [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [0, 1, 2, 3]
    ours, theirs = l2o.load(run), l2o.load(reference)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


class _NaNQuadratics(QuadraticFamily):
    """Quadratics whose loss is always NaN: every meta-update is non-finite."""

    def sample(self, seed, device="cpu", dtype=torch.float32):
        task = super().sample(seed, device, dtype)
        task.y = task.y * math.nan
        return task


@pytest.mark.parametrize("validate_every,says", [
    (10, "no checkpoint was written (the first is due at epoch 10)"),
    (1, "are intact (last: epoch 2; no validation was finite)"),
])  # fmt: skip
def test_divergence_tells_the_truth_about_checkpoints(tmp_path, validate_every, says):
    config = MetaTrainConfig(
        epochs=20, horizon=4, truncation=2, validate_every=validate_every, validation_tasks=1,
        max_nonfinite_in_a_row=3,
    )  # fmt: skip
    trainer = MetaTrainer(CoordinatewiseLSTM(), _NaNQuadratics(num_problems=2), config, tmp_path)
    with pytest.raises(MetaTrainingDiverged) as error:
        trainer.run()
    assert says in str(error.value)
    assert (tmp_path / "checkpoints" / "last.safetensors").is_file() == (validate_every == 1)


def test_every_test_named_in_the_reliability_table_exists():
    """docs/reliability.md's table names the test behind each probe: they must exist."""
    import re

    root = Path(__file__).resolve().parent.parent
    table = (root / "docs" / "reliability.md").read_text()
    names = set(re.findall(r"::(test_\w+)", table))
    assert len(names) > 25
    sources = "".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    assert sorted(n for n in names if f"def {n}(" not in sources) == []
