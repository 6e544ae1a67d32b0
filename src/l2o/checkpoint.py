"""Safe, self-describing checkpoints: safetensors weights + a JSON record, never unpickled.

A checkpoint is one file ``NAME.safetensors``. Its header metadata holds the JSON record
(optimizer spec, preprocessing, training config, metrics, library version), so weights and
record are written together in one atomic rename; ``NAME.json`` beside it is a readable copy.
Tensors whose names start with ``meta_optimizer/`` are the meta-training state for resuming.

Checkpoints you can trust (format version 2): the record holds a ``checksum``, the sha256 of
every tensor (name, dtype, shape and bytes, in sorted name order) and of the record itself
(canonical JSON, without the checksum). Loading recomputes it, so a byte changed anywhere in
the file is refused with a one-line ``CheckpointError``, as is a truncated file or one whose
tensors hold nan or inf. Version-1 checkpoints (no checksum) still load; their tensors must
still be finite. The record inside the ``.safetensors`` is the one that counts: a ``NAME.json``
that is unreadable or disagrees with it (e.g. edited by hand) only gets a warning naming the
fields that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
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
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no checksum
CHECKSUM = "checksum"  # the record's field: "sha256:<hex digest>"
RESUME_PREFIX = "meta_optimizer/"
GROUP_PREFIX = "groups."  # the weights of GroupedOptimizer's group NAME are groups.NAME.*
_MISSING = object()


TEMPORARY_SUFFIX = ".tmp"  # atomic writes go to .NAME.XXXX.tmp, then are renamed to NAME


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
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


def remove_interrupted_writes(directory: str | Path) -> list[Path]:
    """Delete the temporaries that atomic writes into ``directory`` left when they were killed
    before their rename. Returns what was deleted."""
    directory = Path(directory)
    removed = list(directory.glob(f".*{TEMPORARY_SUFFIX}")) if directory.is_dir() else []
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed


def checkpoint_path(path: str | Path) -> Path:
    """Accept ``x.safetensors``, ``x.json`` or ``x`` and return the ``.safetensors`` path."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


def checksum(tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the tensors (name, dtype, shape, bytes, by sorted name) and of the
    record without its checksum field (canonical JSON)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\n")
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    rest = {k: v for k, v in record.items() if k != CHECKSUM}
    digest.update(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    return f"sha256:{digest.hexdigest()}"


def save_checkpoint(
    path: str | Path,
    optimizer: StepOptimizer,
    record: Mapping[str, Any],
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> Path:
    """Save the optimizer's weights with ``record`` (any JSON-ready dict). Returns the path.

    The record may keep its own ``l2o_version`` (e.g. when re-saving a checkpoint);
    ``format``, ``format_version`` and ``checksum`` are always set here."""
    from l2o import __version__

    path = checkpoint_path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in optimizer.state_dict().items()}
    for name, t in (extra_tensors or {}).items():
        tensors[name] = t.detach().to("cpu").contiguous()
    full_record = {
        "l2o_version": __version__,
        "optimizer": optimizer.spec(),
        **record,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
    }
    full_record = json.loads(json.dumps(full_record))  # what a reader will see (lists, str keys)
    full_record[CHECKSUM] = checksum(tensors, full_record)
    text = json.dumps(full_record, indent=2, sort_keys=True)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"l2o": text}))
    atomic_write_text(path.with_suffix(".json"), text + "\n")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read (tensors, record) from a checkpoint, verified: a missing, truncated or corrupt file
    (checksum mismatch, nan or inf in a tensor) is a one-line ``CheckpointError``."""
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
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {path} has a corrupt record (not a JSON object)")
    version = record.get("format_version")
    if record.get("format") != FORMAT or version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format {record.get('format')!r} version {version!r}; this "
            f"l2o reads {FORMAT!r} versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if version == 2:
        _verify_checksum(path, tensors, record)
    nonfinite = [name for name, t in sorted(tensors.items()) if not torch.isfinite(t).all().item()]
    if nonfinite:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: nan or inf in {', '.join(nonfinite)} (all its "
            f"tensors must be finite); re-train or restore it from a copy"
        )
    _compare_json_copy(path, record)
    return tensors, record


def _verify_checksum(path: Path, tensors: Mapping[str, Tensor], record: dict[str, Any]) -> None:
    """Refuse a version-2 checkpoint whose tensors or record do not match its checksum."""
    recorded = record.get(CHECKSUM)
    if recorded is None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its record has no {CHECKSUM!r} (format version "
            f"{record['format_version']} needs one); re-train or restore it from a copy"
        )
    found = checksum(tensors, record)
    if recorded != found:
        short = [str(d).removeprefix("sha256:")[:12] + "..." for d in (recorded, found)]
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its tensor data or record do not match the "
            f"checksum in its record (sha256 {short[0]} recorded, {short[1]} found); "
            f"re-train or restore it from a copy"
        )


def _compare_json_copy(path: Path, record: dict[str, Any]) -> None:
    """Warn if ``NAME.json`` beside the checkpoint is unreadable or differs from its record."""
    copy = path.with_suffix(".json")
    if not copy.exists():
        return
    ignored = f"the record inside {path.name} is used (the .json is only a readable copy)"
    try:
        theirs = json.loads(copy.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON or UTF-8
        warnings.warn(f"{copy} is unreadable ({e}); {ignored}", stacklevel=3)
        return
    fields = _differences(record, theirs)
    if fields:
        shown = ", ".join(fields[:6]) + (f" and {len(fields) - 6} more" if len(fields) > 6 else "")
        warnings.warn(
            f"{copy} disagrees with the record inside {path.name} on {shown}; {ignored}",
            stacklevel=3,
        )


def _differences(ours: Any, theirs: Any, name: str = "") -> list[str]:
    """The dotted names of the fields that differ between two JSON values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [
            field
            for key in sorted(ours.keys() | theirs.keys())
            for field in _differences(
                ours.get(key, _MISSING), theirs.get(key, _MISSING), f"{name}.{key}" if name else key
            )
        ]
    same = (
        ours is not _MISSING and theirs is not _MISSING and _canonical(ours) == _canonical(theirs)
    )
    return [] if same else [name or "the whole record"]


