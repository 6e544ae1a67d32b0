"""Trained optimizers shipped with l2o: ``NAME.safetensors`` + ``NAME.json`` in this folder.

Each is written by ``l2o.checkpoint.save_checkpoint`` with a record that says what it is for
(``RECORD_KEYS``): a one-line ``description``, the task config it was ``trained_on``, the
meta-``training`` config, its ``metrics`` and ``benchmark`` figures, and the ``command`` that
reproduces it. Use one with ``l2o.load(name)`` or ``l2o.optim.LearnedOptimizer(params, name)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from l2o.errors import CheckpointError

FOLDER = Path(__file__).resolve().parent

# The keys every shipped record has, besides the format/format_version/l2o_version/optimizer/
# checksum keys that save_checkpoint adds.
RECORD_KEYS = ("description", "trained_on", "training", "metrics", "benchmark", "command")


def names() -> list[str]:
    """Names of the shipped pretrained optimizers."""
    return sorted(p.stem for p in FOLDER.glob("*.safetensors"))


def list() -> dict[str, str]:
    """The shipped pretrained optimizers: name -> one-line description of what it is for."""
    return {name: info(name).get("description", "") for name in names()}


def path(name: str) -> Path:
    """The checkpoint file of the pretrained optimizer ``name``."""
    if name not in names():
        raise CheckpointError(
            f"unknown pretrained optimizer {name!r} (valid: {', '.join(names()) or 'none'})"
        )
    return FOLDER / f"{name}.safetensors"


def info(name: str) -> dict[str, Any]:
    """The JSON record of a pretrained optimizer (what it was trained on, config, metrics)."""
    record = path(name).with_suffix(".json")
    if not record.is_file():
        raise CheckpointError(f"pretrained optimizer {name!r} has no record {record}")
    return json.loads(record.read_text())
