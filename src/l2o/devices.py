"""Check that a torch device exists on this machine before anything is written for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from l2o.errors import InvalidInput


def check_device(name: str | torch.device) -> torch.device:
    """``torch.device(name)`` if this machine has it, else a one-line ``InvalidInput``."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise InvalidInput(f"Invalid device: {name!r} (e.g. cpu, cuda, cuda:1, mps)") from e
    if device.type == "cuda":
        build = "" if torch.version.cuda else ", a build without CUDA"
        if not torch.cuda.is_available():
            raise InvalidInput(
                f"Invalid device: {name!r}: CUDA is not available on this machine "
                f"(torch {torch.__version__}{build}); use cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InvalidInput(
                f"Invalid device: {name!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput(f"Invalid device: {name!r}: MPS is not available on this machine")
    return device


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Within the block, CPU float maths flushes denormal numbers (|x| < 1.2e-38 in float32) to
    zero on this thread, as TensorFlow does by default, then goes back to what it was.

    A saturated LSTM gate gives numbers like sigmoid(-90) = 8e-40, a denormal, and operations
    that read denormals run many times slower on x86 CPUs (the MNIST preset's epochs:
    benchmarks/speed/results/speed-versus.md). Nothing a learned optimizer computes depends on
    numbers that small. Threads that torch starts for intra-op work keep their own setting.
    """
    was = bool(torch.tensor([1e-39]).mul(1.0).item() == 0.0)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)
