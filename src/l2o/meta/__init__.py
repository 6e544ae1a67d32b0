"""Meta-training: the differentiable unroll, meta-gradient estimators and the outer loop."""

from l2o.meta.seeds import task_seed
from l2o.meta.train import MetaTrainConfig, MetaTrainer, TrainingState, validate
from l2o.meta.truncated_bptt import MetaGradient, TruncatedBPTT
from l2o.meta.unroll import UnrollResult, UnrollState, init_unroll, unroll

__all__ = [
    "MetaGradient",
    "MetaTrainConfig",
    "MetaTrainer",
    "TrainingState",
    "TruncatedBPTT",
    "UnrollResult",
    "UnrollState",
    "init_unroll",
    "task_seed",
    "unroll",
    "validate",
]
