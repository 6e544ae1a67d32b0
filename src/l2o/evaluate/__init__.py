"""Fair evaluation: rollouts, tuned baselines, summaries, tables and figures."""

from l2o.evaluate.compare import Comparison, OptimizerResult, compare, lr_grid, tune_learning_rate
from l2o.evaluate.report import (
    format_table,
    plot_final_loss_bars,
    plot_loss_curves,
    write_json,
    write_report,
)
from l2o.evaluate.rollout import Rollout, rollout

__all__ = [
    "Comparison",
    "OptimizerResult",
    "Rollout",
    "compare",
    "format_table",
    "lr_grid",
    "plot_final_loss_bars",
    "plot_loss_curves",
    "rollout",
    "tune_learning_rate",
    "write_json",
    "write_report",
]
