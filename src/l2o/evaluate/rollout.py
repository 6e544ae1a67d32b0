"""The evaluation loop: run an optimizer on a task without building a meta-graph.

It lives in ``l2o.meta.unroll``, beside the meta-training unroll whose inner step it shares
(meta-training validates with it too); evaluation code imports it from here."""

from l2o.meta.unroll import Rollout, rollout

__all__ = ["Rollout", "rollout"]
