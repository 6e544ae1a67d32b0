"""Safe, self-describing checkpoints: safetensors weights + a JSON record, never unpickled.

A checkpoint is one file ``NAME.safetensors``. Its header metadata holds the JSON record
(optimizer spec, preprocessing, training config, metrics, library version), so weights and
record are written together in one atomic rename; ``NAME.json`` beside it is a readable copy.
Tensors whose names start with ``meta_optimizer/`` are the meta-training state for resuming.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from l2o.errors import CheckpointError
from l2o.optimizers import StepOptimizer, from_spec

FORMAT = "l2o-checkpoint"
FORMAT_VERSION = 1
RESUME_PREFIX = "meta_optimizer/"
GROUP_PREFIX = "groups."  # the weights of GroupedOptimizer's group NAME are groups.NAME.*


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def checkpoint_path(path: str | Path) -> Path:
    """Accept ``x.safetensors``, ``x.json`` or ``x`` and return the ``.safetensors`` path."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


def save_checkpoint(
    path: str | Path,
    optimizer: StepOptimizer,
    record: Mapping[str, Any],
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> Path:
    """Save the optimizer's weights with ``record`` (any JSON-ready dict). Returns the path."""
    from l2o import __version__

    path = checkpoint_path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in optimizer.state_dict().items()}
    for name, t in (extra_tensors or {}).items():
        tensors[name] = t.detach().to("cpu").contiguous()
    full_record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "l2o_version": __version__,
        "optimizer": optimizer.spec(),
        **record,
    }
    text = json.dumps(full_record, indent=2, sort_keys=True)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"l2o": text}))
    atomic_write_text(path.with_suffix(".json"), text + "\n")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read (tensors, record) from a checkpoint, with a clear error if it is missing or corrupt."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a safetensors file ({e})"
        ) from e
    if "l2o" not in metadata:
        raise CheckpointError(f"checkpoint {path} has no l2o record (not written by l2o?)")
    try:
        record = json.loads(metadata["l2o"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has a corrupt record ({e})") from e
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {record.get('format')!r} version "
            f"{record.get('format_version')!r}; this l2o reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return tensors, record


def _groups(names: Iterable[str]) -> list[str]:
    """The parameter groups of weight names (``groups.<name>.*``), sorted."""
    return sorted({n.split(".", 2)[1] for n in names if n.startswith(GROUP_PREFIX)})


def _check_groups(expected: Iterable[str], found: Iterable[str], source: str) -> None:
    """Name the learned groups that differ between an optimizer and a checkpoint."""
    want, have = _groups(expected), _groups(found)
    if not want and not have:
        return  # neither is grouped
    if not want or not have:
        if want:
            grouped, groups, other = "the optimizer", want, "the checkpoint"
        else:
            grouped, groups, other = "the checkpoint", have, "the optimizer"
        raise CheckpointError(
            f"checkpoint {source} does not fit the optimizer: {grouped} has learned parameter "
            f"groups {groups} but {other} holds one ungrouped optimizer"
        )
    missing, extra = [g for g in want if g not in have], [g for g in have if g not in want]
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {source} does not fit the optimizer's parameter groups: missing "
            f"group(s) {missing} (learned in the optimizer, no weights in the checkpoint), "
            f"extra group(s) {extra} (weights in the checkpoint, not a learned group of the "
            f"optimizer); the checkpoint's groups are {have}"
        )


def load_weights(optimizer: StepOptimizer, tensors: Mapping[str, Tensor], source: str) -> None:
    """Load the optimizer's own tensors strictly: missing or unexpected names are an error,
    and for grouped optimizers the missing and extra groups are named."""
    own = {k: v for k, v in tensors.items() if not k.startswith(RESUME_PREFIX)}
    expected = set(optimizer.state_dict())
    _check_groups(expected, own, source)
    missing, extra = sorted(expected - set(own)), sorted(set(own) - expected)
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {source} does not fit the optimizer: missing {missing}, unexpected {extra}"
        )
    for name, value in own.items():
        target = optimizer.state_dict()[name]
        if value.shape != target.shape:
            raise CheckpointError(
                f"checkpoint {source}: {name} has shape {tuple(value.shape)}, "
                f"expected {tuple(target.shape)}"
            )
    optimizer.load_state_dict(dict(own))


def load_checkpoint(path: str | Path) -> tuple[StepOptimizer, dict[str, Any]]:
    """Rebuild the optimizer a checkpoint describes and load its weights. Returns (opt, record)."""
    tensors, record = read_checkpoint(path)
    try:
        optimizer = from_spec(record["optimizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} describes an invalid optimizer ({e})") from e
    load_weights(optimizer, tensors, str(path))
    return optimizer.eval(), record


def resolve(name_or_path: str | Path) -> Path:
    """The checkpoint file meant by a pretrained name, a run directory (its best checkpoint),
    or a checkpoint path (``x.safetensors``, ``x.json`` or ``x``)."""
    from l2o import pretrained

    if isinstance(name_or_path, str) and name_or_path in pretrained.names():
        return pretrained.path(name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        return path / "checkpoints" / "best.safetensors"
    if not checkpoint_path(path).exists():
        raise CheckpointError(
            f"no checkpoint or pretrained optimizer named {str(name_or_path)!r} "
            f"(pretrained: {', '.join(pretrained.names()) or 'none'})"
        )
    return checkpoint_path(path)


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> StepOptimizer:
    """Load a trained optimizer, ready to use: a shipped pretrained name (see
    ``l2o.pretrained.names()``), a checkpoint path, or a run directory (its best checkpoint)."""
    optimizer, _ = load_checkpoint(resolve(name_or_path))
    return optimizer.to(device)
