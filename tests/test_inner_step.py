"""Pins of the inner loop: the evaluation rollout, the meta-training unroll (meta-loss and
meta-gradients by truncated BPTT) and behaviour's recordings, on a quadratic, a small conv net
with batch norm and a small MLP, compared bit for bit with numbers stored in
tests/data/inner_step/*.safetensors.

The pins hold what the code computed when they were written, so that a refactoring of the inner
loop that changes a single bit fails here. They are exact only on the machine kind that wrote
them (same torch version and CPU capability, one thread); elsewhere they are compared with a
tolerance. After a change of behaviour that is meant, rewrite them with

    .venv/bin/python tests/test_inner_step.py --regenerate [rollout unroll behaviour]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from l2o.data import write_idx
from l2o.evaluate.behaviour import record_steps, trajectory, two_d_task
from l2o.evaluate.rollout import rollout
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.optimizers import (
    NAG,
    SGD,
    Adam,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMConfig,
    StepOptimizer,
    assign_groups,
)
from l2o.tasks import ConvFamily, MLPFamily, QuadraticFamily
from l2o.tasks.base import Task

PINS = Path(__file__).parent / "data" / "inner_step"


def environment() -> dict[str, str]:
    """What the exactness of a pin depends on."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


class LossScaledSGD(StepOptimizer):
    """A learned toy optimizer that reads the loss: g_t = -softplus(a) tanh(f(theta_t)) grad_t,
    f of each problem scaling that problem's coordinates."""

    reads_loss = True

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-3.0))

    def init_state(self, params):
        return {"step": 0}

    def step(self, grads, state, loss=None):
        rate = nn.functional.softplus(self.a) * torch.tanh(loss)
        updates = [-rate.reshape(-1, *[1] * (g.dim() - 1)) * g for g in grads]
        return updates, {"step": state["step"] + 1}


def write_images(root: Path) -> Path:
    """A tiny MNIST-format dataset (28x28 IDX files) with fixed random pixels and labels."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("t10k", 16)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    return root


def make_tasks(data_dir: Path) -> dict[str, Task]:
    data = str(data_dir)
    return {
        "quadratic": QuadraticFamily(dim=5, num_problems=3).sample(4),
        "conv": ConvFamily(
            dataset="fashion-mnist", data_dir=data, channels=[2, 3], hidden_sizes=[4],
            batch_size=8, num_problems=2,
        ).sample(1),
        "mlp": MLPFamily(
            dataset="fashion-mnist", data_dir=data, hidden_sizes=[2], batch_size=8
        ).sample(2),
    }  # fmt: skip


def lstm(seed: int, chunk_size: int | None = None) -> CoordinatewiseLSTM:
    """A small LSTM that reads momentum and theta_t (``reads_params``), with random weights.
    ``chunk_size``: coordinates per chunk of its no-grad steps (its default: no chunks here)."""
    torch.manual_seed(seed)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=2, momentum=(0.9,), param_input=True))
    if chunk_size is not None:
        opt.chunk_size = chunk_size
    return opt


def grouped(task: Task) -> GroupedOptimizer:
    """The conv net's weights by an LSTM, the rest by Adam."""
    assignment = assign_groups(task.param_names, {"conv": "conv*", "rest": ["bn*", "fc*", "out*"]})
    return GroupedOptimizer({"conv": lstm(7), "rest": Adam(lr=0.01)}, assignment)


def optimizers(name: str, task: Task) -> dict[str, StepOptimizer]:
    torch.manual_seed(3)
    out = {"lstm": lstm(5, chunk_size=512), "loss_scaled": LossScaledSGD(), "adam": Adam(lr=0.01)}
    if name == "conv":
        out["grouped"] = grouped(task)
    return out


