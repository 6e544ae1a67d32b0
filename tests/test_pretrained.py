"""Shipped pretrained optimizers: each loads, its record is complete, names resolve everywhere."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import l2o
from l2o import pretrained
from l2o.checkpoint import read_checkpoint
from l2o.cli import main
from l2o.errors import CheckpointError
from l2o.optim import LearnedOptimizer
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig

COMPLETE_RECORD = {
    "description": "a tiny 1x4 LSTM, for tests only",
    "trained_on": {"name": "quadratic", "dim": 10, "num_problems": 128, "variant": "paper"},
    "training": {"epochs": 0},
    "metrics": {"validation_final_loss": 1.0},
    "benchmark": {"lstm_over_tuned_adam": 1.0},
    "command": "pytest tests/test_pretrained.py",
}


def _problems(name):
    """What is wrong with the shipped optimizer ``name`` (an empty list: nothing)."""
    problems = []
    record = pretrained.info(name)
    missing = [k for k in pretrained.RECORD_KEYS if k not in record]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    description = record.get("description")
    if not (isinstance(description, str) and description and "\n" not in description):
        problems.append(f"description is not one line: {description!r}")
    for key in ("trained_on", "training", "metrics", "benchmark"):
        if key in record and not (isinstance(record[key], dict) and record[key]):
            problems.append(f"{key} is not a non-empty dict")
    if "command" in record and not (isinstance(record["command"], str) and record["command"]):
        problems.append("command is not a non-empty string")
    if "name" not in record.get("trained_on", {}):
        problems.append("trained_on has no task name")
    _, header = read_checkpoint(pretrained.path(name))
    if header != record:
        problems.append(f"{name}.json differs from the record in {name}.safetensors")
    optimizer = l2o.load(name)
    if record.get("optimizer") != optimizer.spec():
        problems.append("the record's optimizer is not the one loaded")
    if record.get("l2o_version") is None or record.get("format") != "l2o-checkpoint":
        problems.append("format or l2o_version missing")
    # it trains a parameter through the torch.optim front-end, with finite updates
    p = torch.linspace(-1, 1, 50, requires_grad=True)
    opt = LearnedOptimizer([p], optimizer=name)
    for _ in range(3):
        p.pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    if not torch.isfinite(p).all() or torch.equal(p.detach(), torch.linspace(-1, 1, 50)):
        problems.append("its updates are not finite, or zero")
    return problems


@pytest.mark.parametrize("name", pretrained.names())
def test_every_shipped_pretrained_optimizer_loads_with_a_complete_record(name):
    assert _problems(name) == []
    assert name in pretrained.list()


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A pretrained folder holding one complete optimizer (``tiny-lstm``) and one without its
    reproduction command (``incomplete``)."""
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    torch.manual_seed(1)
    opt = CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=4))
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(torch.randn_like(p))
    l2o.save_checkpoint(tmp_path / "tiny-lstm", opt, COMPLETE_RECORD)
    incomplete = {k: v for k, v in COMPLETE_RECORD.items() if k != "command"}
    l2o.save_checkpoint(tmp_path / "incomplete", opt, incomplete)
    return opt


def test_the_checks_pass_on_a_complete_record_and_fail_on_a_missing_key(shipped):
    assert pretrained.names() == ["incomplete", "tiny-lstm"]
    assert _problems("tiny-lstm") == []
    assert _problems("incomplete") == ["missing keys: command"]


def test_a_shipped_name_works_everywhere_a_path_does(shipped):
    assert pretrained.list() == {
        "incomplete": COMPLETE_RECORD["description"],
        "tiny-lstm": COMPLETE_RECORD["description"],
    }
    loaded = l2o.load("tiny-lstm")
    assert torch.equal(loaded.output.weight, shipped.output.weight)
    assert pretrained.info("tiny-lstm")["optimizer"] == shipped.spec()
    a, b = torch.ones(7, requires_grad=True), torch.ones(7, requires_grad=True)
    for p, opt in ((a, "tiny-lstm"), (b, shipped)):
        front_end = LearnedOptimizer([p], optimizer=opt)
        for _ in range(3):
            p.pow(3).sum().backward()
            front_end.step()
            front_end.zero_grad()
    assert torch.equal(a, b) and not torch.equal(a, torch.ones(7))


def test_unknown_names_list_the_valid_ones(shipped):
    with pytest.raises(CheckpointError) as e:
        pretrained.path("quadratic-lsmt")
    assert "unknown pretrained optimizer 'quadratic-lsmt' (valid: incomplete, tiny-lstm)" in str(
        e.value
    )
    with pytest.raises(
        CheckpointError, match=r"named 'nope' \(pretrained: incomplete, tiny-lstm\)"
    ):
        l2o.load("nope")
    with pytest.raises(
        CheckpointError, match=r"named 'nope' \(pretrained: incomplete, tiny-lstm\)"
    ):
        LearnedOptimizer([torch.zeros(1, requires_grad=True)], optimizer="nope")


