"""A learned optimizer's step sharded over the processes of a DDP job (``l2o.optim``).

Under DDP every process holds the whole model and, after ``backward()``, the same averaged
gradients; with ``l2o.optim.LearnedOptimizer`` every process then runs the same learned step
on every coordinate and keeps the whole optimizer state. ``ShardedLearnedOptimizer`` divides
that work and state by the number of processes, as ``torch.distributed.optim.
ZeroRedundancyOptimizer`` does for Adam: each process steps only its shard, and the new
parameter values are all-gathered, so every process ends the step with the same parameters as
the unsharded step gives::

    model = DistributedDataParallel(net)
    opt = l2o.optim.ShardedLearnedOptimizer(model.parameters(), optimizer="mnist-mlp-lstm")
    for x, y in batches:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step(loss=loss)
        opt.zero_grad()

**What a shard is.** The parameters of each group (one ``optimizer``, ``lr``,
``weight_decay``; device and dtype alike) are cut by the optimizer's kind:

* coordinatewise optimizers (the paper's LSTM, RNNprop, l2o's Adam, SGD, RMSprop: each
  coordinate's update depends on its own gradient and state alone): the group's coordinates,
  flattened in order, are cut into W contiguous pieces of equal length (the last shorter);
  process r steps piece r as one parameter. Exact: every coordinate gets the update the
  unsharded step gives it (to float rounding of the optimizer's batched maths, which may round
  differently for another number of rows). Every parameter of such a group must have a
  gradient at every step, or none of them (a parameter skipped alone keeps its own step count
  in the unsharded step; a shard cannot);
* optimizers that read statistics of whole tensors (``per_tensor_statistics``: the MLP
  optimizer's per-tensor normalisation and scheduler): whole tensors, each process owning a
  set of them (the largest first, each to the process with the fewest coordinates so far), so
  the work divides only as evenly as the tensors allow;
* optimizers that couple coordinates across tensors (``couples_coordinates``: LSTM+GAC,
  NTM-BFGS, L-BFGS) cannot be sharded exactly: refused with one line.

The state of a process is its shard's alone: ``state_dict()`` holds it (save one per process)
and ``load_state_dict`` takes it back on the same process of a job of the same size.
Without torch.distributed (or with one process) it is ``LearnedOptimizer``'s step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.distributed import World
from l2o.errors import InvalidInput
from l2o.optim import LearnedOptimizer, OptimizerLike, _describe, maths_dtype
from l2o.optimizers.base import StepOptimizer


@dataclass
class _Shard:
    """One group's parameters of one device and dtype, and this process's part of them."""

    params: list[Tensor]  # all of them, in order
    by_tensor: bool  # whole tensors (per-tensor statistics) or a piece of the coordinates
    owner: list[int]  # by_tensor: the process that steps each parameter
    start: int  # by coordinates: this process's piece, start:stop of the flat coordinates
    stop: int
    length: int  # the longest piece of any process (what every process sends)
    inner: LearnedOptimizer  # steps this process's part
    flat: Tensor | None = None  # by coordinates: this process's piece, as one parameter


class ShardedLearnedOptimizer(LearnedOptimizer):
    """``LearnedOptimizer`` whose step is sharded over the processes of ``world`` (default:
    torch.distributed's default process group, if initialised): see the module doc.

    Takes the same arguments as ``LearnedOptimizer``; parameter groups, LR schedulers,
    ``lr``, ``weight_decay``, closures and ``loss=`` work as there."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        optimizer: OptimizerLike | None = None,
        lr: float = 1.0,
        weight_decay: float = 0.0,
        world: World | None = None,
    ) -> None:
        self.world = World.current() if world is None else world
        self._shards: dict[tuple[Any, ...], _Shard] = {}
        super().__init__(params, optimizer, lr, weight_decay)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for group in self.param_groups:
            _check_shardable(group["optimizer"])

    @torch.no_grad()
    def step(
        self, closure: Callable[[], Tensor] | None = None, *, loss: Tensor | float | None = None
    ) -> Tensor | float | None:
        """Step this process's shard of every parameter that has a gradient, then all-gather
        the new values (see ``LearnedOptimizer.step`` for ``closure`` and ``loss``)."""
        loss, handed = self._step_loss(closure, loss)
        for index, group in enumerate(self.param_groups):
            for shard in self._group_shards(index, group):
                self._step_shard(shard, group, handed)
        return loss

    # -- the plan ------------------------------------------------------------------------------
    def _group_shards(self, index: int, group: dict[str, Any]) -> list[_Shard]:
        buckets: dict[tuple[Any, ...], list[Tensor]] = {}
        for p in group["params"]:
            if p.requires_grad:
                buckets.setdefault((p.device, maths_dtype(p.dtype), p.dtype), []).append(p)
        shards = []
        for (device, _, dtype), params in buckets.items():
            key = (index, device, dtype, tuple(id(p) for p in params))
            if key not in self._shards:
                self._shards[key] = self._plan(params, group)
            shards.append(self._shards[key])
        return shards

    def _plan(self, params: list[Tensor], group: dict[str, Any]) -> _Shard:
        optimizer: StepOptimizer = group["optimizer"]
        size, rank = self.world.size, self.world.rank
        inner_group = {"optimizer": optimizer, "lr": group["lr"], "weight_decay": 0.0}
        if getattr(optimizer, "per_tensor_statistics", False):
            owner, load = [], [0] * size
            order = sorted(range(len(params)), key=lambda i: -params[i].numel())
            owner = [0] * len(params)
            for i in order:
                r = min(range(size), key=lambda r: (load[r], r))
                owner[i] = r
                load[r] += params[i].numel()
            mine = [p for p, o in zip(params, owner) if o == rank]
            inner = LearnedOptimizer(mine or [_placeholder(params[0])], **inner_group)
            return _Shard(params, True, owner, 0, 0, max(load), inner)
        total = sum(p.numel() for p in params)
        length = math.ceil(total / size)
        start, stop = min(rank * length, total), min((rank + 1) * length, total)
        values = _flat_piece(params, start, stop)
        flat = values.clone().requires_grad_(True)
        inner = LearnedOptimizer([flat], **inner_group)
        return _Shard(params, False, [], start, stop, length, inner, flat)

    # -- the step ------------------------------------------------------------------------------
    def _step_shard(self, shard: _Shard, group: dict[str, Any], loss: Tensor | None) -> None:
        for inner_group in shard.inner.param_groups:  # what schedulers set on the outer group
            inner_group["lr"] = group["lr"]
            inner_group["weight_decay"] = group["weight_decay"]
        if shard.by_tensor:
            if any(p.grad is not None for p in shard.params):
                mine = [p for p, o in zip(shard.params, shard.owner) if o == self.world.rank]
                if mine:
                    shard.inner.step(loss=loss)
                self._exchange_tensors(shard)
            return
        with_grad = [p.grad is not None for p in shard.params]
        if not any(with_grad):
            return
        if not all(with_grad):
            missing = with_grad.index(False)
            raise InvalidInput(
                f"ShardedLearnedOptimizer: parameter {missing} of a group has no gradient while "
                f"others have (a coordinatewise optimizer's shard steps every parameter of the "
                f"group together): give it a zero gradient, freeze it (requires_grad=False) or "
                f"put it in a group of its own"
            )
        assert shard.flat is not None
        shard.flat.copy_(_flat_piece(shard.params, shard.start, shard.stop))
        grads = [p.grad for p in shard.params]
        shard.flat.grad = _flat_piece(grads, shard.start, shard.stop).to(shard.flat.dtype)
        if shard.stop > shard.start:
            shard.inner.step(loss=loss)
        shard.flat.grad = None
        self._exchange_coordinates(shard)

    def _exchange_coordinates(self, shard: _Shard) -> None:
        """Every process's new piece, gathered into every parameter."""
        assert shard.flat is not None
        if not self.world.distributed:
            new = shard.flat
        else:
            piece = shard.flat.new_zeros(shard.length)
            piece[: shard.stop - shard.start] = shard.flat
            new = torch.cat(_all_gather(self.world, piece))
        offset = 0
        for p in shard.params:
            p.copy_(new[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def _exchange_tensors(self, shard: _Shard) -> None:
        """Every process's tensors, from their owners into every process's parameters."""
        if not self.world.distributed:
            return
        mine = [p.reshape(-1) for p, o in zip(shard.params, shard.owner) if o == self.world.rank]
        piece = shard.params[0].new_zeros(shard.length)
        if mine:
            packed = torch.cat(mine)
            piece[: packed.numel()] = packed
        pieces = _all_gather(self.world, piece)
        offsets = [0] * self.world.size
        for p, owner in zip(shard.params, shard.owner):
            if owner != self.world.rank:
                p.copy_(pieces[owner][offsets[owner] : offsets[owner] + p.numel()].view_as(p))
            offsets[owner] += p.numel()

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This process's state: its shards' (each a ``LearnedOptimizer`` state dict), with the
        groups as ``LearnedOptimizer.state_dict`` saves them and the job's size and rank."""
        groups = super().state_dict()["param_groups"]
        return {
            "param_groups": groups,
            "state": {},
            "sharded": {
                "world_size": self.world.size,
                "rank": self.world.rank,
                "shards": [
                    {"key": [i, str(device), str(dtype)], "state": s.inner.state_dict()}
                    for (i, device, dtype, _), s in self._shards.items()
                ],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what ``state_dict()`` saved on the same rank of a job of the same size, for
        the same parameters and optimizers."""
        sharded = state_dict.get("sharded")
        if sharded is None:
            raise InvalidInput(
                "not a ShardedLearnedOptimizer state dict (no 'sharded' entry): load a "
                "LearnedOptimizer's state dict into a LearnedOptimizer"
            )
        if (sharded["world_size"], sharded["rank"]) != (self.world.size, self.world.rank):
            raise InvalidInput(
                f"this state dict is rank {sharded['rank']}'s of {sharded['world_size']} "
                f"processes; this is {self.world.describe()} (load each process's own, in a job "
                f"of the same size)"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise InvalidInput(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            ours = _describe(group["optimizer"])
            if saved.get("optimizer") != ours or len(saved["params"]) != len(group["params"]):
                raise InvalidInput(
                    f"loaded state dict's parameter group {i} does not match this optimizer's "
                    f"(saved with {saved.get('optimizer')} and {len(saved['params'])} "
                    f"parameters; here {ours} and {len(group['params'])})"
                )
            group["lr"], group["weight_decay"] = saved["lr"], saved["weight_decay"]
        shards = {}
        for index, group in enumerate(self.param_groups):
            for shard in self._group_shards(index, group):
                key = next(k for k, s in self._shards.items() if s is shard)
                shards[(key[0], str(key[1]), str(key[2]))] = shard
        for saved_shard in sharded["shards"]:
            key = tuple(saved_shard["key"])
            if key not in shards:
                raise InvalidInput(f"loaded state dict has a shard {list(key)} this one has not")
            shards[key].inner.load_state_dict(saved_shard["state"])


def _check_shardable(optimizer: StepOptimizer) -> None:
    if getattr(optimizer, "couples_coordinates", False):
        name = _describe(optimizer).get("kind", type(optimizer).__qualname__)
        raise InvalidInput(
            f"optimizer {name!r} couples coordinates across tensors (couples_coordinates), so "
            f"its step cannot be sharded exactly: use l2o.optim.LearnedOptimizer on every process"
        )


def _flat_piece(tensors: list[Tensor], start: int, stop: int) -> Tensor:
    """Coordinates ``start:stop`` of the tensors flattened and concatenated in order (only
    the tensors that overlap it are read)."""
    pieces, offset = [], 0
    for t in tensors:
        n = t.numel()
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            pieces.append(t.reshape(-1)[lo:hi])
        offset += n
    if not pieces:
        return tensors[0].new_zeros(0)
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()


def _placeholder(like: Tensor) -> Tensor:
    """A parameter for a process that owns no tensor of a group (never stepped)."""
    return like.new_zeros(1).requires_grad_(True)


def _all_gather(world: World, piece: Tensor) -> list[Tensor]:
    import torch.distributed as dist

    from l2o.distributed import _collective

    pieces = [torch.empty_like(piece) for _ in range(world.size)]
    _collective(world, lambda: dist.all_gather(pieces, piece))
    return pieces


__all__ = ["ShardedLearnedOptimizer"]
