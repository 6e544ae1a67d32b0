"""Batched problems stepped apart, for optimizers that read per-tensor statistics.

Tasks solve ``num_problems`` independent problems as one tensor program: each parameter tensor
has a leading problem dimension, (n, *shape) (``l2o.tasks``). A coordinatewise optimizer (the
paper's LSTM, RNNprop, Adam) treats every coordinate alike, so it does not matter. An optimizer
that reads statistics of a whole tensor (``per_tensor_statistics = True``: the MLP optimizer's
per-tensor normalisation, Adafactor's row and column moments, its per-tensor scheduler) would
mix the problems' statistics, and would see an (n, out, in) weight where a user's model has an
(out, in) one (even for n = 1: a (1, out, in) tensor has no rows to factor). ``for_task`` gives
such an optimizer a view of it that steps the n problems as n separate lists of tensors shaped
(*shape), exactly as the torch.optim front-end steps a model's parameters; its state is the
optimizer's state of that longer list (problem-major: problem 0's tensors, then problem 1's,
...).

An optimizer that couples coordinates across tensors (``couples_coordinates = True``: LSTM+GAC,
NTM-BFGS, L-BFGS; ``l2o.optimizers.coupling``) steps the batched tensors as they are, in one
call, and keeps the problems apart itself: ``for_task`` gives it ``LeadingProblems``, which
builds its state with ``init_state(params, problems=n)``. Everyone else gets the optimizer
itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from l2o.optimizers.base import OptState, StepOptimizer, call_step


class PerProblem:
    """``optimizer`` stepping each of ``num_problems`` batched problems apart (module doc).
    The same ``init_state`` / ``step`` interface; its meta-parameters are the optimizer's."""

    def __init__(self, optimizer: StepOptimizer, num_problems: int) -> None:
        self.optimizer, self.num_problems = optimizer, num_problems
        self.reads_loss, self.reads_params = optimizer.reads_loss, optimizer.reads_params

    def split(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """[(n, *shape_k)] -> problem 0's tensors, problem 1's, ... (views)."""
        for t in tensors:
            if t.dim() == 0 or t.shape[0] != self.num_problems:
                raise ValueError(
                    f"a tensor of shape {tuple(t.shape)} has no leading dimension of "
                    f"{self.num_problems} problems"
                )
        per_tensor = [t.unbind(0) for t in tensors]
        return [pieces[k] for k in range(self.num_problems) for pieces in per_tensor]

    def join(self, pieces: Sequence[Tensor], count: int) -> list[Tensor]:
        """The inverse of ``split`` for ``count`` tensors."""
        return [torch.stack(list(pieces[k::count])) for k in range(count)]

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        return self.optimizer.init_state(self.split(params))

    def step(
        self, grads: Sequence[Tensor], state: OptState, **inputs: Any
    ) -> tuple[list[Tensor], OptState]:
        params = inputs.get("params")
        updates, state = call_step(
            self.optimizer,
            self.split(grads),
            state,
            loss=inputs.get("loss"),
            params=None if params is None else self.split(params),
        )
        return self.join(updates, len(grads)), state


class LeadingProblems:
    """``optimizer`` stepping ``num_problems`` batched problems in one call, told that every
    tensor leads with them (module doc): the same ``init_state`` / ``step`` interface."""

    def __init__(self, optimizer: StepOptimizer, num_problems: int) -> None:
        self.optimizer, self.num_problems = optimizer, num_problems
        self.reads_loss, self.reads_params = optimizer.reads_loss, optimizer.reads_params

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        return self.optimizer.init_state(params, problems=self.num_problems)  # type: ignore[call-arg]

    def step(
        self, grads: Sequence[Tensor], state: OptState, **inputs: Any
    ) -> tuple[list[Tensor], OptState]:
        return call_step(
            self.optimizer, grads, state, loss=inputs.get("loss"), params=inputs.get("params")
        )


def for_task(optimizer: StepOptimizer, task: Any) -> StepOptimizer | PerProblem | LeadingProblems:
    """What steps ``task``'s parameters: ``optimizer`` itself, or, if it reads per-tensor
    statistics, ``PerProblem`` of it (every task's tensors lead with its problems), or, if it
    couples coordinates, ``LeadingProblems`` of it."""
    if getattr(optimizer, "couples_coordinates", False):
        return LeadingProblems(optimizer, task.num_problems)
    if getattr(optimizer, "per_tensor_statistics", False):
        return PerProblem(optimizer, task.num_problems)
    return optimizer