def _canonical(value: Any) -> str:
    """JSON text that is equal for equal JSON values (nan included)."""
    return json.dumps(value, sort_keys=True)


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
        best = path / "checkpoints" / "best.safetensors"
        if not best.is_file():
            raise CheckpointError(_no_best_checkpoint(path))
        return best
    if not checkpoint_path(path).exists():
        raise CheckpointError(
            f"no checkpoint or pretrained optimizer named {str(name_or_path)!r} "
            f"(pretrained: {', '.join(pretrained.names()) or 'none'})"
        )
    return checkpoint_path(path)


def _no_best_checkpoint(run_dir: Path) -> str:
    """Why the directory ``run_dir`` has no ``checkpoints/best``, and what to load instead."""
    last = run_dir / "checkpoints" / "last.safetensors"
    if last.is_file():
        try:
            _, record = read_checkpoint(last)
        except CheckpointError as e:
            return f"run {run_dir} has no best checkpoint, and its last one is unusable: {e}"
        metrics = record.get("metrics") or {}
        if metrics.get("best_validation_final_loss") is None:
            why = f"no validation up to epoch {record.get('epoch')} scored a finite loss"
        else:
            why = (
                f"{run_dir / 'checkpoints' / 'best.safetensors'} is missing, although the "
                f"validation at epoch {metrics.get('best_epoch')} scored "
                f"{metrics['best_validation_final_loss']:.6g} (moved or deleted?)"
            )
        return (
            f"run {run_dir} has no best checkpoint: {why}; its latest weights are in {last} "
            f"(l2o.load('{last.with_suffix('')}'))"
        )
    if not (run_dir / "config.toml").is_file():
        return (
            f"{run_dir} is a directory but not a run directory (no config.toml, no "
            f"checkpoints/best.safetensors); give a run directory, a checkpoint path "
            f"(x.safetensors) or a pretrained name"
        )
    return (
        f"run {run_dir} has no checkpoint yet: meta-training stopped (or is still running) "
        f"before its first validation, which writes checkpoints/best and checkpoints/last"
    )


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> StepOptimizer:
    """Load a trained optimizer, ready to use: a shipped pretrained name (see
    ``l2o.pretrained.names()``), a checkpoint path, or a run directory (its best checkpoint)."""
    optimizer, _ = load_checkpoint(resolve(name_or_path))
    return optimizer.to(device)
