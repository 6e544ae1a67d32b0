"""The meta-objective: what L(phi) is, and how its gradient is estimated (paper, eq. 3).

    L(phi) = E_f [ sum_{t=1..T} w_t term(f(theta_t)) ]

over a horizon of T inner steps, with

* the weights w_t (``loss_weights``): "sum" (w_t = 1, the paper), "mean" (w_t = 1/T), "last"
  (only the last step of each truncation) or "linear" (w_t = t/T);
* the form of each term (``meta_loss``, computed by ``l2o.meta.unroll``): "plain" (f(theta_t),
  the paper), "relative" (each truncation's weighted sum divided by the mean loss at its start)
  or "log" (log f(theta_t)).

The horizon is cut into truncations of K steps and phi is updated after each; the meta-gradient
of a truncation is estimated by (``estimator``)

* "tbptt", truncated backpropagation through time (``l2o.meta.truncated_bptt``, the paper): each
  truncation's part of L is differentiated through its K steps alone, with d grad_t / d phi
  dropped unless ``second_order``. Biased towards short horizons (Wu et al. 2018), memory O(K);
* "es", antithetic evolution strategies over the truncation (``l2o.meta.es.ES``; with K = T,
  over the whole unroll): ``pairs`` pairs phi +- eps, eps ~ N(0, sigma^2 I), no backward pass.
  Over a truncation it is biased like truncated BPTT;
* "pes", persistent evolution strategies (Vicol et al. 2021, ``l2o.meta.es.PES``): the pairs'
  unrolls persist across the truncations of a task and accumulate their perturbations, which
  makes the estimate unbiased for the whole horizon's smoothed meta-loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from l2o.checks import check_choice, check_positive_int, check_real
from l2o.errors import InvalidInput
from l2o.meta.es import ES, PES
from l2o.meta.truncated_bptt import TruncatedBPTT
from l2o.meta.unroll import META_LOSSES

LOSS_WEIGHTS = ("sum", "mean", "last", "linear")
ESTIMATORS = ("tbptt", "es", "pes")


@dataclass(frozen=True)
class MetaObjective:
    """The [meta] options that define L(phi) and its estimator (documented in MetaTrainConfig)."""

    horizon: int  # T
    truncation: int  # K
    loss_weights: str  # w_t: one of LOSS_WEIGHTS
    meta_loss: str  # each term's form: one of l2o.meta.unroll.META_LOSSES
    second_order: bool  # keep d grad_t / d phi
    estimator: str = "tbptt"  # one of ESTIMATORS
    sigma: float = 0.01  # ES / PES: standard deviation of each coordinate of eps
    pairs: int = 8  # ES / PES: antithetic pairs

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
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_real("sigma", self.sigma, lambda s: 0 < s < math.inf, "a number > 0, e.g. 0.01")
        check_positive_int("pairs", self.pairs)
        if self.second_order and self.estimator != "tbptt":
            raise InvalidInput(
                f"Invalid second_order: true with estimator {self.estimator!r} (ES and PES use "
                f'no backpropagation; second_order needs estimator = "tbptt")'
            )

    def truncation_weights(self, horizon: int | None = None) -> list[list[float]]:
        """w_t for t = 1 .. T, split into truncations of K (the last may be shorter); T is
        ``horizon`` when given (a task that brings its own, ``l2o.tasks.Task.horizon``)."""
        T, K = horizon or self.horizon, self.truncation
        if self.loss_weights == "linear":
            w = [t / T for t in range(1, T + 1)]
        else:
            w = [1.0 / T if self.loss_weights == "mean" else 1.0] * T
        chunks = [w[s : s + K] for s in range(0, T, K)]
        if self.loss_weights == "last":
            chunks = [[0.0] * (len(c) - 1) + [1.0] for c in chunks]
        return chunks

    def make_estimator(self) -> TruncatedBPTT | ES | PES:
        """The estimator of one truncation's meta-gradient, ``meta_gradient(optimizer, task,
        state, weights, ...)`` for each of ``truncation_weights()`` in turn (PES: its state is
        its particles, from ``init(optimizer, task)``)."""
        if self.estimator == "es":
            return ES(sigma=self.sigma, pairs=self.pairs, meta_loss=self.meta_loss)
        if self.estimator == "pes":
            return PES(sigma=self.sigma, pairs=self.pairs, meta_loss=self.meta_loss)
        return TruncatedBPTT(second_order=self.second_order, meta_loss=self.meta_loss)
