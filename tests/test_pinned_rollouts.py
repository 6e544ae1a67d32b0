"""Behaviour pinned bit for bit: rollouts and meta-gradients of the shipped pretrained optimizers
and of the LSTM with every input beyond the paper turned on, compared with ``torch.equal``.

A refactoring of the optimizers must leave every number here unchanged: the loss curves and
final parameters of ``l2o.evaluate.rollout`` (the chunked step taken without autograd), the
seeded initial weights (so the random stream a seed gives stays the same), the meta-gradients of
``l2o.meta.TruncatedBPTT`` (through the task's graph, first and second order), the optimizer
state after a truncation (its keys and values) and the torch.optim front-end's steps.

The expected values are the committed files ``tests/data/pinned/CASE.safetensors``, written by

    python tests/test_pinned_rollouts.py [CASE ...]

Write them only at a commit whose behaviour you trust (never to make a failing comparison pass).
They hold the numbers of one torch build on one CPU kind (recorded in each file): elsewhere the
floating-point rounding of the matmuls may differ, so the test skips, saying so. Every case runs
on the CPU with one torch thread, in float32 as the library does by default.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

import l2o
from l2o.evaluate import rollout
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
from l2o.tasks import MLPFamily, QuadraticFamily

FOLDER = Path(__file__).resolve().parent / "data" / "pinned"
FASHION = Path("/usr/share/datasets/fashion-mnist")

# The LSTM with every input beyond the paper: two momenta, the RMS-scaled signals, step
# features, a linear term reading some signals of each kind (the zeros left out) with the
# output weight starting at zero, and theta_t as an input.
ALL_FEATURES = LSTMConfig(
    hidden_size=8,
    momentum=[0.9, 0.99],
    rms_decay=0.999,
    time_scales=[10, 100],
    gain=[0.01, 0, 0.001, 0, 0, 0.003],
    zero_output=True,
    param_input=True,
)
# The other branches: no preprocessing and a float gain (every raw signal, no selection);
# the RMS-scaled gradient alone in the linear term, one layer.
RAW_SIGNALS = LSTMConfig(
    hidden_size=6, preprocess="none", momentum=[0.5], time_scales=[3], gain=0.01, forget_bias=2.0
)
SCALED_ONLY = LSTMConfig(num_layers=1, hidden_size=5, rms_decay=0.9, gain=[0, 0.02])
# The paper's input (the gradient alone) with the linear term on it.
PAPER_GAIN = LSTMConfig(hidden_size=6, gain=0.01)


def _environment() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def _seeded(config: LSTMConfig, seed: int) -> tuple[CoordinatewiseLSTM, dict[str, Tensor]]:
    """The LSTM as a seed initialises it (its weights pinned as ``init/NAME``), then every
    weight moved by seeded noise so that each part (a zero-initialised output or gain weight
    too) shapes the update."""
    torch.manual_seed(seed)
    opt = CoordinatewiseLSTM(config)
    pinned = {f"init/{k}": v.clone() for k, v in opt.state_dict().items()}
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return opt, pinned


def _rollouts(
    optimizer: l2o.StepOptimizer, family, seeds: tuple[int, ...], steps: int, prefix: str
) -> dict[str, Tensor]:
    """Loss curves (steps + 1, problems) and final parameters of a rollout on each task."""
    pinned = {}
    for seed in seeds:
        result = rollout(optimizer, family.sample(seed), steps)
        pinned[f"{prefix}/{seed}/losses"] = result.losses
        for k, p in enumerate(result.params):
            pinned[f"{prefix}/{seed}/params/{k}"] = p
    return pinned


def _meta_gradients(
    optimizer: CoordinatewiseLSTM, task, second_order: bool, prefix: str
) -> dict[str, Tensor]:
    """Two truncations of 5 steps of TruncatedBPTT through the task's graph (first order's
    default path, without it, is pinned in tests/test_inner_step.py): each one's meta-gradient
    (by parameter name), meta-loss and losses; the optimizer state after the second."""
    estimator = TruncatedBPTT(second_order=second_order, through_task=True)
    state = init_unroll(task, optimizer)
    pinned = {}
    for k in range(2):
        result = estimator.meta_gradient(optimizer, task, state, [1.0] * 5)
        names = [name for name, _ in optimizer.named_parameters()]
        for name, grad in zip(names, result.grads):
            pinned[f"{prefix}/{k}/grad/{name}"] = grad
        pinned[f"{prefix}/{k}/meta_loss"] = torch.tensor(result.meta_loss, dtype=torch.float64)
        pinned[f"{prefix}/{k}/losses"] = result.losses
        state = result.state
    for key, value in state.opt_state.items():
        if isinstance(value, list):
            for j, t in enumerate(value):
                pinned[f"{prefix}/state/{key}/{j}"] = t
        else:
            pinned[f"{prefix}/state/{key}"] = torch.tensor(value)
    return pinned


def _quadratics(num_problems: int = 16) -> QuadraticFamily:
    return QuadraticFamily(dim=10, num_problems=num_problems)


def case_quadratic_lstm() -> dict[str, Tensor]:
    """The shipped quadratic optimizer on quadratics of its family."""
    return _rollouts(l2o.load("quadratic-lstm"), _quadratics(), (1, 2), 100, "quadratic")


def case_mnist_mlp_lstm() -> dict[str, Tensor]:
    """The shipped MNIST optimizer on its family (Fashion-MNIST, 15,910 coordinates: a chunked
    step) and on quadratics (log_sign preprocessing of their gradients)."""
    if not FASHION.is_dir():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION} (apt install dataset-fashion-mnist)")
    optimizer = l2o.load("mnist-mlp-lstm")
    family = MLPFamily(dataset="fashion-mnist", data_dir=str(FASHION))
    pinned = _rollouts(optimizer, family, (1,), 100, "mnist")
    return pinned | _rollouts(optimizer, _quadratics(), (1,), 100, "quadratic")


def case_all_features() -> dict[str, Tensor]:
    """ALL_FEATURES: a rollout (8,300 coordinates: a step in two chunks), meta-gradients of
    first and second order."""
    opt, pinned = _seeded(ALL_FEATURES, 11)
    pinned |= _rollouts(opt, _quadratics(830), (1,), 30, "rollout")
    task = _quadratics(4).sample(3)
    pinned |= _meta_gradients(opt, task, False, "first_order")
    return pinned | _meta_gradients(opt, task, True, "second_order")


def _both_orders(opt: CoordinatewiseLSTM) -> dict[str, Tensor]:
    task = _quadratics(4).sample(3)
    pinned = _meta_gradients(opt, task, False, "first_order")
    return pinned | _meta_gradients(opt, task, True, "second_order")


def case_raw_signals() -> dict[str, Tensor]:
    opt, pinned = _seeded(RAW_SIGNALS, 12)
    pinned |= _rollouts(opt, _quadratics(), (1,), 60, "rollout")
    return pinned | _both_orders(opt)


def case_scaled_only() -> dict[str, Tensor]:
    opt, pinned = _seeded(SCALED_ONLY, 13)
    pinned |= _rollouts(opt, _quadratics(), (1,), 60, "rollout")
    return pinned | _both_orders(opt)


def case_paper_gain() -> dict[str, Tensor]:
    opt, pinned = _seeded(PAPER_GAIN, 17)
    pinned |= _rollouts(opt, _quadratics(), (1,), 60, "rollout")
    return pinned | _both_orders(opt)


def case_paper_lstm() -> dict[str, Tensor]:
    """The paper's LSTM as a seed initialises it, meta-gradients of its first truncations."""
    torch.manual_seed(14)
    opt = CoordinatewiseLSTM()
    pinned = {f"init/{k}": v.clone() for k, v in opt.state_dict().items()}
    return pinned | _both_orders(opt)


