"""Fault injection: a checkpoint with any byte flipped, or cut short anywhere, is refused with a
CheckpointError (never loaded silently, never another exception), and the CLI says so in one
line without writing anything."""

import random
import warnings

import pytest
import torch

from l2o.checkpoint import load_checkpoint, read_checkpoint
from l2o.cli import main
from l2o.errors import CheckpointError
from l2o.meta import MetaTrainConfig, MetaTrainer
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
from l2o.tasks import QuadraticFamily

FAULTS = 200  # of each kind


@pytest.fixture(scope="module")
def last_checkpoint(tmp_path_factory) -> bytes:
    """The bytes of a real ``last`` checkpoint: a small LSTM, its record and Adam's state."""
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = MetaTrainConfig(
        epochs=1, horizon=4, truncation=2, validate_every=1, validation_tasks=1
    )
    optimizer = CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=4))
    MetaTrainer(optimizer, QuadraticFamily(num_problems=2), config, run_dir).run()
    return (run_dir / "checkpoints" / "last.safetensors").read_bytes()


def _refused(path, data: bytes) -> None:
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_intact_checkpoint_loads(tmp_path, last_checkpoint):
    path = tmp_path / "intact.safetensors"
    path.write_bytes(last_checkpoint)
    tensors, record = read_checkpoint(path)
    assert record["checkpoint"] == "last" and record["format_version"] == 2
    assert any(name.startswith("meta_optimizer/") for name in tensors)
    load_checkpoint(path)


def test_every_flipped_byte_is_refused(tmp_path, last_checkpoint):
    rng = random.Random(0)
    data_start = 8 + int.from_bytes(last_checkpoint[:8], "little")
    # half anywhere in the file (mostly the header and record), half in the tensor data
    offsets = [rng.randrange(len(last_checkpoint)) for _ in range(FAULTS // 2)]
    offsets += [rng.randrange(data_start, len(last_checkpoint)) for _ in range(FAULTS // 2)]
    path = tmp_path / "flipped.safetensors"
    for offset in offsets:
        data = bytearray(last_checkpoint)
        data[offset] ^= 0xFF
        _refused(path, bytes(data))


def test_every_truncation_is_refused(tmp_path, last_checkpoint):
    rng = random.Random(1)
    path = tmp_path / "truncated.safetensors"
    for length in [0, 7, 8, len(last_checkpoint) - 1] + [
        rng.randrange(len(last_checkpoint)) for _ in range(FAULTS)
    ]:
        _refused(path, last_checkpoint[:length])


def test_the_cli_refuses_a_corrupt_checkpoint_in_one_line_and_writes_nothing(
    tmp_path, last_checkpoint, capsys
):
    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(last_checkpoint)
    data[-3] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert main(["evaluate", str(corrupt), "--out", str(tmp_path / "ev"), "--quiet"]) != 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"l2o: error: checkpoint {corrupt} is corrupt")
    assert not (tmp_path / "ev").exists()
