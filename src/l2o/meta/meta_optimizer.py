"""The meta-optimizer: how phi follows its meta-gradient (paper, section 2: Adam, about 1e-3).

Each meta-update is a chain of three pieces, in this order:

    clip       scale the meta-gradient to a global norm of at most ``clip_grad_norm``
               (0 = no clipping)
    step       torch.optim's Adam (the paper), SGD or RMSprop (the paper's ablation: plain SGD
               does much worse) takes a step of phi
    schedule   its learning rate, set per epoch: ``meta_lr`` throughout ("constant", the paper)
               or a cosine decay to 0 ("cosine") that starts after ``meta_lr_decay_from`` of
               the epochs

The state (the torch optimizer's moments and step counts) round-trips through
``state_tensors`` / ``load_state_tensors``: tensors for a safetensors file and the rest for
JSON, so that a checkpoint holds it without pickling and a resumed run steps exactly as one
that was never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_choice, check_real
from l2o.errors import InvalidInput

STEPS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
META_OPTIMIZERS = tuple(STEPS)
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class MetaOptimizerConfig:
    """The [meta] options of the meta-optimizer (documented in MetaTrainConfig)."""

    meta_optimizer: str  # the step: one of META_OPTIMIZERS
    meta_lr: float  # its learning rate before the schedule
    meta_lr_schedule: str  # one of LR_SCHEDULES
    meta_lr_decay_from: float  # the fraction of the epochs before the cosine decay starts
    clip_grad_norm: float  # the clip; 0 = none

    def __post_init__(self) -> None:
        check_choice("meta_optimizer", self.meta_optimizer, META_OPTIMIZERS)
        check_real(
            "meta_lr", self.meta_lr, lambda x: 0 < x < math.inf, "must be a finite number > 0"
        )
        check_choice("meta_lr_schedule", self.meta_lr_schedule, LR_SCHEDULES)
        decay_from = self.meta_lr_decay_from
        check_real(
            "meta_lr_decay_from",
            decay_from,
            lambda x: 0 <= x < 1,
            "must be in [0, 1): the fraction of the epochs before the cosine decay starts",
        )
        if decay_from > 0 and self.meta_lr_schedule != "cosine":
            raise InvalidInput(
                f"Invalid meta_lr_decay_from: {decay_from!r} with meta_lr_schedule = "
                f"{self.meta_lr_schedule!r} (it needs meta_lr_schedule = 'cosine', or 0)"
            )
        check_real(
            "clip_grad_norm",
            self.clip_grad_norm,
            lambda x: 0 <= x < math.inf,
            "a number >= 0; 0 = no clipping",
        )


def clip(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale the ``.grad`` of ``params`` together so that their global norm is at most
    ``max_norm`` (0 = leave them); return the norm before."""
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(list(params), limit))


def scheduled_lr(config: MetaOptimizerConfig, epoch: int, epochs: int) -> float:
    """The learning rate during ``epoch`` (0-based) of ``epochs``: meta_lr, or with "cosine"
    meta_lr * (1 + cos(pi * progress)) / 2, progress going from 0 to 1 over the epochs after
    the first ``meta_lr_decay_from`` of them."""
    if config.meta_lr_schedule == "cosine":
        start = config.meta_lr_decay_from * epochs
        progress = max(0.0, epoch - start) / (epochs - start)
        return config.meta_lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.meta_lr


class MetaOptimizer:
    """Updates phi (``params``) from meta-gradients: clip, step, and the schedule over
    ``epochs`` epochs (see the module doc)."""

    def __init__(self, params: Iterable[Tensor], config: MetaOptimizerConfig, epochs: int) -> None:
        self.params = list(params)
        self.config, self.epochs = config, epochs
        self.step_optimizer = STEPS[config.meta_optimizer](self.params, lr=config.meta_lr)

    def start_epoch(self, epoch: int) -> None:
        """Set the schedule's learning rate for ``epoch`` (0-based)."""
        for group in self.step_optimizer.param_groups:
            group["lr"] = scheduled_lr(self.config, epoch, self.epochs)

    @property
    def lr(self) -> float:
        return self.step_optimizer.param_groups[0]["lr"]

    def step(self, grads: Sequence[Tensor]) -> float:
        """One meta-update of phi from ``grads`` (one per parameter, as ``params``; they become
        phi's ``.grad`` for the step, and the clip scales them in place); returns the
        meta-gradient's global norm before clipping."""
        for p, g in zip(self.params, grads):
            p.grad = g
        norm = clip(self.params, self.config.clip_grad_norm)
        self.step_optimizer.step()
        self.step_optimizer.zero_grad(set_to_none=True)
        return norm

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict of the step: {"state": {index: {...}}, "param_groups"}."""
        return self.step_optimizer.state_dict()

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The state split into tensors named ``INDEX/KEY`` (for safetensors) and the rest
        (param_groups and non-tensor entries, for JSON)."""
        state = self.state_dict()
        tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    tensors[f"{index}/{key}"] = value
                else:
                    rest["state"].setdefault(str(index), {})[key] = value
        return tensors, rest

    def load_state_tensors(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        """Restore what ``state_tensors`` returned."""
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            index, key = name.split("/", 1)
            state.setdefault(int(index), {})[key] = value
        for index, entries in rest["state"].items():
            state.setdefault(int(index), {}).update(entries)
        self.step_optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
