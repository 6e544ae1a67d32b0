"""Checkpoints: safetensors + JSON record, strict loading, clear errors, atomic writes."""

import json
import math
import warnings

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import l2o
from l2o.checkpoint import load_checkpoint, read_checkpoint, resolve, save_checkpoint
from l2o.errors import CheckpointError
from l2o.meta import MetaTrainConfig, MetaTrainer
from l2o.optimizers import Adam, CoordinatewiseLSTM, GroupedOptimizer, LSTMConfig
from l2o.tasks import QuadraticFamily


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


def _small_lstm():
    return CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=4))


def _data_start(data: bytes) -> int:
    """Where a safetensors file's tensor data begin (after its 8-byte length and header)."""
    return 8 + int.from_bytes(data[:8], "little")


def _one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def test_saved_checkpoints_are_version_2_with_a_checksum_the_record_cannot_override(tmp_path):
    path = save_checkpoint(tmp_path / "opt", _small_lstm(), {"format_version": 1, "checksum": 0})
    _, record = read_checkpoint(path)
    assert record["format_version"] == 2 and record["checksum"].startswith("sha256:")
    assert len(record["checksum"]) == len("sha256:") + 64


def test_a_byte_changed_in_the_tensor_data_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "opt", _small_lstm(), {})
    data = bytearray(path.read_bytes())
    data[(_data_start(data) + len(data)) // 2] ^= 0x01  # a low bit: still a finite weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        l2o.load(path)
    message = _one_line_error(e, path)
    assert message.startswith(f"checkpoint {path} is corrupt: its tensor data or record do not ")
    assert "recorded" in message and "found" in message and "restore it from a copy" in message


def test_a_record_changed_behind_the_checksum_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "opt", _small_lstm(), {"description": "tested"})
    tensors, record = read_checkpoint(path)
    record["description"] = "better than Adam"  # the checksum stays the old one
    path.write_bytes(safetensors_bytes(tensors, metadata={"l2o": json.dumps(record)}))
    with pytest.raises(CheckpointError, match="do not match the checksum in its record"):
        read_checkpoint(path)
    del record["checksum"]
    path.write_bytes(safetensors_bytes(tensors, metadata={"l2o": json.dumps(record)}))
    with pytest.raises(CheckpointError, match="its record has no 'checksum'"):
        read_checkpoint(path)


def test_non_finite_weights_are_refused(tmp_path):
    opt = _small_lstm()
    with torch.no_grad():
        opt.output.weight[0, 0] = math.nan
    path = save_checkpoint(tmp_path / "opt", opt, {})
    with pytest.raises(CheckpointError) as e:
        l2o.load(path)
    assert _one_line_error(e, path) == (
        f"checkpoint {path} is corrupt: nan or inf in output.weight (all its tensors must be "
        f"finite); re-train or restore it from a copy"
    )
    # inf in a resume tensor is as corrupt: resuming from it would go nowhere
    path = save_checkpoint(
        tmp_path / "last",
        _small_lstm(),
        {},
        {"meta_optimizer/0/exp_avg_sq": torch.tensor([math.inf])},
    )
    with pytest.raises(CheckpointError, match=r"nan or inf in meta_optimizer/0/exp_avg_sq \("):
        read_checkpoint(path)


def _save_version_1(path, optimizer, extra=None):
    """A checkpoint as l2o wrote them before checksums (format version 1)."""
    tensors = {k: v.detach().contiguous() for k, v in optimizer.state_dict().items()}
    tensors.update(extra or {})
    record = {
        "format": "l2o-checkpoint",
        "format_version": 1,
        "l2o_version": "0.1.0",
        "optimizer": optimizer.spec(),
    }
    text = json.dumps(record, indent=2, sort_keys=True)
    path.write_bytes(safetensors_bytes(tensors, metadata={"l2o": text}))
    path.with_suffix(".json").write_text(text + "\n")
    return path


