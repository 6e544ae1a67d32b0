"""The one step interface shared by learned and hand-designed optimizers.

Every optimizer in l2o is an ``nn.Module`` with two methods, in the style of optax::

    state = opt.init_state(params)                  # params: sequence of tensors
    updates, state = opt.step(grads, state)         # theta_{t+1} = theta_t + updates

``step`` is a pure function of its inputs (no in-place changes to ``grads`` or ``state``) and
is differentiable, so the same code runs inside the meta-training unroll (where gradients flow
through the updates to the optimizer's own parameters phi) and in ordinary training loops.

A state is a dict whose values are tensors, Python numbers or nested states. Learned optimizers
keep their meta-parameters phi as ordinary module parameters; hand-designed ones have none.
Coordinatewise optimizers keep per-coordinate state as tensors whose first dimension is the
number of coordinates N (rows, in the order of ``flatten(params)``): the state of several
parameters is then the concatenation of their states, which ``l2o.optim`` relies on to step many
parameters in one call and to keep each parameter's state apart.

State kept per parameter *tensor* rather than per coordinate (the hidden state of the MLP
optimizer's per-tensor scheduler, ``l2o.optimizers.tensor_scheduler``) goes under the key
``PER_TENSOR`` (``"tensors"``) of the state dict: every tensor below it has one row per parameter
tensor, in the order of ``params``, so that the state of several parameters is again the
concatenation of theirs (a row per tensor, not per coordinate). ``l2o.optim`` merges and splits
it accordingly (each torch parameter is one tensor). Such state is a few floats per tensor, a
negligible addition to the per-coordinate state.

An optimizer that uses the loss f(theta_t) sets ``reads_loss = True`` and takes it as a keyword,
``step(grads, state, loss=loss)`` (a tensor: a scalar, or one value per problem; None when the
caller has none). Callers pass it only to such optimizers, so no other ``step`` changes.
Likewise an optimizer that reads the parameters theta_t themselves (e.g. to learn a
weight-decay-like term) sets ``reads_params = True`` and takes them as a keyword,
``step(grads, state, params=params)``: tensors shaped like ``grads``.

``step`` leaves its inputs as they are. A caller that owns the state it passes (nothing else
reads it once the step returns: the torch.optim front-end ``l2o.optim``, as torch.optim's own
optimizers own theirs) may let an optimizer with ``steps_in_place = True`` write the new state
into the old one's tensors, ``step(grads, state, in_place=True)``, instead of allocating new
ones; the state returned is then the one to keep (its tensors may be the old ones). Optimizers
take it where it saves time and memory, e.g. the MLP optimizer's step without autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

OptState = dict[str, Any]


class StepOptimizer(nn.Module):
    """Base class: ``init_state(params) -> state`` and ``step(grads, state) -> (updates, state)``."""

    reads_loss: bool = False  # True: ``step`` takes the loss as a keyword (see the module doc)
    reads_params: bool = False  # True: ``step`` takes theta_t as a keyword (see the module doc)
    # True: ``step`` reads statistics of whole tensors, so a task's batched problems are stepped
    # apart (``l2o.optimizers.problems``)
    per_tensor_statistics: bool = False
    # True: ``step`` takes ``in_place=True`` from a caller that owns the state (see the module doc)
    steps_in_place: bool = False
    # True: ``step`` shares information between coordinates of several tensors (averages, dot
    # products, a memory: ``l2o.optimizers.coupling``), so ``init_state`` takes ``problems=n``,
    # the number of problems that lead a task's tensors, and keeps them apart
    # (``l2o.optimizers.problems.for_task``)
    couples_coordinates: bool = False

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        raise NotImplementedError

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description from which ``l2o.optimizers.from_spec`` rebuilds the
        optimizer (weights not included)."""
        raise NotImplementedError

    @property
    def is_learned(self) -> bool:
        """True when the optimizer has meta-parameters phi to train."""
        return any(True for _ in self.parameters())


def call_step(
    optimizer: StepOptimizer,
    grads: Sequence[Tensor],
    state: OptState,
    loss: Tensor | None = None,
    params: Sequence[Tensor] | None = None,
    in_place: bool = False,
) -> tuple[list[Tensor], OptState]:
    """``optimizer.step(grads, state)``, handing ``loss`` and ``params`` over to optimizers that
    read them, and ``in_place`` (the caller owns ``state``) to those that take it."""
    kwargs: dict[str, Any] = {}
    if optimizer.reads_loss:
        kwargs["loss"] = loss
    if optimizer.reads_params:
        kwargs["params"] = params
    if in_place and getattr(optimizer, "steps_in_place", False):
        kwargs["in_place"] = True
    return optimizer.step(grads, state, **kwargs)


def flatten(tensors: Sequence[Tensor], dtype: torch.dtype | None = None) -> Tensor:
    """Concatenate tensors into one vector, so elementwise maths runs as one batched op."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    return flat if dtype is None else flat.to(dtype)


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split ``vector`` back into tensors shaped (and typed) like ``like``."""
    pieces = torch.split(vector, [t.numel() for t in like])
    return [p.reshape(t.shape).to(t.dtype) for p, t in zip(pieces, like)]


PER_TENSOR = "tensors"  # the state entry whose tensors have one row per parameter tensor


def map_state(fn: Callable[[Tensor], Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor of a (nested) state, leaving other values as they are."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(fn, v) for v in state)
    return state


def detach_state(state: Any) -> Any:
    """Cut every tensor of a state from the autograd graph (a truncation boundary)."""
    return map_state(lambda t: t.detach(), state)
