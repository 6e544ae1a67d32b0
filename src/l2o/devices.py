"""Check that a torch device exists on this machine before anything is written for it."""

from __future__ import annotations

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
