"""The ``device`` option end to end on a GPU: tasks, rollouts, meta-training, checkpoints.

Skipped where there is no CUDA device (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``. The image tasks also need Fashion-MNIST (see l2o.data.mnist).
"""

from __future__ import annotations

import json

import pytest
import torch

from l2o.checkpoint import load
from l2o.config import load_config
from l2o.data import DatasetError
from l2o.data.images import locate_images
from l2o.evaluate.rollout import rollout
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig, make_baseline
from l2o.runs import train
from l2o.tasks import make_task_family

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FAMILIES = {
    "quadratic": {"name": "quadratic", "num_problems": 16},
    "mnist": {"name": "mnist", "dataset": "fashion-mnist", "num_problems": 2},
    "conv": {"name": "conv", "dataset": "fashion-mnist", "channels": [4, 4], "hidden_sizes": [8]},
}


def _family(name):
    config = dict(FAMILIES[name])
    if "dataset" in config:
        try:
            locate_images(config["dataset"], None)
        except DatasetError as e:
            pytest.skip(str(e))
    return make_task_family(config.pop("name"), **config)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_task_and_its_rollout_are_the_same_on_the_gpu(name):
    family = _family(name)
    cpu, gpu = family.sample(7), family.sample(7, device="cuda")
    for a, b in zip(cpu.init_params(), gpu.init_params()):
        assert b.is_cuda
        torch.testing.assert_close(a, b.cpu())
    torch.manual_seed(0)
    lstm = CoordinatewiseLSTM(LSTMConfig()).eval()
    for optimizer in (lstm, make_baseline("adam", 1e-2)):
        on_cpu = rollout(optimizer, cpu, 10)
        on_gpu = rollout(optimizer.to("cuda"), gpu, 10)
        optimizer.to("cpu")
        assert all(p.is_cuda for p in on_gpu.params)
        torch.testing.assert_close(on_cpu.losses, on_gpu.losses, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("preset", "name"), [("quadratic", "quadratic"), ("conv", "conv")])
def test_meta_training_on_the_gpu_matches_the_cpu_and_loads_anywhere(tmp_path, preset, name):
    _family(name)
    task = [f"task.{k}={v!r}" for k, v in FAMILIES[name].items() if k != "name"]
    fast = [*task, "meta.epochs=2", "meta.horizon=10", "meta.truncation=5", "meta.validate_every=1"]
    fast += ["meta.validation_tasks=1"]
    runs = {}
    for device in ("cpu", "cuda"):
        config = load_config(f"configs/{preset}.toml", [*fast, f"meta.device={device!r}"])
        runs[device] = train(config, tmp_path / device, quiet=True, tensorboard=False)
    first = {
        d: json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0]) for d in runs
    }
    # The first meta-update starts from the same weights on the same task: same meta-loss.
    assert first["cuda"]["meta_loss"] == pytest.approx(first["cpu"]["meta_loss"], rel=1e-3)
    assert runs["cuda"].epoch == runs["cpu"].epoch == 2
    optimizer = load(tmp_path / "cuda")  # saved from the GPU, loaded on the CPU
    assert all(p.device.type == "cpu" for p in optimizer.parameters())
    assert torch.isfinite(rollout(optimizer, _family(name).sample(3), 5).losses).all()