def test_version_1_checkpoints_still_load_but_must_be_finite(tmp_path):
    opt = _small_lstm()
    path = _save_version_1(tmp_path / "v1.safetensors", opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, record = load_checkpoint(path)
    assert record["format_version"] == 1 and "checksum" not in record
    assert torch.equal(loaded.output.weight, opt.output.weight)
    path = _save_version_1(tmp_path / "inf.safetensors", opt, {"x": torch.tensor([-math.inf])})
    with pytest.raises(CheckpointError, match=r"is corrupt: nan or inf in x \("):
        load_checkpoint(path)


def test_a_json_copy_that_disagrees_with_the_record_warns_and_is_ignored(tmp_path):
    path = save_checkpoint(tmp_path / "best", _small_lstm(), {"metrics": {"best_epoch": 300}})
    copy = path.with_suffix(".json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact copy: no warning
        read_checkpoint(path)
    edited = json.loads(copy.read_text())
    edited["metrics"]["best_epoch"] = 100
    edited["optimizer"]["hidden_size"] = 40
    edited["note"] = "added by hand"
    copy.write_text(json.dumps(edited))
    with pytest.warns(UserWarning) as caught:
        optimizer, record = load_checkpoint(path)
    assert [str(w.message) for w in caught] == [
        f"{copy} disagrees with the record inside best.safetensors on metrics.best_epoch, note, "
        f"optimizer.hidden_size; the record inside best.safetensors is used (the .json is only a "
        f"readable copy)"
    ]
    assert record["metrics"]["best_epoch"] == 300 and optimizer.spec()["hidden_size"] == 4
    copy.write_text("{ not json")
    with pytest.warns(UserWarning, match=rf"^{copy} is unreadable \(.*\); the record inside"):
        read_checkpoint(path)


def _run_without_best(run_dir, monkeypatch):
    """A real run whose every validation scored nan: only checkpoints/last is written."""
    import l2o.meta.train as train

    monkeypatch.setattr(
        train, "validate", lambda *a: {"final_loss": math.inf, "summed_loss": math.nan, "curve": []}
    )
    config = MetaTrainConfig(
        epochs=2, horizon=4, truncation=2, validate_every=1, validation_tasks=1, ema_decay=0.5
    )
    trainer = MetaTrainer(_small_lstm(), QuadraticFamily(num_problems=2), config, run_dir)
    trainer.run()
    return trainer


def test_a_run_without_best_says_why_and_where_its_latest_weights_are(tmp_path, monkeypatch):
    run = tmp_path / "q"
    trainer = _run_without_best(run, monkeypatch)
    last = run / "checkpoints" / "last.safetensors"
    assert last.is_file() and not (run / "checkpoints" / "best.safetensors").exists()
    message = (
        f"run {run} has no best checkpoint: no validation up to epoch 2 scored a finite loss; "
        f"its latest weights are in {last} (l2o.load('{run / 'checkpoints' / 'last'}'))"
    )
    for call in (resolve, l2o.load):
        with pytest.raises(CheckpointError) as e:
            call(run)
        assert str(e.value) == message
    loaded = l2o.load(run / "checkpoints" / "last")  # its meta_optimizer/* tensors are skipped
    assert torch.equal(loaded.output.weight, trainer.optimizer.output.weight)


def test_a_directory_without_checkpoints_says_whether_it_is_a_run(tmp_path):
    with pytest.raises(CheckpointError) as e:
        l2o.load(tmp_path)
    assert str(e.value).startswith(f"{tmp_path} is a directory but not a run directory (no config")
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(CheckpointError) as e:
        l2o.load(tmp_path)
    assert str(e.value).startswith(f"run {tmp_path} has no checkpoint yet: meta-training stopped")


def test_remove_interrupted_writes_deletes_only_atomic_write_temporaries(tmp_path):
    from l2o.checkpoint import atomic_write_text, remove_interrupted_writes

    atomic_write_text(tmp_path / "kept.json", "{}")
    left = tmp_path / ".best.safetensors.abc123.tmp"  # what a kill before the rename leaves
    left.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    assert remove_interrupted_writes(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "notes.tmp"]
    assert remove_interrupted_writes(tmp_path / "missing") == []
