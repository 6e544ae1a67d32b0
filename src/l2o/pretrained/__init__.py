"""Trained optimizers shipped with l2o: ``NAME.safetensors`` + ``NAME.json`` in this folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from l2o.errors import CheckpointError

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    """Names of the shipped pretrained optimizers."""
    return sorted(p.stem for p in FOLDER.glob("*.safetensors"))


def path(name: str) -> Path:
    """The checkpoint file of the pretrained optimizer ``name``."""
    if name not in names():
        raise CheckpointError(
            f"unknown pretrained optimizer {name!r} (valid: {', '.join(names()) or 'none'})"
        )
    return FOLDER / f"{name}.safetensors"


def info(name: str) -> dict[str, Any]:
    """The JSON record of a pretrained optimizer (what it was trained on, config, metrics)."""
    return json.loads(path(name).with_suffix(".json").read_text())