def test_cli_lists_each_pretrained_optimizer_on_one_line(shipped, capsys):
    assert main(["pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(None, 1) == ["incomplete", COMPLETE_RECORD["description"]]
    assert lines[1].split(None, 1) == ["tiny-lstm", COMPLETE_RECORD["description"]]
    assert lines[1].index(COMPLETE_RECORD["description"]) == lines[0].index(
        COMPLETE_RECORD["description"]
    )


def test_cli_says_when_none_is_shipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    assert pretrained.list() == {}
    assert main(["pretrained"]) == 0
    assert "no pretrained optimizers are shipped" in capsys.readouterr().out


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


def test_example_refuses_an_unknown_optimizer_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--optimizer", "no-such-optimizer"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no checkpoint or pretrained optimizer named 'no-such-optimizer' (pretrained: "
        f"{', '.join(pretrained.names()) or 'none'})"
    ]
    assert not (tmp_path / "digits.png").exists()


def test_example_trains_with_a_checkpoint_and_plots_both_curves(tmp_path):
    pytest.importorskip("sklearn")
    path = l2o.save_checkpoint(tmp_path / "opt", CoordinatewiseLSTM(), COMPLETE_RECORD)
    out = tmp_path / "curves.png"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--optimizer", str(path), "--steps", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(str(path)) and lines[1].startswith("adam")
    assert "test accuracy" in lines[0] and out.read_bytes().startswith(b"\x89PNG")


def test_quadratic_gac_is_the_committed_runs_best_checkpoint_and_beats_quadratic_lstm():
    """The shipped LSTM+GAC (#28) is the best checkpoint of the committed run of
    configs/quadratic-gac.toml, its record's benchmark is the committed result file's, and
    its coordinates share information (one coordinate's gradient moves the others' updates)."""
    import json

    from l2o.checkpoint import load_checkpoint

    root = Path(__file__).resolve().parent.parent
    shipped = l2o.load("quadratic-gac")
    run, _ = load_checkpoint(
        root / "benchmarks/coupling/results/runs/quadratic-gac/checkpoints/best"
    )
    assert shipped.spec() == run.spec() and shipped.spec()["kind"] == "lstm-gac"
    for a, b in zip(shipped.state_dict().values(), run.state_dict().values()):
        assert torch.equal(a, b)
    benchmark = pretrained.info("quadratic-gac")["benchmark"]
    result = json.loads((root / benchmark["results"]).read_text())
    ratio = result["settings"]["10d"]["optimizers"]["lstm-gac"]["ratio_to_reference"]
    assert benchmark["over_quadratic-lstm"] == ratio and result["reference"] == "quadratic-lstm"
    assert ratio["ratio_95_interval"][1] < 1  # it beats the coordinatewise quadratic-lstm

    def updates(first_gradient):
        p = torch.zeros(10, requires_grad=True)
        opt = LearnedOptimizer([p], optimizer="quadratic-gac")
        p.grad = torch.linspace(-1, 1, 10)
        p.grad[0] = first_gradient
        opt.step()
        return p.detach().clone()

    a, b = updates(-1.0), updates(5.0)
    assert not torch.equal(a[1:], b[1:])


def test_generalist_is_the_presets_committed_run_and_its_record_the_suites_result():
    """The shipped generalist (#26) is the best checkpoint of the committed run of
    configs/generalist.toml (the preset is that run's config, its meta-training within the
    issue's 3 hours on the 2 cores), its record's suite ratios are the committed result file's,
    and it trains a conv net and an MLP with no learning rate given."""
    import json

    from l2o.checkpoint import load_checkpoint
    from l2o.config import load_config

    root = Path(__file__).resolve().parent.parent
    run_dir = root / "benchmarks/generalist/results/run-pes-readouts-hardtanh"
    shipped = l2o.load("generalist")
    run, record = load_checkpoint(run_dir / "checkpoints/best")
    assert shipped.spec() == run.spec() and shipped.spec()["kind"] == "mlp"
    assert shipped.spec()["nominal_squash"] == "hardtanh" and shipped.spec()["lr_adaptation"]
    for a, b in zip(shipped.state_dict().values(), run.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    preset = load_config(root / "configs/generalist.toml").to_dict()
    assert load_config(run_dir / "config.toml").to_dict() == preset
    assert record["metrics"]["meta_training_seconds"] <= 3 * 3600
    info = pretrained.info("generalist")
    result = json.loads((root / info["benchmark"]["results"]).read_text())
    ratios = {
        entry: r["optimizers"][result["suite"]["learned_optimizer"]["name"]]["final_loss_over_adam"]
        for entry, r in result["suite"]["entries"].items()
    }
    assert info["benchmark"]["suite_final_loss_over_tuned_adam"] == ratios and len(ratios) == 6

    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    for model in (
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                            torch.nn.Linear(16, 3)),
        torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(144, 3)),
    ):  # fmt: skip
        opt = LearnedOptimizer(model.parameters(), optimizer="generalist")
        losses = []
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            losses.append(loss.item())
            loss.backward()
            opt.step()
            opt.zero_grad()
        assert losses[-1] < 0.8 * losses[0], losses
