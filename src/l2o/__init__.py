"""l2o: learned optimizers in PyTorch (Andrychowicz et al., 2016, and what came after)."""

__version__ = "0.1.0"

from l2o import optim, pretrained
from l2o.checkpoint import load, load_checkpoint, save_checkpoint
from l2o.config import ExperimentConfig, load_config
from l2o.meta import MetaTrainConfig, MetaTrainer, TruncatedBPTT, unroll
from l2o.meta.es import ES, PES
from l2o.optimizers import (
    LBFGS,
    LSTMGAC,
    NAG,
    NTMBFGS,
    SGD,
    Adam,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMConfig,
    LSTMGACConfig,
    MLPOptimizerConfig,
    NTMBFGSConfig,
    PerParameterMLP,
    RMSprop,
    RNNprop,
    RNNpropConfig,
    StepOptimizer,
)
from l2o.tasks import make_task_family

__all__ = [
    "ES",
    "LBFGS",
    "LSTMGAC",
    "NAG",
    "NTMBFGS",
    "PES",
    "SGD",
    "Adam",
    "CoordinatewiseLSTM",
    "ExperimentConfig",
    "GroupedOptimizer",
    "LSTMConfig",
    "LSTMGACConfig",
    "MLPOptimizerConfig",
    "MetaTrainConfig",
    "MetaTrainer",
    "NTMBFGSConfig",
    "PerParameterMLP",
    "RMSprop",
    "RNNprop",
    "RNNpropConfig",
    "StepOptimizer",
    "TruncatedBPTT",
    "__version__",
    "load",
    "load_checkpoint",
    "load_config",
    "make_task_family",
    "optim",
    "pretrained",
    "save_checkpoint",
    "unroll",
]
