"""Experiment configuration: a readable TOML file with three sections, plus overrides.

    [task]        name (default "quadratic") and the family's options (see l2o.tasks)
    [optimizer]   the learned optimizer's architecture (LSTMConfig)
    [meta]        meta-training (MetaTrainConfig)

Overrides are ``section.key=value`` strings, the value written as in TOML
(``meta.epochs=100``, ``task.variant=tf``, ``meta.second_order=true``).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from l2o.meta.train import MetaTrainConfig
from l2o.optimizers import LSTMConfig
from l2o.tasks import TaskFamily, make_task_family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("task", "optimizer", "meta")


@dataclass(frozen=True)
class ExperimentConfig:
    task: TaskFamily
    optimizer: LSTMConfig
    meta: MetaTrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.to_config(),
            "optimizer": asdict(self.optimizer),
            "meta": asdict(self.meta),
        }


def _build(cls: type, section: str, options: dict[str, Any]) -> Any:
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)} "
            f"(valid: {', '.join(valid)})"
        )
    types = {f.name: f.type for f in fields(cls)}
    converted = {}
    for key, value in options.items():
        # TOML writes 1e-3 as a float but "1" as an int: accept an int where a float is wanted.
        if (
            types[key] in (float, "float")
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            value = float(value)
        converted[key] = value
    return cls(**converted)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ValueError(
            f"unknown config section(s) {', '.join(unknown)} (valid: {', '.join(SECTIONS)})"
        )
    task = {"name": "quadratic", **data.get("task", {})}
    return ExperimentConfig(
        task=make_task_family(task.pop("name"), **task),
        optimizer=_build(LSTMConfig, "optimizer", dict(data.get("optimizer", {}))),
        meta=_build(MetaTrainConfig, "meta", dict(data.get("meta", {}))),
    )


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"meta.epochs=100"`` -> ("meta", "epochs", 100)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS or not name:
        raise ValueError(
            f"Invalid override {text!r} (expected section.key=value with section one of "
            f"{', '.join(SECTIONS)}, e.g. meta.epochs=100)"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as task.variant=tf is a string
    return section, name, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = {s: dict(v) for s, v in data.items()}
    for text in overrides:
        section, name, value = parse_override(text)
        data.setdefault(section, {})[name] = value
    return data


def load_config_dict(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML ({e})") from e


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML config (None: all defaults) and apply ``section.key=value`` overrides."""
    return config_from_dict(apply_overrides(load_config_dict(path), overrides or []))


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """Write a config dict (sections of scalars) as TOML."""
    import tomli_w

    return tomli_w.dumps(data)
