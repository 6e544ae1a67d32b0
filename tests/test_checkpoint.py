"""Checkpoints: safetensors + JSON record, strict loading, clear errors, atomic writes."""

import json

import pytest
import torch

import l2o
from l2o.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from l2o.errors import CheckpointError
from l2o.optimizers import Adam, CoordinatewiseLSTM, GroupedOptimizer, LSTMConfig


def _updates(opt, grads, steps=3):
    state = opt.init_state(grads)
    out = []
    for _ in range(steps):
        u, state = opt.step(grads, state)
        out.append(u)
    return out


def test_round_trip_gives_identical_updates(tmp_path):
    opt = CoordinatewiseLSTM(
        LSTMConfig(num_layers=1, hidden_size=8, preprocess="none", output_scale=1.0)
    )
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(torch.randn_like(p))  # not the initialisation: weights must really be loaded
    path = save_checkpoint(tmp_path / "opt", opt, {"description": "test"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded, record = load_checkpoint(tmp_path / "opt.json")
    assert record["description"] == "test" and record["optimizer"]["hidden_size"] == 8
    assert record["l2o_version"] == l2o.__version__
    assert json.loads(path.with_suffix(".json").read_text()) == record
    grads = [torch.randn(4, 3), torch.randn(2)]
    for a, b in zip(_updates(opt, grads), _updates(loaded, grads)):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert torch.equal(l2o.load(path).output.weight, opt.output.weight)


def test_grouped_optimizer_round_trip_keeps_each_groups_weights(tmp_path):
    opt = GroupedOptimizer({"w": CoordinatewiseLSTM(), "b": Adam(lr=0.01)}, ["w", "b"])
    save_checkpoint(tmp_path / "g", opt, {})
    loaded, _ = load_checkpoint(tmp_path / "g")
    assert set(loaded.state_dict()) == {k for k in opt.state_dict()}
    assert all(k.startswith("groups.w.") for k in loaded.state_dict())
    assert loaded.groups["b"].lr == 0.01


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint or pretrained optimizer named"):
        l2o.load(str(tmp_path / "nope"))


def test_corrupt_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "opt", CoordinatewiseLSTM(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_checkpoint_that_does_not_fit_names_missing_and_unexpected_weights(tmp_path):
    from l2o.checkpoint import load_weights

    path = save_checkpoint(tmp_path / "one", CoordinatewiseLSTM(LSTMConfig(num_layers=1)), {})
    tensors, _ = read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"missing \['cells.1.bias', 'cells.1.weight'\]"):
        load_weights(CoordinatewiseLSTM(LSTMConfig(num_layers=2)), tensors, str(path))
    with pytest.raises(CheckpointError, match="has shape"):
        load_weights(
            CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=5)), tensors, str(path)
        )


def test_a_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    opt = CoordinatewiseLSTM()
    path = save_checkpoint(tmp_path / "opt", opt, {"n": 1})
    before = path.read_bytes()

    import l2o.checkpoint as ck

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "opt", CoordinatewiseLSTM(), {"n": 2})
    assert path.read_bytes() == before
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no temp files left
