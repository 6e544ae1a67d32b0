"""The meta-objective: what L(phi) is, and how its gradient is estimated (paper, eq. 3).

    L(phi) = E_f [ sum_{t=1..T} w_t term(f(theta_t)) ]

over a horizon of T inner steps, with

* the weights w_t (``loss_weights``): "sum" (w_t = 1, the paper), "mean" (w_t = 1/T), "last"
  (only the last step of each truncation) or "linear" (w_t = t/T);
* the form of each term (``meta_loss``, computed by ``l2o.meta.unroll``): "plain" (f(theta_t),
  the paper), "relative" (each truncation's weighted sum divided by the mean loss at its start)
  or "log" (log f(theta_t)).

Its gradient is estimated by truncated backpropagation through time
(``l2o.meta.truncated_bptt``): the horizon is cut into truncations of K steps, each one's part of
L is differentiated through its K steps alone, with d grad_t / d phi dropped as in the paper
unless ``second_order``. The estimate is biased towards short horizons (Wu et al. 2018) and
costs memory O(K).
"""

from __future__ import annotations

from dataclasses import dataclass

from l2o.errors import InvalidInput
from l2o.meta.truncated_bptt import TruncatedBPTT
from l2o.meta.unroll import META_LOSSES
from l2o.tasks.base import check_choice, check_positive_int

LOSS_WEIGHTS = ("sum", "mean", "last", "linear")


@dataclass(frozen=True)
class MetaObjective:
    """The [meta] options that define L(phi) and its estimator (documented in MetaTrainConfig)."""

    horizon: int  # T
    truncation: int  # K
    loss_weights: str  # w_t: one of LOSS_WEIGHTS
    meta_loss: str  # each term's form: one of l2o.meta.unroll.META_LOSSES
    second_order: bool  # keep d grad_t / d phi

    def __post_init__(self) -> None:
        check_positive_int("horizon", self.horizon)
        check_positive_int("truncation", self.truncation)
        if self.truncation > self.horizon:
            raise InvalidInput(
                f"Invalid truncation: K = {self.truncation} is longer than the horizon "
                f"T = {self.horizon} (need 1 <= K <= T)"
            )
        check_choice("loss_weights", self.loss_weights, LOSS_WEIGHTS)
        check_choice("meta_loss", self.meta_loss, META_LOSSES)
        if not isinstance(self.second_order, bool):
            raise InvalidInput(f"Invalid second_order: {self.second_order!r} (true or false)")

    def truncation_weights(self) -> list[list[float]]:
        """w_t for t = 1 .. T, split into truncations of K (the last may be shorter)."""
        T, K = self.horizon, self.truncation
        if self.loss_weights == "linear":
            w = [t / T for t in range(1, T + 1)]
        else:
            w = [1.0 / T if self.loss_weights == "mean" else 1.0] * T
        chunks = [w[s : s + K] for s in range(0, T, K)]
        if self.loss_weights == "last":
            chunks = [[0.0] * (len(c) - 1) + [1.0] for c in chunks]
        return chunks

    def estimator(self) -> TruncatedBPTT:
        """The meta-gradient of one truncation: ``estimator().meta_gradient(optimizer, task,
        state, weights)`` for each of ``truncation_weights()`` in turn."""
        return TruncatedBPTT(second_order=self.second_order, meta_loss=self.meta_loss)
