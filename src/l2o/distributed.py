"""Several processes, one job: meta-training and evaluation on torch.distributed (torchrun).

``l2o train`` and ``l2o evaluate`` run under torchrun as they run alone::

    torchrun --nproc_per_node=2 -m l2o train configs/quadratic.toml --run-dir runs/q \\
        --set meta.tasks_per_epoch=2

Every process runs the same command; ``World`` says which of them this one is (``rank``) and
how many there are (``size``), and carries the few collectives the rest of l2o needs: a sum
(``all_reduce``), gathering objects in rank order (``gather``), a value that rank 0 computes and
every rank receives (``from_main``) and a check that every rank passes (``agree``). In a single
process ``World()`` is rank 0 of 1 and every collective is the identity, so the code that uses
it runs unchanged (and gives the same numbers) without torch.distributed.

How the work is split (see docs/distributed.md):

* meta-training: an epoch's meta-batch is ``meta.tasks_per_epoch`` tasks (ES / PES: tasks x
  ``meta.pairs`` antithetic pairs); each process unrolls a contiguous share of them
  (``share``), the meta-gradients are summed over the processes and divided by the number of
  tasks, so every process takes the same meta-optimizer step. The union of the shares is the
  single-process meta-batch, whatever the number of processes;
* validation and ``l2o evaluate``: rollouts are shared out and gathered in order, so the scores
  and tables are the single process's.

Rank 0 alone writes (checkpoints, metrics, TensorBoard, results); it reads the run directory
and hands what it read to the others (``from_main``), so the nodes of a job need no shared
file system beyond the inputs every process reads (config, dataset, checkpoint to evaluate).

Errors: a check that fails on any rank fails on all of them with one line, printed by rank 0
(``agree``, ``SharedError``); a process that stops (killed, out of memory, a node lost) makes
the others fail at their next collective with one line each (``ProcessLost``); torchrun then
stops the job. Checkpoints are written atomically, so what is on disk is always whole:
``--resume`` (or torchrun's ``--max-restarts``) continues from ``checkpoints/last``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from l2o.errors import InvalidInput, L2OError

T = TypeVar("T")

# What torchrun (torch.distributed.elastic) sets in every process it starts.
RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"


class SharedError(L2OError):
    """An error that every rank of the job raises with the same message: only rank 0 prints
    it (``show``), the others exit quietly with the same status."""

    def __init__(self, message: str, show: bool) -> None:
        super().__init__(message)
        self.show = show


class ProcessLost(L2OError):
    """A collective failed: another process of the job stopped (or could not be reached)."""


def _launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def under_torchrun() -> bool:
    """Whether this process is one of several that torchrun (or another launcher that sets
    ``WORLD_SIZE``) started for one job."""
    return _launched_world_size() > 1


def restart_count() -> int:
    """How often torchrun restarted this job's processes (``--max-restarts``): 0 at first."""
    try:
        return int(os.environ.get(RESTART_COUNT, "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its
    node of ``local_size``. ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def current(cls) -> World:
        """The default process group's world if torch.distributed is initialised, else a
        single process."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        size = dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        return cls(dist.get_rank(), size, local, local_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"process {self.rank} of {self.size}"

    # -- sharing work ------------------------------------------------------------------------
    def shares(self, n: int) -> list[range]:
        """``range(n)`` cut into ``size`` contiguous pieces, the first ``n % size`` one longer:
        piece r is rank r's."""
        base, extra = divmod(n, self.size)
        bounds = [r * base + min(r, extra) for r in range(self.size + 1)]
        return [range(bounds[r], bounds[r + 1]) for r in range(self.size)]

    def share(self, n: int) -> range:
        """This rank's piece of ``range(n)`` (see ``shares``)."""
        return self.shares(n)[self.rank]

    def device(self, device: str) -> str:
        """The device this process computes on for a configured ``device``: "cuda" is each
        process's own GPU (cuda:LOCAL_RANK) when several share a node; others as given."""
        if self.distributed and device == "cuda" and self.local_size > 1:
            return f"cuda:{self.local_rank}"
        return device

    def check_device(self, device: str, what: str = "meta.device") -> None:
        """Refuse a device that names one GPU when several processes share the node."""
        if self.local_size > 1 and torch.device(device).type == "cuda" and ":" in device:
            raise InvalidInput(
                f"{what} = {device!r} names one GPU, but {self.local_size} processes run on "
                f'this node: write "cuda" (each process takes the GPU of its LOCAL_RANK)'
            )

    # -- collectives -------------------------------------------------------------------------
    def all_reduce(self, tensor: Tensor) -> Tensor:
        """The sum of ``tensor`` over the ranks (every rank gets the same values); ``tensor``
        itself in a single process."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        where = _communication_device(tensor)
        moved = tensor.to(where)
        _collective(self, lambda: dist.all_reduce(moved))
        return moved.to(tensor.device)

    def all_reduce_max(self, value: int) -> int:
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=_communication_device(None))
        _collective(self, lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return int(t.item())

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank (tensors travel pickled)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        _collective(self, lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        _collective(self, lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            _collective(self, dist.barrier)

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 alone (reading or writing the run directory), its result
        handed to every rank. If it raises an ``L2OError`` or ``OSError``, every rank raises
        ``SharedError`` with its message (rank 0 prints it); a single process raises the error
        itself."""
        if not self.distributed:
            return fn()
        outcome: tuple[str, Any]
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except (L2OError, OSError) as e:
                self.broadcast(("error", _message(e)))
                raise SharedError(_message(e), show=True) from e
            return self.broadcast(outcome)[1]
        kind, value = self.broadcast(None)
        if kind == "error":
            raise SharedError(value, show=False)
        return value

    def agree(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank; if it raises an ``L2OError`` or ``OSError`` on any rank,
        every rank raises ``SharedError`` with the first failure's message (rank 0 prints it,
        naming the rank where it happened if that was not rank 0)."""
        if not self.distributed:
            return fn()
        try:
            result, failure = fn(), None
        except (L2OError, OSError) as e:
            result, failure = None, _message(e)
        failures = [(r, f) for r, f in enumerate(self.gather(failure)) if f is not None]
        if failures:
            rank, message = failures[0]
            where = "" if rank == 0 else f"on {World(rank, self.size).describe()}: "
            raise SharedError(where + message, show=self.is_main)
        return result  # type: ignore[return-value]

    def everywhere(self, error: L2OError) -> L2OError:
        """``error``, raised identically by every rank (a decision taken on values that every
        rank holds alike): printed by rank 0 alone."""
        if not self.distributed:
            return error
        shared = SharedError(str(error), show=self.is_main)
        shared.__cause__ = error
        return shared


def _message(error: BaseException) -> str:
    return " ".join(str(error).split())


def _communication_device(tensor: Tensor | None) -> torch.device:
    """Where a collective's tensor goes: where it is, unless it is on a GPU and the job has no
    NCCL (gloo alone: the CPU). The job's "cpu:gloo,cuda:nccl" group sends CPU tensors
    through gloo and CUDA ones through NCCL."""
    import torch.distributed as dist

    if tensor is None or (tensor.is_cuda and "nccl" not in str(dist.get_backend())):
        return torch.device("cpu")
    return tensor.device


def _collective(world: World, call: Callable[[], Any]) -> Any:
    """Run a collective; a failure (a peer that stopped: gloo's "Connection closed by peer",
    NCCL's errors, a timeout) becomes one ``ProcessLost`` line."""
    try:
        return call()
    except RuntimeError as e:  # torch.distributed's DistError and its kinds are RuntimeErrors
        raise ProcessLost(
            f"{world.describe()}: another process of the job stopped or cannot be reached "
            f"({_first_sentence(e)}); the files written so far are complete: rerun with "
            f"--resume (torchrun --max-restarts does it by itself)"
        ) from e


def _first_sentence(error: BaseException) -> str:
    """The gist of a backend's error: its first sentence, without the source location that
    gloo puts first ("[.../pair.cc:553] Connection closed by peer [127.0.0.1]:14001")."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(error).split()))
    sentence = re.split(r"(?<=[^.])\.\s", text, maxsplit=1)[0]
    return (sentence[:200] or type(error).__name__).rstrip(".")


def init_from_environment() -> World:
    """Join the job that torchrun started (``WORLD_SIZE`` > 1): the default process group
    over env:// rendezvous, gloo for CPU tensors and NCCL for CUDA ones when this torch has
    CUDA and a GPU is visible (each process on the GPU of its ``LOCAL_RANK``). A single process
    (no torchrun, or ``--nproc_per_node=1``) gets ``World()`` and no process group."""
    if not under_torchrun():
        return World()
    import torch.distributed as dist

    if not dist.is_available():
        raise InvalidInput(
            "this torch build has no torch.distributed: run l2o in one process (without "
            "torchrun), or install a torch with distributed support"
        )
    if dist.is_initialized():
        return World.current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    try:
        store, rank, size = next(dist.rendezvous("env://"))
        # torchrun's restarts (--max-restarts) keep the store of the first attempt: without a
        # prefix of its own, an attempt may read the address a process of the last one
        # published, and fail to connect to it.
        store = dist.PrefixStore(f"l2o/attempt-{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size)
    except (RuntimeError, ValueError) as e:
        raise ProcessLost(
            f"process {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')} "
            f"could not join the job's other processes ({_first_sentence(e)}); check "
            f"torchrun's rendezvous options (--rdzv-endpoint, --nnodes, --node-rank)"
        ) from e
    return World.current()


def finish() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