def case_torch_optim() -> dict[str, Tensor]:
    """The torch.optim front-end stepping a small model with ALL_FEATURES (its per-parameter
    states merged into one batch) and with the shipped MNIST optimizer; the front-end's state
    after the last step."""
    opt, _ = _seeded(ALL_FEATURES, 15)
    pinned = {}
    for name, optimizer in (("all_features", opt), ("mnist", l2o.load("mnist-mlp-lstm"))):
        torch.manual_seed(16)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
        x, y = torch.randn(32, 6), torch.randn(32, 2)
        front_end = LearnedOptimizer(model.parameters(), optimizer=optimizer)
        for _ in range(8):
            front_end.zero_grad()
            (model(x) - y).square().mean().backward()
            front_end.step()
        for k, p in enumerate(model.parameters()):
            pinned[f"{name}/params/{k}"] = p.detach().clone()
        for k, state in front_end.state_dict()["state"].items():
            for key, value in state.items():
                values = value if isinstance(value, list) else [value]
                for j, v in enumerate(values):
                    pinned[f"{name}/state/{k}/{key}/{j}"] = torch.as_tensor(v).clone()
    return pinned


CASES: dict[str, Callable[[], dict[str, Tensor]]] = {
    name.removeprefix("case_").replace("_", "-"): fn
    for name, fn in sorted(globals().items())
    if name.startswith("case_")
}


def _compute(name: str) -> dict[str, Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matmuls' rounding depends on how they are split
    try:
        return {k: v.detach().cpu().contiguous() for k, v in CASES[name]().items()}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(CASES))
def test_pinned(name):
    path = FOLDER / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        written = json.loads(f.metadata()["environment"])
    if written != _environment():
        pytest.skip(f"{path.name} was written with {written}, this is {_environment()}")
    want = load_file(path)
    got = _compute(name)
    assert sorted(got) == sorted(want), "the pinned values' names changed"
    differ = [
        f"{k}: max |diff| {(got[k].double() - want[k].double()).abs().max():.3g}"
        if got[k].shape == want[k].shape and got[k].dtype == want[k].dtype
        else f"{k}: {got[k].dtype} {tuple(got[k].shape)}, pinned {want[k].dtype} {tuple(want[k].shape)}"
        for k in sorted(want)
        if not torch.equal(got[k], want[k])
    ]
    assert not differ, f"{len(differ)} of {len(want)} values differ:\n" + "\n".join(differ[:20])


def main(names: list[str]) -> None:
    """Write the expected values of the cases ``names`` (all when none)."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name in names or CASES:
        tensors = _compute(name)
        # NaN would never compare equal
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
        path = FOLDER / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"environment": json.dumps(_environment())})
        print(f"{path}: {len(tensors)} tensors, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
