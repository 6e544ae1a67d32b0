"""Use any l2o optimizer, learned or hand-designed, as a ``torch.optim.Optimizer``.

    opt = l2o.optim.LearnedOptimizer(model.parameters(), optimizer="quadratic-lstm")
    for x, y in batches:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

Design
------
**One implementation of the maths.** The front-end never computes an update itself: it calls the
wrapped ``StepOptimizer``'s ``init_state`` and ``step``, the very functions that the meta-training
unroll (``l2o.meta.unroll``) and the evaluation loop (``l2o.evaluate.rollout``) call, and adds
``lr * update`` to each parameter in place. Given the same gradients, the updates are identical
to the evaluation loop's; the unroll's too, except for the MLP optimizer, whose step without
autograd (the front-end's and the evaluation loop's) equals its differentiable one (the unroll's)
to float rounding (``l2o.optimizers.mlp``).

**State per parameter, steps in batches.** As in torch.optim, ``self.state[p]`` is the state of
parameter ``p`` alone: the dict ``init_state([p])`` returns, e.g. ``{"step", "h", "c"}`` for the
LSTM, with ``h`` and ``c`` rows of shape (p.numel(), hidden) (and ``momentum`` and ``rms``,
rows of shape (p.numel(),), when it reads momenta or RMS-scaled inputs). It is what
``state_dict()`` saves, and it lets each parameter be skipped on its own. At each ``step()`` the
parameters of a group that have a gradient are split into *cohorts* that can share one ``step``
call: same device, same maths dtype, and the same non-coordinate state (step count, entries set
or None). A cohort's states are merged by concatenating their per-coordinate rows (the convention
of ``l2o.optimizers.base``: a state tensor whose first dimension is the number of coordinates,
or, under the state key ``"tensors"`` (``base.PER_TENSOR``: the MLP optimizer's per-tensor
scheduler), one row per parameter tensor, so one row per parameter), stepped in one batched
call, and split back into per-parameter views. In the usual loop every
parameter has a gradient at every step, so a group is one cohort and one call: for the LSTM, one
matmul per layer for all coordinates of all tensors of the group. The merged state of each cohort
is kept and reused while the per-parameter states are still the views it was split into, so a
step copies no state; an optimizer that can (``steps_in_place``: the MLP optimizer) writes the
new state into it (``l2o.optimizers.base``), as torch.optim's optimizers update theirs. An
optimizer whose state is not coordinatewise still works: its parameters step one call each.

**Skipped parameters.** A parameter without a gradient (``p.grad is None``) or frozen
(``requires_grad=False``) is not stepped and keeps its state. Its step count then falls behind
the others', so it steps in its own cohort afterwards: step-count-dependent maths (Adam's bias
correction) stays exact per parameter, as in torch.optim.

**Dtypes and devices.** float16/bfloat16 parameters are stepped with float32 maths: the gradient
is cast to float32, the state is float32, and the update is rounded once, when it is added. Other
dtypes step in their own dtype. State is made by ``init_state`` on each parameter's device; a
learned optimizer whose weights sit on another device is copied there once, on first use.

**Parameter groups.** Each group has its own ``optimizer`` (a ``StepOptimizer``, a pretrained
name or a checkpoint path), ``lr`` and ``weight_decay``; the constructor's arguments are their
defaults. ``lr`` is a factor on the update (default 1.0: the update as the optimizer was
meta-trained to make it), the value torch's learning rate schedulers scale. ``weight_decay`` is
decoupled weight decay with torch.optim.AdamW's semantics, on top of the learned update:

    theta <- theta * (1 - lr * weight_decay) + lr * update

with the group's (scheduled) ``lr``; the update is computed from the gradients (and, for the
optimizers that read them, the parameters) before the decay, and a parameter that is not stepped
is not decayed. With ``lr`` = 1.0, ``weight_decay`` is the fraction of theta removed per step:
AdamW's ``lr=1e-3, weight_decay=0.01`` shrinks by 1e-5 per step, i.e. ``weight_decay=1e-5``
here. Any other key is an error when the group is added, except ``param_names`` (torch.optim's,
for ``named_parameters()``) and the keys that LR schedulers write into groups (``initial_lr``,
``max_lr``, ``min_lr``, ``swa_lr``); schedulers and frameworks may add keys to the groups after
that. A ``GroupedOptimizer`` (e.g. a checkpoint with one LSTM for conv weights and one for the
rest) becomes one parameter group per group of its assignment.

**The loss.** ``step(closure)`` evaluates the closure with grad enabled and returns its loss (as
Lightning and accelerate call it); ``step(loss=loss)`` hands over the loss of the usual loop.
Optimizers with ``reads_loss = True`` receive it, detached, as ``step(grads, state, loss=loss)``;
the others never see it, and for them both are optional. A ``step()`` with neither, or a
closure that returns None, is an error (before any parameter moves) when a group whose
optimizer reads the loss has a parameter to step. Optimizers with ``reads_params = True``
receive the parameters' current values, detached, as ``params=``.

**state_dict.** As torch.optim's, with each group's ``optimizer`` saved as its ``spec()`` (a
JSON-ready description, so ``torch.load(weights_only=True)`` reads it): the weights of a learned
optimizer are not optimizer *state*; build the new front-end with the same optimizer, and
``load_state_dict`` checks that the descriptions match. Loaded state keeps its dtype (float32 for
half-precision parameters) and moves to each parameter's device; it is a copy, so stepping does
not change the dict it was loaded from. As in torch.optim, ``state_dict()`` holds the live state
tensors (which an optimizer that steps in place then changes): save it (``torch.save``) or
``copy.deepcopy`` it to keep a snapshot.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from l2o.checkpoint import load
from l2o.devices import flush_denormals
from l2o.errors import InvalidInput
from l2o.optimizers.base import PER_TENSOR, OptState, StepOptimizer, call_step, map_state
from l2o.optimizers.grouped import GroupedOptimizer

OptimizerLike = StepOptimizer | str | Path

HALF_DTYPES = (torch.float16, torch.bfloat16)

# Keys a parameter group may have when it is added. Ours, torch.optim's own, and the ones that
# torch's LR schedulers write into the groups (so a group rebuilt from a scheduled optimizer's
# param_groups, or added after the scheduler, may carry them).
GROUP_KEYS = ("params", "optimizer", "lr", "weight_decay", "hidden_dtype")
# What a learned optimizer's recurrent state (the LSTM's h and c) may be stored in.
HIDDEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOLERATED_GROUP_KEYS = ("param_names", "initial_lr", "max_lr", "min_lr", "swa_lr")


def maths_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the optimizer's maths runs in for parameters of ``dtype``."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


@dataclass
class _Cohort:
    """Parameters that stepped together in one ``step`` call, and their merged state."""

    params: list[Tensor]
    state: OptState  # rows of all parameters, concatenated in order
    views: list[OptState]  # self.state[p] of each parameter: views into ``state``
    leaves: list[list[Any]]  # the leaves of each view, to notice one being replaced

    def is_current(self, states: dict[Tensor, OptState]) -> bool:
        """Whether the per-parameter states are still exactly the views made from ``state``."""
        for p, view, leaves in zip(self.params, self.views, self.leaves):
            now = states.get(p)
            if now is not view:
                return False
            now_leaves = _leaves(now)
            if len(now_leaves) != len(leaves) or any(
                a is not b for a, b in zip(now_leaves, leaves)
            ):
                return False
        return True


class LearnedOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` that steps parameters with an l2o ``StepOptimizer``.

    Args:
        params: parameters or parameter groups (dicts), as for any torch optimizer. A group may
            set its own ``optimizer``, ``lr`` and ``weight_decay``; any other key is an error
            (but ``param_names`` and the LR schedulers' ``initial_lr``, ``max_lr``, ``min_lr``
            and ``swa_lr`` are accepted).
        optimizer: default optimizer of the groups: a ``StepOptimizer`` (learned, e.g.
            ``l2o.load(...)``, or hand-designed, e.g. ``l2o.Adam(lr=1e-3)``), the name of a
            shipped pretrained optimizer (``l2o.pretrained.list()``) or a checkpoint path / run
            directory. Required unless every group names its own.
        lr: default factor on the update, theta <- theta + lr * update (1.0: the update as the
            optimizer was trained to make it). LR schedulers change it per group, relative to
            its value when they are built: the transformers Trainer's default linear schedule
            would take it from 1.0 down to 0, so give the Trainer
            ``lr_scheduler_type="constant"`` (its ``learning_rate`` does not reach an optimizer
            built by you or through ``optimizer_cls_and_kwargs``).
        weight_decay: default decoupled weight decay, as torch.optim.AdamW's:
            theta <- theta * (1 - lr * weight_decay) + lr * update, with the group's ``lr``
            (default 0.0: none). With lr 1.0 it is the fraction of theta removed per step.
        hidden_dtype: default dtype of the recurrent state of the optimizers that keep one
            (``"bfloat16"`` or ``"float32"``; None, the default: the optimizer's own, float32
            for float32 parameters). ``"bfloat16"`` halves the coordinatewise LSTM's state (160
            instead of 320 bytes per parameter); its maths stays in float32 and each new h and
            c is rounded when stored (what that does to the losses:
            benchmarks/speed/results/speed-hidden-dtype.md).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        optimizer: OptimizerLike | None = None,
        lr: float = 1.0,
        weight_decay: float = 0.0,
        hidden_dtype: str | torch.dtype | None = None,
    ) -> None:
        _check_lr(lr)
        _check_weight_decay(weight_decay)
        hidden_dtype = _hidden_dtype_name(hidden_dtype)
        self._loaded: dict[str, StepOptimizer] = {}
        self._replicas: dict[tuple[int, torch.device], tuple[StepOptimizer, StepOptimizer]] = {}
        self._cohorts: dict[tuple[int, ...], _Cohort] = {}
        default = None if optimizer is None else self._resolve(optimizer)
        defaults = {
            "optimizer": default,
            "lr": lr,
            "weight_decay": weight_decay,
            "hidden_dtype": hidden_dtype,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_loaded", {})
        self.__dict__.setdefault("_replicas", {})
        self._cohorts = {}
        self.defaults.setdefault("weight_decay", 0.0)
        self.defaults.setdefault("hidden_dtype", None)
        for group in self.param_groups:  # saved before weight decay or hidden_dtype existed
            group.setdefault("weight_decay", 0.0)
            group.setdefault("hidden_dtype", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (see torch.optim); its ``optimizer``, ``lr`` and ``weight_decay`` default
        to the constructor's, and any other key is an error (see ``LearnedOptimizer``). A
        ``GroupedOptimizer`` adds one group per group of its assignment."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        _check_group_keys(param_group)
        optimizer = param_group.get("optimizer", self.defaults["optimizer"])
        if optimizer is None:
            raise InvalidInput(
                "Invalid optimizer: None (give optimizer= to LearnedOptimizer or to every "
                "parameter group: a StepOptimizer, a pretrained name or a checkpoint path)"
            )
        param_group["optimizer"] = self._resolve(optimizer)
        _check_lr(param_group.get("lr", self.defaults["lr"]))
        _check_weight_decay(param_group.get("weight_decay", self.defaults["weight_decay"]))
        if "hidden_dtype" in param_group:
            param_group["hidden_dtype"] = _hidden_dtype_name(param_group["hidden_dtype"])
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch.optim rejects sets with its own message
            params = list(params)
        param_group["params"] = params
        for p in params:
            t = p[1] if isinstance(p, tuple) else p  # (name, tensor) from named_parameters()
            if isinstance(t, Tensor) and not t.is_floating_point():
                raise InvalidInput(
                    f"Invalid parameter dtype: {t.dtype} (l2o optimizers step real "
                    f"floating-point tensors)"
                )
        for group in _expand_grouped(param_group):
            if group.get("hidden_dtype", self.defaults["hidden_dtype"]) is not None:
                _check_keeps_hidden(group["optimizer"])
            super().add_param_group(group)

    @torch.no_grad()
    def step(
        self, closure: Callable[[], Tensor] | None = None, *, loss: Tensor | float | None = None
    ) -> Tensor | float | None:
        """Update every parameter that has a gradient:
        theta <- theta * (1 - lr * weight_decay) + lr * update.

        ``closure`` re-evaluates the model and returns the loss; it runs with grad enabled
        (this is how Lightning and accelerate call ``step``). Alternatively pass the loss of
        the usual loop as ``loss=``. Either is handed, detached, to optimizers that read it;
        for those, one of them is required. Returns the closure's loss (or ``loss``), as
        torch.optim does. The learned step flushes denormals to zero on the CPU, as
        meta-training and rollouts do (``l2o.devices.flush_denormals``: a saturated gate makes
        them, and they slow the step many times); the closure runs as it would without.
        """
        loss, handed = self._step_loss(closure, loss)
        cohorts: dict[tuple[int, ...], _Cohort] = {}
        with flush_denormals():
            for group in self.param_groups:
                self._step_group(group, handed, cohorts)
        self._cohorts = cohorts
        return loss

    def _step_group(
        self, group: dict[str, Any], loss: Tensor | None, cohorts: dict[tuple[int, ...], _Cohort]
    ) -> None:
        self._init_together(group)
        batches: dict[tuple[Any, ...], list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            if not p.requires_grad or p.grad is None:
                if p in self.state:  # keep its state, but not the storage it shared with others
                    self.state[p] = map_state(_compact, self.state[p])
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LearnedOptimizer does not support sparse gradients")
            dtype = maths_dtype(p.dtype)
            if not self.state.get(p):
                optimizer = self._on_device(group["optimizer"], p.device)
                state = optimizer.init_state([p.detach().to(dtype, copy=True)])
                self.state[p] = _with_hidden_dtype(state, optimizer, group["hidden_dtype"])
            batches[(p.device, dtype, _signature(self.state[p], p.numel()))].append(p)

        for (device, dtype, _), params in batches.items():
            optimizer = self._on_device(group["optimizer"], device)
            key = tuple(id(p) for p in params)
            numels = [p.numel() for p in params]
            previous = self._cohorts.get(key)
            if previous is not None and previous.is_current(self.state):
                state = previous.state
            else:
                state = _merge([self.state[p] for p in params], numels)
            grads = [p.grad if p.grad.dtype == dtype else p.grad.to(dtype) for p in params]
            values = [p.detach().to(dtype) for p in params] if optimizer.reads_params else None
            # The state is the front-end's own: an optimizer may write the new one into it.
            updates, state = call_step(optimizer, grads, state, loss, values, in_place=True)
            lr, decay = group["lr"], 1.0 - group["lr"] * group["weight_decay"]
            for p, update in zip(params, updates):
                # In float32 for half-precision parameters, rounded once when stored.
                if decay == 1.0:
                    p.add_(update, alpha=lr)
                elif p.dtype == dtype:  # torch.optim.AdamW's operations, in its order
                    p.mul_(decay).add_(update, alpha=lr)
                else:
                    p.copy_(p.to(dtype).mul_(decay).add_(update, alpha=lr))
            views = _split(state, numels, sum(numels))
            for p, view in zip(params, views):
                self.state[p] = view
            cohorts[key] = _Cohort(params, state, views, [_leaves(v) for v in views])

    def _init_together(self, group: dict[str, Any]) -> None:
        """The first state of a group's parameters that step together, made by one
        ``init_state`` call and handed out as views, for optimizers with a recurrent state per
        coordinate (the LSTM's h and c: 320 bytes per parameter): made per parameter and then
        merged, it would be held twice at the first step. Others are made per parameter."""
        if not getattr(group["optimizer"], "hidden_keys", ()):
            return
        fresh: dict[tuple[Any, ...], list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            if p.requires_grad and p.grad is not None and not p.grad.is_sparse:
                if self.state.get(p):
                    return  # some have a state: the usual merge
                fresh[(p.device, maths_dtype(p.dtype))].append(p)
        for (device, dtype), params in fresh.items():
            optimizer = self._on_device(group["optimizer"], device)
            state = optimizer.init_state([p.detach().to(dtype, copy=True) for p in params])
            state = _with_hidden_dtype(state, optimizer, group["hidden_dtype"])
            numels = [p.numel() for p in params]
            views = _split(state, numels, sum(numels))
            for p, view in zip(params, views):
                self.state[p] = view
            key = tuple(id(p) for p in params)
            self._cohorts[key] = _Cohort(params, state, views, [_leaves(v) for v in views])

    def _step_loss(
        self, closure: Callable[[], Tensor] | None, loss: Tensor | float | None
    ) -> tuple[Tensor | float | None, Tensor | None]:
        """``step``'s loss: the closure's (run with grad enabled) or the one given, and the
        detached tensor handed to optimizers that read it (None without one, which is checked
        to be fine)."""
        if closure is not None:
            if loss is not None:
                raise InvalidInput("give step() a closure or a loss, not both")
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            self._check_loss_not_needed(closure is not None)
            return None, None
        return loss, loss.detach() if isinstance(loss, Tensor) else torch.as_tensor(loss)

    def _check_loss_not_needed(self, had_closure: bool) -> None:
        """Raise if a group whose optimizer reads the loss has a parameter to step."""
        for group in self.param_groups:
            optimizer = group["optimizer"]
            if optimizer.reads_loss and any(
                p.requires_grad and p.grad is not None for p in group["params"]
            ):
                name = _describe(optimizer).get("kind", type(optimizer).__qualname__)
                got = "the closure returned None" if had_closure else "step() got no loss"
                raise InvalidInput(
                    f"{got}, but optimizer {name!r} reads the loss: call step(closure) with a "
                    f"closure that returns the loss, or step(loss=loss)"
                )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict; each group's ``optimizer`` is saved as its description."""
        state_dict = super().state_dict()
        state_dict["param_groups"] = [
            {**g, "optimizer": _describe(g["optimizer"])} for g in state_dict["param_groups"]
        ]
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``: every hidden state and step count, and each group's ``lr``
        and ``weight_decay`` (0.0 for a state dict saved before weight decay existed).

        Each group keeps its optimizer, which must have the description it was saved with.
        State tensors keep their dtype and move to their parameter's device.
        """
        state_dict = state_dict.copy()  # shallow, as torch.optim does
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups, saved_groups = self.param_groups, copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise InvalidInput(
                f"loaded state dict has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(groups)}"
            )
        for i, (group, saved) in enumerate(zip(groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise InvalidInput(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(group['params'])}"
                )
            ours = _describe(group["optimizer"])
            if "optimizer" in saved and saved["optimizer"] != ours:
                raise InvalidInput(
                    f"loaded state dict's parameter group {i} was saved with optimizer "
                    f"{saved['optimizer']}, this optimizer's group {i} uses {ours}"
                )
        id_map = {
            saved_id: p
            for group, saved in zip(groups, saved_groups)
            for saved_id, p in zip(saved["params"], group["params"])
        }
        state: defaultdict[Any, Any] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                # A copy: optimizers may step the state in place, and the caller's stays as is.
                device = id_map[key].device
                state[id_map[key]] = map_state(lambda t, d=device: t.to(d, copy=True), value)
            else:
                state[key] = value
        new_groups = []
        for group, saved in zip(groups, saved_groups):
            saved.update(params=group["params"], optimizer=group["optimizer"])
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            new_groups.append(saved)
        self.__setstate__({"state": state, "param_groups": new_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _resolve(self, optimizer: Any) -> StepOptimizer:
        if isinstance(optimizer, StepOptimizer):
            return optimizer
        if isinstance(optimizer, (str, Path)):
            key = str(optimizer)
            if key not in self._loaded:
                self._loaded[key] = load(optimizer)
            return self._loaded[key]
        raise TypeError(
            f"Invalid optimizer: {optimizer!r} (a StepOptimizer, a pretrained name or a "
            f"checkpoint path)"
        )

    def _on_device(self, optimizer: StepOptimizer, device: torch.device) -> StepOptimizer:
        """``optimizer`` itself if its weights are on ``device`` (or it has none), else a copy
        made there on first use."""
        weights = next(itertools.chain(optimizer.parameters(), optimizer.buffers()), None)
        if weights is None or weights.device == device:
            return optimizer
        key = (id(optimizer), device)
        if key not in self._replicas or self._replicas[key][0] is not optimizer:
            self._replicas[key] = (optimizer, copy.deepcopy(optimizer).to(device))
        return self._replicas[key][1]


def _check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) or not isinstance(lr, (int, float)) or not lr >= 0.0:
        raise InvalidInput(f"Invalid learning rate: {lr} (must be a number >= 0)")


def _check_weight_decay(weight_decay: Any) -> None:
    if isinstance(weight_decay, Tensor) or not isinstance(weight_decay, (int, float)):
        raise InvalidInput(f"Invalid weight_decay: {weight_decay!r} (must be a number >= 0)")
    if not weight_decay >= 0.0:
        raise InvalidInput(f"Invalid weight_decay: {weight_decay} (must be a number >= 0)")


def _with_hidden_dtype(state: OptState, optimizer: StepOptimizer, name: str | None) -> OptState:
    """``state`` with the optimizer's recurrent state (its ``hidden_keys``) in ``name``'s
    dtype; as it is for None."""
    if name is None:
        return state
    dtype = HIDDEN_DTYPES[name]
    return {
        k: [t.to(dtype) for t in v] if k in optimizer.hidden_keys else v for k, v in state.items()
    }


def _hidden_dtype_name(value: Any) -> str | None:
    """``hidden_dtype`` as its name ("bfloat16", "float32") or None."""
    if value is None:
        return None
    names = {dtype: name for name, dtype in HIDDEN_DTYPES.items()}
    if isinstance(value, torch.dtype) and value in names:
        return names[value]
    if isinstance(value, str) and value.removeprefix("torch.") in HIDDEN_DTYPES:
        return value.removeprefix("torch.")
    raise InvalidInput(
        f"Invalid hidden_dtype: {value!r} (valid: {', '.join(HIDDEN_DTYPES)}, or None for the "
        "optimizer's own)"
    )


def _check_keeps_hidden(optimizer: StepOptimizer) -> None:
    if not getattr(optimizer, "hidden_keys", ()):
        raise InvalidInput(
            f"Invalid hidden_dtype for {type(optimizer).__name__}: it keeps no recurrent state "
            'that can be stored in another dtype (the coordinatewise LSTM, kind = "lstm", does)'
        )


def _check_group_keys(group: dict[Any, Any]) -> None:
    unknown = [k for k in group if k not in GROUP_KEYS and k not in TOLERATED_GROUP_KEYS]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise InvalidInput(
            f"Invalid parameter group key{'s' if len(unknown) > 1 else ''}: {names} (valid: "
            f"{', '.join(GROUP_KEYS)}; also accepted: {', '.join(TOLERATED_GROUP_KEYS)})"
        )


def _expand_grouped(group: dict[str, Any]) -> list[dict[str, Any]]:
    """A group driven by a ``GroupedOptimizer`` -> one group per group of its assignment."""
    optimizer = group["optimizer"]
    if not isinstance(optimizer, GroupedOptimizer):
        return [group]
    params = group["params"]
    if isinstance(params, set) or len(params) != len(optimizer.assignment):
        raise InvalidInput(
            f"Invalid parameters for a GroupedOptimizer: {len(params)} tensors, its assignment "
            f"has {len(optimizer.assignment)} (give them in the order it was built for)"
        )
    out = []
    for name, sub in optimizer.groups.items():
        mine = [p for p, g in zip(params, optimizer.assignment) if g == name]
        out += _expand_grouped({**group, "params": mine, "optimizer": sub})
    return out


def _describe(optimizer: StepOptimizer) -> dict[str, Any]:
    try:
        return optimizer.spec()
    except NotImplementedError:
        return {"kind": type(optimizer).__qualname__}


def _is_rows(value: Any, n: int) -> bool:
    """A per-coordinate state tensor: its first dimension is the number of coordinates."""
    return isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == n


def _signature(value: Any, n: int) -> Any:
    """What must be equal for states to merge: everything but the per-coordinate rows' values
    (``n``: one parameter's coordinates; its per-tensor entries have one row)."""
    if _is_rows(value, n):
        return ("rows", value.dtype, value.device, tuple(value.shape[1:]))
    if isinstance(value, Tensor):
        return ("tensor", id(value))  # shared only if it is the very same tensor
    if isinstance(value, dict):
        return (
            "dict",
            tuple((k, _signature(v, 1 if k == PER_TENSOR else n)) for k, v in value.items()),
        )
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_signature(v, n) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("value", type(value).__name__, value)


def _per_tensor(key: Any, numels: list[int]) -> list[int]:
    """The rows of each parameter in the state entry ``key``: one under ``PER_TENSOR``."""
    return [1] * len(numels) if key == PER_TENSOR else numels


def _merge(states: list[Any], numels: list[int]) -> Any:
    """The state of several parameters from theirs (equal signatures): rows concatenated."""
    first = states[0]
    if len(states) == 1:
        return first
    if _is_rows(first, numels[0]):
        if all(s.dim() == 2 and not s.is_contiguous() and s.t().is_contiguous() for s in states):
            # unit-major rows (the LSTM's (N, hidden) h and c): kept so, not transposed
            return torch.cat([s.t() for s in states], dim=1).t()
        return torch.cat(states)
    if isinstance(first, dict):
        return {k: _merge([s[k] for s in states], _per_tensor(k, numels)) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_merge([s[i] for s in states], numels) for i in range(len(first)))
    return first


def _split(value: Any, numels: list[int], total: int) -> list[Any]:
    """The inverse of ``_merge``: each parameter's state, rows as views of ``value``'s."""
    if len(numels) == 1:
        return [value]
    if _is_rows(value, total):
        return list(torch.split(value, numels))
    if isinstance(value, dict):
        parts = {}
        for k, v in value.items():
            rows = _per_tensor(k, numels)
            parts[k] = _split(v, rows, total if rows is numels else len(numels))
        return [{k: parts[k][i] for k in value} for i in range(len(numels))]
    if isinstance(value, (list, tuple)):
        parts_list = [_split(v, numels, total) for v in value]
        return [type(value)(part[i] for part in parts_list) for i in range(len(numels))]
    return [value] * len(numels)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _compact(t: Tensor) -> Tensor:
    """``t``, or a copy of it if it is a view of a larger storage (that it would keep alive)."""
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone()
    return t


def __getattr__(name: str) -> Any:
    """``l2o.optim.ShardedLearnedOptimizer``: the step sharded over a DDP job's processes
    (defined in ``l2o.sharded``, which builds on this module)."""
    if name == "ShardedLearnedOptimizer":
        from l2o.sharded import ShardedLearnedOptimizer

        return ShardedLearnedOptimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LearnedOptimizer", "maths_dtype"]
