"""Parameter groups: assignment by glob (also through the TOML config and the CLI), one
optimizer per group, per-group checkpoints and errors that name the groups that differ."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from l2o.checkpoint import load_checkpoint, load_weights, read_checkpoint, save_checkpoint
from l2o.cli import main
from l2o.config import config_from_dict, load_config, to_toml
from l2o.errors import CheckpointError
from l2o.meta import init_unroll, unroll
from l2o.optimizers import (
    Adam,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMConfig,
    assign_groups,
)
from l2o.runs import build_learned_optimizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAMES = [
    "conv0.weight", "bn0.weight", "bn0.bias", "conv1.weight", "bn1.weight", "bn1.bias",
    "fc0.weight", "bn_fc0.weight", "bn_fc0.bias", "out.weight", "out.bias",
]  # fmt: skip
PAPER = {"conv": ["conv*"], "fc": ["bn*", "fc*", "out.*"]}


@pytest.fixture
def cifar_dir(tmp_path):
    """A tiny CIFAR-10 in the binary format (8 images per batch), so the conv task has data."""
    d = tmp_path / "data" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]:
        records = rng.integers(0, 256, (8, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (d / name).write_bytes(records.tobytes())
    return tmp_path / "data"


def _config(cifar_dir, groups, **optimizer):
    return config_from_dict(
        {
            "task": {
                "name": "conv", "dataset": "cifar10", "data_dir": str(cifar_dir),
                "channels": [2, 2], "hidden_sizes": [4], "batch_size": 4,
            },
            "optimizer": {"hidden_size": 6, **optimizer, "groups": groups},
            "meta": {"epochs": 2, "horizon": 4, "truncation": 2, "validate_every": 2,
                     "validation_tasks": 1},
        }
    )  # fmt: skip


def test_assign_groups_every_parameter_in_exactly_one_group():
    assignment = assign_groups(NAMES, PAPER)
    assert [n for n, g in zip(NAMES, assignment) if g == "conv"] == ["conv0.weight", "conv1.weight"]
    assert assignment.count("fc") == len(NAMES) - 2
    with pytest.raises(ValueError, match=r"'bn0.weight' matches several groups: bn, fc"):
        assign_groups(NAMES, {"conv": "conv*", "bn": "bn*", "fc": ["bn*", "fc*", "out.*"]})
    with pytest.raises(ValueError, match=r"'out.bias' matches no group pattern"):
        assign_groups(NAMES, {"conv": "conv*", "fc": ["bn*", "fc*", "out.weight"]})
    with pytest.raises(ValueError, match=r"group\(s\) dense match no parameter"):
        assign_groups(NAMES, {**PAPER, "dense": "dense*"})


def test_groups_from_the_toml_config(cifar_dir):
    config = _config(cifar_dir, {"conv": {"params": ["conv*"]}, "fc": {"params": PAPER["fc"]}})
    opt = build_learned_optimizer(config)
    assert isinstance(opt, GroupedOptimizer) and list(opt.groups) == ["conv", "fc"]
    assert opt.assignment == assign_groups(NAMES, PAPER)
    for group in opt.groups.values():  # LSTM options default to [optimizer]'s
        assert isinstance(group, CoordinatewiseLSTM) and group.config.hidden_size == 6
    # Separate LSTMs: their own weights, initialised differently, from the run's seed alone.
    conv, fc = opt.groups["conv"].output.weight, opt.groups["fc"].output.weight
    assert not torch.equal(conv, fc)
    assert torch.equal(build_learned_optimizer(config).groups["fc"].output.weight, fc)
    # The written config reads back to the same configuration (what --resume compares).
    assert config_from_dict(tomllib.loads(to_toml(config.to_dict()))) == config


def test_group_options_hand_designed_groups_and_overrides(cifar_dir):
    groups = {
        "conv": {"params": "conv*", "num_layers": 1},
        "fc": {"params": PAPER["fc"], "kind": "adam", "lr": 0.003},
    }
    config = _config(cifar_dir, groups)
    opt = build_learned_optimizer(config)
    assert opt.groups["conv"].config.num_layers == 1 and opt.groups["conv"].config.hidden_size == 6
    assert isinstance(opt.groups["fc"], Adam) and opt.groups["fc"].lr == 0.003
    # The fc parameters get exactly Adam's updates, the conv ones the LSTM's.
    grads = [torch.randn(5) if g == "fc" else torch.randn(2, 3) for g in opt.assignment]
    updates, _ = opt.step(grads, opt.init_state(grads))
    fc = [g for g, a in zip(grads, opt.assignment) if a == "fc"]
    want, _ = Adam(lr=0.003).step(fc, Adam(lr=0.003).init_state(fc))
    got = [u for u, a in zip(updates, opt.assignment) if a == "fc"]
    for u, w in zip(got, want):
        assert torch.equal(u, w)
    data = config.to_dict()
    assert data["optimizer"]["groups"]["fc"] == {"params": PAPER["fc"], "kind": "adam", "lr": 0.003}
    flat = load_config(None, [])
    assert not flat.groups  # the flat [optimizer] section: one LSTM for all (as before)
    assert isinstance(build_learned_optimizer(flat), CoordinatewiseLSTM)
    assert "groups" not in flat.to_dict()["optimizer"]


def test_dotted_overrides_reach_into_groups(tmp_path, cifar_dir):
    path = tmp_path / "c.toml"
    path.write_text(to_toml(_config(cifar_dir, {"conv": {"params": ["conv*"]}, "fc": {
        "params": PAPER["fc"], "kind": "adam", "lr": 0.003}}).to_dict()))  # fmt: skip
    config = load_config(path, ["optimizer.groups.fc.lr=0.05", "optimizer.groups.conv.p=5.0"])
    assert config.groups["fc"].options["lr"] == 0.05 and config.groups["conv"].lstm.p == 5.0
    assert config.optimizer.p == 10.0  # only that group changed


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"conv": {"params": ["conv*"]}}, r"parameter 'bn0.weight' matches no group pattern"),
        (
            {"conv": {"params": ["conv*", "bn*"]}, "fc": {"params": PAPER["fc"]}},
            r"parameter 'bn0.weight' matches several groups: conv, fc",
        ),
        (
            {**{g: {"params": p} for g, p in PAPER.items()}, "x": {"params": ["x*"]}},
            r"group\(s\) x match no parameter",
        ),
    ],
)
def test_groups_that_do_not_fit_the_task_are_errors(cifar_dir, groups, message):
    with pytest.raises(ValueError, match=message):
        build_learned_optimizer(_config(cifar_dir, groups))


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"conv": {"kind": "lstm"}}, r"Invalid optimizer.groups.conv.params: None"),
        ({"conv": {"params": []}}, r"Invalid optimizer.groups.conv.params: \[\]"),
        (
            {"conv": {"params": ["*"], "kind": "lion"}},
            r"Invalid optimizer.groups.conv.kind: 'lion' \(valid: lstm, sgd, nag, rmsprop, adam\)",
        ),
        ({"conv": {"params": ["*"], "lr": 0.1}}, r"unknown key\(s\) optimizer.groups.conv.lr"),
        (
            {"conv": {"params": ["*"], "kind": "adam", "hidden_size": 3}},
            r"optimizer.groups.conv \(kind 'adam'\).*hidden_size",
        ),
        ({"conv": {"params": ["*"], "kind": "adam"}}, r"at least one must be learned"),
        ({"a.b": {"params": ["*"]}}, r"Invalid group name 'a.b'"),
        ({"conv": {"params": ["*"], "kind": "sgd", "lr": -1.0}}, r"Invalid learning rate: -1.0"),
    ],
)
def test_invalid_group_configs_name_the_bad_value(groups, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"optimizer": {"groups": groups}})


def test_cli_reports_a_bad_group_in_one_line_and_writes_nothing(tmp_path, cifar_dir, capsys):
    path = tmp_path / "c.toml"
    path.write_text(to_toml(_config(cifar_dir, {"conv": {"params": ["conv*"]}}).to_dict()))
    run = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("l2o: error: parameter 'bn0.weight' matches no group pattern")
    assert len(err.splitlines()) == 1 and not run.exists()


def _grouped(seed=0):
    torch.manual_seed(seed)
    opt = GroupedOptimizer(
        {
            "conv": CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=5)),
            "fc": CoordinatewiseLSTM(LSTMConfig(hidden_size=3, preprocess="none")),
            "bias": Adam(lr=0.02),
        },
        ["conv", "fc", "bias", "fc"],
    )
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(torch.randn_like(p))  # not the initialisation: weights must really be loaded
    return opt


def _run(opt, grads, steps=4):
    state, out = opt.init_state(grads), []
    for _ in range(steps):
        updates, state = opt.step(grads, state)
        out.append(updates)
    return out


def test_per_group_checkpoint_round_trip_gives_identical_updates(tmp_path):
    opt = _grouped()
    save_checkpoint(tmp_path / "g", opt, {})
    tensors, _ = read_checkpoint(tmp_path / "g")
    assert {k.split(".")[1] for k in tensors} == {"conv", "fc"}  # hand-designed: no weights
    loaded, _ = load_checkpoint(tmp_path / "g")
    grads = [torch.randn(3, 4), torch.randn(7), torch.randn(2), torch.randn(5, 1)]
    for a, b in zip(_run(opt, grads), _run(loaded, grads)):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    fresh = _grouped(seed=1)  # same architecture, other weights: loading makes them equal
    load_weights(fresh, tensors, "g")
    for x, y in zip(_run(opt, grads)[-1], _run(fresh, grads)[-1]):
        assert torch.equal(x, y)


def test_checkpoint_whose_groups_differ_names_missing_and_extra_groups(tmp_path):
    save_checkpoint(tmp_path / "g", _grouped(), {})
    tensors, _ = read_checkpoint(tmp_path / "g")
    other = GroupedOptimizer(
        {
            "conv": CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=5)),
            "dense": CoordinatewiseLSTM(LSTMConfig(hidden_size=3, preprocess="none")),
            "bias": CoordinatewiseLSTM(),
        },
        ["conv", "dense", "bias", "dense"],
    )
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(CheckpointError) as e:
        load_weights(other, tensors, "g.safetensors")
    message = str(e.value)
    assert "missing group(s) ['bias', 'dense']" in message
    assert "extra group(s) ['fc']" in message and "g.safetensors" in message
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))  # nothing loaded
    with pytest.raises(
        CheckpointError,
        match=r"the checkpoint has learned parameter groups \['conv', 'fc'\] but the optimizer holds one ungrouped",
    ):
        load_weights(CoordinatewiseLSTM(), tensors, "g")
    save_checkpoint(tmp_path / "one", CoordinatewiseLSTM(), {})
    single, _ = read_checkpoint(tmp_path / "one")
    with pytest.raises(
        CheckpointError, match=r"the optimizer has learned parameter groups \['conv', 'fc'\]"
    ):
        load_weights(_grouped(), single, "one")


def test_meta_gradient_reaches_every_learned_group(cifar_dir):
    groups = {"conv": {"params": "conv*"}, "fc": {"params": ["fc*", "out.*"]},
              "bn": {"params": "bn*", "kind": "sgd", "lr": 0.1}}  # fmt: skip
    config = _config(cifar_dir, groups)
    opt = build_learned_optimizer(config)
    assert {n.split(".")[1] for n, _ in opt.named_parameters()} == {"conv", "fc"}
    task = config.task.sample(0)
    result = unroll(task, opt, init_unroll(task, opt), [1.0] * 3)
    grads = dict(zip([n for n, _ in opt.named_parameters()], torch.autograd.grad(
        result.meta_loss, list(opt.parameters()))))  # fmt: skip
    for group in ("conv", "fc"):
        assert float(grads[f"groups.{group}.output.weight"].abs().sum()) > 0, group


def test_momentum_preset_is_the_conv_preset_with_momentum_inputs_in_both_groups():
    root = Path(__file__).resolve().parent.parent / "configs"
    paper, momentum = load_config(root / "conv.toml"), load_config(root / "conv-momentum.toml")
    decays = (0.5, 0.9, 0.99, 0.999)
    assert momentum.task == paper.task and momentum.meta == paper.meta
    assert momentum.optimizer == dataclasses.replace(paper.optimizer, momentum=decays)
    for name, group in momentum.groups.items():
        assert group.params == paper.groups[name].params
        assert group.lstm == dataclasses.replace(paper.groups[name].lstm, momentum=decays)


def test_an_ungrouped_optimizer_initialises_every_learned_group(tmp_path, cifar_dir):
    from l2o.errors import L2OError
    from l2o.runs import initialise_from

    torch.manual_seed(3)
    trained = CoordinatewiseLSTM(LSTMConfig(hidden_size=6))
    save_checkpoint(tmp_path / "trained", trained, {})
    groups = {"conv": {"params": ["conv*"]}, "fc": {"params": PAPER["fc"]}}
    grouped = build_learned_optimizer(_config(cifar_dir, groups))
    initialise_from(grouped, str(tmp_path / "trained"))
    for group in ("conv", "fc"):
        for name, value in trained.state_dict().items():
            assert torch.equal(grouped.groups[group].state_dict()[name], value), (group, name)
    # hand-designed groups are left alone; a learned group of another architecture is an error
    groups = {"conv": {"params": ["conv*"], "hidden_size": 4}, "fc": {"params": PAPER["fc"]}}
    with pytest.raises(
        L2OError, match="differs from the config's group 'conv' \\(hidden_size = 6 there, 4"
    ):
        initialise_from(
            build_learned_optimizer(_config(cifar_dir, groups)), str(tmp_path / "trained")
        )
    groups = {"conv": {"params": ["conv*"], "kind": "adam"}, "fc": {"params": PAPER["fc"]}}
    mixed = build_learned_optimizer(_config(cifar_dir, groups))
    initialise_from(mixed, str(tmp_path / "trained"))
    for name, value in trained.state_dict().items():
        assert torch.equal(mixed.groups["fc"].state_dict()[name], value), name
