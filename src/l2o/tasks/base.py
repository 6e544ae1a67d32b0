"""Optimization problems ("optimizees") in functional form.

A ``Task`` is one problem, or a batch of independent problems solved together as one tensor
program (e.g. 128 quadratics). Its parameters are plain tensors handed to a pure loss function,
so the meta-training unroll can differentiate through theta_{t+1} = theta_t + g_t.

A ``TaskFamily`` is a distribution over tasks: ``family.sample(seed)`` draws a fresh task, the
same one for the same seed on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor

from l2o.errors import InvalidInput


class Task:
    """One problem instance (possibly a batch of ``num_problems`` independent ones). Every
    parameter tensor has a leading problem dimension, (num_problems, *shape), even when there
    is one problem.

    Subclasses set ``param_names`` and ``num_problems`` and implement ``init_params`` and
    ``loss``; data-driven tasks also implement ``batch``.
    """

    param_names: list[str]
    num_problems: int = 1
    # Inner steps a run takes on this task; None = the run's own (meta.horizon). Tasks of a
    # mixture (l2o.tasks.mixture) bring their own.
    horizon: int | None = None

    def init_params(self) -> list[Tensor]:
        """theta_0: the same tensors every call (a task is deterministic given its seed)."""
        raise NotImplementedError

    def batch(self, step: int) -> Any:
        """The data seen at inner step ``step`` (deterministic); None for data-free problems."""
        return None

    def loss(self, params: Sequence[Tensor], batch: Any) -> Tensor:
        """f(theta) of every problem: a tensor of shape (num_problems,)."""
        raise NotImplementedError


class TaskFamily:
    """A distribution over tasks. Subclasses are frozen dataclasses of their options."""

    name: ClassVar[str]

    def sample(
        self, seed: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Task:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """The options as a TOML/JSON-ready dict, ``name`` included."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


def generator(seed: int) -> torch.Generator:
    """A CPU generator: tasks are drawn on the CPU, then moved, so a seed means the same task
    on every device."""
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"Invalid seed: {seed!r} (must be an integer >= 0)")
    return torch.Generator().manual_seed(seed)