def flat(prefix: str, value: Any) -> Iterator[tuple[str, Tensor]]:
    """Every tensor and number of a nested state, named by its path."""
    if isinstance(value, Tensor):
        yield prefix, value.detach().clone().contiguous()
    elif isinstance(value, bool | int | float):
        yield prefix, torch.tensor(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from flat(f"{prefix}/{k}", v)
    elif isinstance(value, list | tuple):
        for k, v in enumerate(value):
            yield from flat(f"{prefix}/{k}", v)


def rollout_pins(tasks: dict[str, Task]) -> dict[str, Tensor]:
    """Losses, theta_T and buffers of 6-step rollouts."""
    out: dict[str, Tensor] = {}
    for name, task in tasks.items():
        for label, opt in optimizers(name, task).items():
            result = rollout(opt, task, 6)
            key = f"{name}/{label}"
            out.update(flat(f"{key}/losses", result.losses))
            out.update(flat(f"{key}/params", result.params))
            out.update(flat(f"{key}/buffers", result.buffers))
    return out


# (task, optimizer, second_order, meta_loss) of the meta-gradients pinned. The pins of "plain"
# are stored under its former name, "sum".
UNROLLS = [
    ("quadratic", "lstm", False, "plain"),
    ("quadratic", "lstm", True, "plain"),
    ("quadratic", "lstm", False, "relative"),
    ("quadratic", "lstm", False, "log"),
    ("quadratic", "loss_scaled", False, "plain"),
    ("quadratic", "loss_scaled", True, "plain"),
    ("conv", "lstm", False, "plain"),
    ("conv", "lstm", True, "plain"),
    ("conv", "grouped", False, "plain"),
    ("mlp", "lstm", False, "plain"),
    ("mlp", "loss_scaled", True, "plain"),
]


def unroll_pins(tasks: dict[str, Task]) -> dict[str, Tensor]:
    """Meta-loss, meta-gradients, losses and end state of two truncations of 3 steps: through
    the task's graph (``first``, ``second``) and, first order, by the default path that needs no
    graph through the task (``first-vjp``; l2o.meta.truncated_bptt)."""
    out: dict[str, Tensor] = {}
    paths = [(name, label, order, meta_loss) for name, label, order, meta_loss in UNROLLS]
    paths += [
        (name, label, None, meta_loss) for name, label, order, meta_loss in UNROLLS if not order
    ]
    for name, label, second_order, meta_loss in paths:
        task = tasks[name]
        opt = optimizers(name, task)[label]
        estimator = TruncatedBPTT(
            second_order=bool(second_order),
            meta_loss=meta_loss,
            through_task=second_order is not None,
        )
        state = init_unroll(task, opt)
        order = {True: "second", False: "first", None: "first-vjp"}[second_order]
        for k, weights in enumerate(([1.0, 1.0, 1.0], [0.5, 0.0, 2.0])):
            result = estimator.meta_gradient(opt, task, state, weights)
            state = result.state
            stored = "sum" if meta_loss == "plain" else meta_loss
            key = f"{name}/{label}/{order}/{stored}/{k}"
            out[f"{key}/meta_loss"] = torch.tensor(result.meta_loss, dtype=torch.float64)
            out.update(flat(f"{key}/grads", result.grads))
            out.update(flat(f"{key}/losses", result.losses))
            out.update(flat(f"{key}/params", state.params))
            out.update(flat(f"{key}/buffers", state.buffers))
        out.update(flat(f"{key}/opt_state", state.opt_state))
    return out


def behaviour_pins(tasks: dict[str, Task]) -> dict[str, Tensor]:
    """record_steps at steps 1 and 5 of 5 (the optimizer's state at step 5 only: it is large),
    and 2-D trajectories of 8 steps."""
    out: dict[str, Tensor] = {}
    for name, task in tasks.items():
        for label, opt in optimizers(name, task).items():
            records = record_steps(opt, task, 5, (1, 5))
            del records[1]["state"]
            for t, record in records.items():
                out.update(flat(f"{name}/{label}/{t}", record))
    for function in ("rosenbrock", "quadratic"):
        for label, opt in (("lstm", lstm(9)), ("nag", NAG(lr=0.002)), ("sgd", SGD(lr=0.001))):
            out[f"trajectory/{function}/{label}"] = trajectory(opt, two_d_task(function), 8)
    return out


PINNED: dict[str, Callable[[dict[str, Task]], dict[str, Tensor]]] = {
    "rollout": rollout_pins,
    "unroll": unroll_pins,
    "behaviour": behaviour_pins,
}


def compute(name: str, data_dir: Path) -> dict[str, Tensor]:
    """The pins ``name`` as the code computes them now, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return PINNED[name](make_tasks(write_images(data_dir)))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", PINNED)
def test_the_inner_loop_computes_the_pinned_numbers(name, tmp_path):
    path = PINS / f"{name}.safetensors"
    pinned = load_file(path)
    with open(path, "rb") as f:  # the header's metadata: where the pins were written
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    exact = header.get("__metadata__", {}) == environment()
    now = compute(name, tmp_path)
    assert sorted(now) == sorted(pinned)
    for key, want in pinned.items():
        got = now[key]
        if exact:
            assert got.dtype == want.dtype and torch.equal(got, want), key
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, equal_nan=True, msg=key)


def test_rollout_unroll_and_recordings_carry_the_running_statistics_alike(tmp_path):
    """On the conv net with batch norm, the three loops take the same steps: behaviour's
    recorded losses and buffers are the rollout's, and so are the unroll's losses and buffers
    (truncations of 2 and 3 steps)."""
    task = make_tasks(write_images(tmp_path))["conv"]
    opt = grouped(task)
    steps = 5
    ran = rollout(opt, task, steps)
    with torch.no_grad():  # evaluation code runs inside no_grad too
        records = record_steps(opt, task, steps, range(1, steps + 1))
    for t, record in records.items():
        assert torch.equal(record["loss"], ran.losses[t])
    assert all(torch.equal(a, b) for a, b in zip(records[steps]["buffers"], ran.buffers))
    assert not torch.equal(ran.buffers[0], task.init_buffers()[0])  # running statistics moved
    state, losses = init_unroll(task, opt), []
    for weights in ([1.0, 1.0], [1.0, 1.0, 1.0]):
        result = TruncatedBPTT().meta_gradient(opt, task, state, weights)
        state = result.state
        losses.append(result.losses)
    assert torch.equal(torch.cat(losses).float(), ran.losses[1:])
    assert all(torch.equal(a, b) for a, b in zip(state.buffers, ran.buffers))


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite the inner loop's pins.")
    parser.add_argument("--regenerate", nargs="*", choices=list(PINNED), required=True)
    names = parser.parse_args().regenerate or list(PINNED)
    PINS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            tensors = compute(name, Path(tmp) / name)
            save_file(tensors, PINS / f"{name}.safetensors", metadata=environment())
            size = (PINS / f"{name}.safetensors").stat().st_size
            print(f"{name}: {len(tensors)} tensors, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
