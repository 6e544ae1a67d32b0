"""Meta-training: the differentiable unroll, meta-gradient estimators and the outer loop.

One module per part::

    unroll.py           the inner loop: inner_step; unroll (with the meta-graph); rollout (without)
    truncated_bptt.py   the meta-gradient of one truncation
    objective.py        what L(phi) is and how its gradient is estimated (MetaObjective)
    meta_optimizer.py   how phi follows it: clip -> Adam / SGD / RMSprop -> schedule
    train.py            the run: epochs, validation, checkpoints, resume (MetaTrainer)
    averaging.py        Polyak averaging of phi, for the run
    metrics_log.py      the run's metrics.jsonl
    config.py           the [meta] section (MetaTrainConfig), one flat table of the parts' options
    seeds.py            disjoint task seeds for training, validation and test
"""

from l2o.meta.config import MetaTrainConfig
from l2o.meta.meta_optimizer import MetaOptimizer, MetaOptimizerConfig
from l2o.meta.objective import MetaObjective
from l2o.meta.seeds import task_seed
from l2o.meta.train import MetaTrainer, TrainingState, validate
from l2o.meta.truncated_bptt import MetaGradient, TruncatedBPTT
from l2o.meta.unroll import Rollout, UnrollResult, UnrollState, init_unroll, rollout, unroll

__all__ = [
    "MetaGradient",
    "MetaObjective",
    "MetaOptimizer",
    "MetaOptimizerConfig",
    "MetaTrainConfig",
    "MetaTrainer",
    "Rollout",
    "TrainingState",
    "TruncatedBPTT",
    "UnrollResult",
    "UnrollState",
    "init_unroll",
    "rollout",
    "task_seed",
    "unroll",
    "validate",
]
