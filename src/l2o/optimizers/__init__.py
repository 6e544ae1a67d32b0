"""Learned and hand-designed optimizers behind one step interface (see ``base.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from l2o.errors import InvalidInput
from l2o.optimizers.adam import Adam
from l2o.optimizers.base import OptState, StepOptimizer, detach_state, flatten, unflatten
from l2o.optimizers.grouped import GroupedOptimizer, assign_groups
from l2o.optimizers.lstm import CoordinatewiseLSTM, LSTMConfig, log_sign_preprocess
from l2o.optimizers.rmsprop import RMSprop
from l2o.optimizers.sgd import NAG, SGD

# The paper's baselines, each built from its learning rate (other hyperparameters at the
# torch.optim defaults; NAG uses momentum 0.9).
BASELINES: dict[str, Callable[[float], StepOptimizer]] = {
    "sgd": lambda lr: SGD(lr=lr),
    "nag": lambda lr: NAG(lr=lr),
    "rmsprop": lambda lr: RMSprop(lr=lr),
    "adam": lambda lr: Adam(lr=lr),
}


def make_baseline(name: str, lr: float) -> StepOptimizer:
    """Build the hand-designed optimizer ``name`` (sgd, nag, rmsprop, adam) with learning rate lr."""
    if name not in BASELINES:
        raise InvalidInput(f"unknown optimizer {name!r} (valid: {', '.join(BASELINES)})")
    return BASELINES[name](lr)


def from_spec(spec: dict[str, Any]) -> StepOptimizer:
    """Rebuild an optimizer (freshly initialised) from ``optimizer.spec()``."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind == "lstm":
        return CoordinatewiseLSTM(LSTMConfig(**options))
    if kind == "grouped":
        groups = {name: from_spec(s) for name, s in options["groups"].items()}
        return GroupedOptimizer(groups, options["assignment"])
    builders: dict[str, Callable[..., StepOptimizer]] = {
        "sgd": SGD,
        "rmsprop": RMSprop,
        "adam": lambda betas=(0.9, 0.999), **kw: Adam(betas=tuple(betas), **kw),
    }
    if kind not in builders:
        raise InvalidInput(
            f"unknown optimizer kind {kind!r} (valid: lstm, grouped, {', '.join(builders)})"
        )
    return builders[kind](**options)


__all__ = [
    "BASELINES",
    "NAG",
    "SGD",
    "Adam",
    "CoordinatewiseLSTM",
    "GroupedOptimizer",
    "LSTMConfig",
    "OptState",
    "RMSprop",
    "StepOptimizer",
    "assign_groups",
    "detach_state",
    "flatten",
    "from_spec",
    "log_sign_preprocess",
    "make_baseline",
    "unflatten",
]
