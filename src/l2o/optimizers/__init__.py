"""Learned and hand-designed optimizers behind one step interface (see ``base.py``), built by
name from one registry (``registry.py``)."""

from __future__ import annotations

from l2o.optimizers.adam import Adam
from l2o.optimizers.base import OptState, StepOptimizer, detach_state, flatten, unflatten
from l2o.optimizers.gac import LSTMGAC, LSTMGACConfig
from l2o.optimizers.grouped import GroupedOptimizer, assign_groups
from l2o.optimizers.lbfgs import LBFGS
from l2o.optimizers.lstm import CoordinatewiseLSTM, LSTMConfig, log_sign_preprocess
from l2o.optimizers.mlp import MLPOptimizerConfig, PerParameterMLP
from l2o.optimizers.ntm_bfgs import NTMBFGS, NTMBFGSConfig
from l2o.optimizers.registry import BASELINES, OPTIMIZERS, from_spec, make_baseline
from l2o.optimizers.rmsprop import RMSprop
from l2o.optimizers.rnnprop import RNNprop, RNNpropConfig
from l2o.optimizers.sgd import NAG, SGD

__all__ = [
    "BASELINES",
    "LBFGS",
    "LSTMGAC",
    "NAG",
    "NTMBFGS",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "CoordinatewiseLSTM",
    "GroupedOptimizer",
    "LSTMConfig",
    "LSTMGACConfig",
    "MLPOptimizerConfig",
    "NTMBFGSConfig",
    "OptState",
    "PerParameterMLP",
    "RMSprop",
    "RNNprop",
    "RNNpropConfig",
    "StepOptimizer",
    "assign_groups",
    "detach_state",
    "flatten",
    "from_spec",
    "log_sign_preprocess",
    "make_baseline",
    "unflatten",
]
