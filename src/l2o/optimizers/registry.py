"""Every optimizer by name: the one registry from which configs' parameter groups, checkpoints
(``spec()["kind"]``), the command line's ``--baselines`` and evaluation build optimizers.

``OPTIMIZERS`` maps a name to the class or function that builds the optimizer from its options
(the keys of its ``spec()``, as JSON or TOML values). A new optimizer is one more entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from l2o.errors import InvalidInput
from l2o.optimizers.adam import Adam
from l2o.optimizers.base import StepOptimizer
from l2o.optimizers.gac import LSTMGAC, LSTMGACConfig
from l2o.optimizers.grouped import GroupedOptimizer
from l2o.optimizers.lbfgs import LBFGS
from l2o.optimizers.lstm import CoordinatewiseLSTM, LSTMConfig
from l2o.optimizers.mlp import MLPOptimizerConfig, PerParameterMLP
from l2o.optimizers.ntm_bfgs import NTMBFGS, NTMBFGSConfig
from l2o.optimizers.rmsprop import RMSprop
from l2o.optimizers.rnnprop import RNNprop, RNNpropConfig
from l2o.optimizers.sgd import NAG, SGD


def lstm(**options: Any) -> CoordinatewiseLSTM:
    """The coordinatewise LSTM of the paper, from ``LSTMConfig``'s fields."""
    return CoordinatewiseLSTM(LSTMConfig(**options))


def mlp(**options: Any) -> PerParameterMLP:
    """The per-parameter MLP optimizer, from ``MLPOptimizerConfig``'s fields."""
    return PerParameterMLP(MLPOptimizerConfig(**options))


def rnnprop(**options: Any) -> RNNprop:
    """RNNprop (Lv, Jiang & Li, 2017), from ``RNNpropConfig``'s fields."""
    return RNNprop(RNNpropConfig(**options))


def lstm_gac(**options: Any) -> LSTMGAC:
    """The LSTM with global averaging cells (the paper's section 2.2), from ``LSTMGACConfig``'s
    fields."""
    return LSTMGAC(LSTMGACConfig(**options))


def ntm_bfgs(**options: Any) -> NTMBFGS:
    """NTM-BFGS / NTM-L-BFGS (the paper's section 2.2), from ``NTMBFGSConfig``'s fields."""
    return NTMBFGS(NTMBFGSConfig(**options))


def grouped(groups: Mapping[str, Mapping[str, Any]], assignment: Sequence[str]) -> GroupedOptimizer:
    """One optimizer per parameter group, each from its spec; ``assignment[i]`` is the group of
    parameter i."""
    return GroupedOptimizer({name: from_spec(spec) for name, spec in groups.items()}, assignment)


OPTIMIZERS: dict[str, Callable[..., StepOptimizer]] = {
    "lstm": lstm,
    "mlp": mlp,
    "rnnprop": rnnprop,
    "lstm-gac": lstm_gac,
    "ntm-bfgs": ntm_bfgs,
    "grouped": grouped,
    "sgd": SGD,
    "nag": NAG,  # SGD with Nesterov momentum 0.9 unless told
    "rmsprop": RMSprop,
    "adam": Adam,
    "lbfgs": LBFGS,  # fixed step lr, torch.optim.LBFGS(max_iter=1)'s maths
}
# The hand-designed optimizers: the paper's baselines, and L-BFGS with a fixed step, whose
# learning rate (L-BFGS: step) evaluation tunes (torch.optim's defaults for their other
# options), and what a parameter group may use instead of an LSTM (L-BFGS excepted: it couples
# all coordinates of a problem, which a group's tensors are not).
BASELINES = ("sgd", "nag", "rmsprop", "adam", "lbfgs")


def make_baseline(name: str, lr: float) -> StepOptimizer:
    """Build the hand-designed optimizer ``name`` (sgd, nag, rmsprop, adam, lbfgs) with learning
    rate lr."""
    if name not in BASELINES:
        raise InvalidInput(f"unknown optimizer {name!r} (valid: {', '.join(BASELINES)})")
    return OPTIMIZERS[name](lr=lr)


def from_spec(spec: Mapping[str, Any]) -> StepOptimizer:
    """Rebuild an optimizer (freshly initialised) from ``optimizer.spec()``."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind not in OPTIMIZERS:
        raise InvalidInput(f"unknown optimizer kind {kind!r} (valid: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[kind](**options)
