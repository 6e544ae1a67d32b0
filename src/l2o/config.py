"""Experiment configuration: a readable TOML file with three sections, plus overrides.

    [task]        name (default "quadratic") and the family's options (see l2o.tasks)
    [optimizer]   the learned optimizer's architecture: ``kind = "lstm"`` (the default, the
                  paper's LSTM, LSTMConfig), ``kind = "mlp"`` (the per-parameter MLP,
                  MLPOptimizerConfig), ``kind = "rnnprop"`` (RNNprop, RNNpropConfig),
                  ``kind = "lstm-gac"`` (the paper's LSTM with global averaging cells,
                  LSTMGACConfig) or ``kind = "ntm-bfgs"`` (the paper's NTM-BFGS, NTMBFGSConfig),
                  with that kind's options; one optimizer for all parameters
    [meta]        meta-training (MetaTrainConfig, l2o.meta.config)

Parameter groups (paper section 3.3: separate LSTMs for conv and fully connected layers) are
tables under ``[optimizer]``, each with the glob patterns of its parameters' names (the task's
``param_names``) and its optimizer: an LSTM, whose options default to those of ``[optimizer]``,
or a hand-designed one with its options::

    [optimizer.groups.conv]
    params = ["conv*"]                  # an LSTM with [optimizer]'s architecture
    [optimizer.groups.fc]
    params = ["bn*", "fc*", "out.*"]
    hidden_size = 10                    # an LSTM of its own size ...
    # kind = "adam"                     # ... or Adam (sgd, nag, rmsprop, adam), with
    # lr = 0.003                        # its options (lr, betas, momentum, ...)

Every parameter must match exactly one group and every group some parameter, and at least one
group must be learned. Each learned group has its own weights (``groups.<name>.*`` in
checkpoints).

Overrides are ``section.key=value`` strings, the value written as in TOML
(``meta.epochs=100``, ``task.variant=tf``, ``meta.second_order=true``); a dotted key reaches
into tables (``optimizer.groups.fc.lr=0.01``).
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from l2o.errors import InvalidInput
from l2o.meta.config import MetaTrainConfig, upgrade_record
from l2o.optimizers import (
    BASELINES,
    OPTIMIZERS,
    CoordinatewiseLSTM,
    LSTMConfig,
    LSTMGACConfig,
    MLPOptimizerConfig,
    NTMBFGSConfig,
    RNNpropConfig,
    StepOptimizer,
)
from l2o.tasks import TaskFamily, make_task_family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("task", "optimizer", "meta")
GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# [optimizer] kind: the learned optimizers a config can meta-train, by their configs. A config
# without ``kind`` is the paper's LSTM (and so is every record written before ``kind`` existed).
LEARNED_KINDS: dict[str, type] = {
    "lstm": LSTMConfig,
    "mlp": MLPOptimizerConfig,
    "rnnprop": RNNpropConfig,
    "lstm-gac": LSTMGACConfig,
    "ntm-bfgs": NTMBFGSConfig,
}


@dataclass(frozen=True)
class GroupConfig:
    """One parameter group: glob patterns of its parameters' names and its optimizer, an LSTM
    (``lstm``) or a hand-designed one (``kind`` one of ``l2o.optimizers.BASELINES``, with
    ``options``)."""

    params: tuple[str, ...]
    kind: str = "lstm"
    lstm: LSTMConfig | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> StepOptimizer:
        if self.kind == "lstm":
            return CoordinatewiseLSTM(self.lstm)
        return OPTIMIZERS[self.kind](**self.options)

    def to_dict(self) -> dict[str, Any]:
        more = asdict(self.lstm) if self.lstm is not None else dict(self.options)
        return {"params": list(self.params), "kind": self.kind, **more}


@dataclass(frozen=True)
class ExperimentConfig:
    task: TaskFamily
    # the learned optimizer of [optimizer] kind
    optimizer: LSTMConfig | MLPOptimizerConfig | RNNpropConfig | LSTMGACConfig | NTMBFGSConfig
    meta: MetaTrainConfig
    # Parameter groups by name; empty: one LSTM (``optimizer``) for all parameters.
    groups: Mapping[str, GroupConfig] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        optimizer: dict[str, Any] = asdict(self.optimizer)
        kind = next(k for k, cls in LEARNED_KINDS.items() if isinstance(self.optimizer, cls))
        if kind != "lstm":  # the LSTM's records have no kind
            optimizer = {"kind": kind, **optimizer}
        if self.groups:
            optimizer["groups"] = {name: g.to_dict() for name, g in self.groups.items()}
        return {"task": self.task.to_config(), "optimizer": optimizer, "meta": asdict(self.meta)}

    def group_patterns(self) -> dict[str, list[str]]:
        """{group name: glob patterns}, for ``l2o.optimizers.assign_groups``."""
        return {name: list(g.params) for name, g in self.groups.items()}


def _build(cls: type, section: str, options: dict[str, Any]) -> Any:
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise InvalidInput(
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


def config_from_dict(data: dict[str, Any], record: bool = True) -> ExperimentConfig:
    """The configuration that ``data`` (sections of options) describes. ``record``: ``data`` may
    have been written by an older l2o (a run's config.toml, a checkpoint's record), so values
    renamed since are read in today's names; a user's config file is read with ``record=False``
    (``load_config``), which refuses them with one line saying what to write instead."""
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise InvalidInput(
            f"unknown config section(s) {', '.join(unknown)} (valid: {', '.join(SECTIONS)})"
        )
    task = {"name": "quadratic", **data.get("task", {})}
    optimizer = dict(data.get("optimizer", {}))
    groups = optimizer.pop("groups", {})
    kind = optimizer.pop("kind", "lstm")
    if kind not in LEARNED_KINDS:
        raise InvalidInput(
            f"Invalid optimizer.kind: {kind!r} (valid: {', '.join(map(repr, LEARNED_KINDS))})"
        )
    if kind != "lstm" and groups:
        raise InvalidInput(
            f'optimizer.groups is not available with optimizer.kind = "{kind}" (parameter '
            f"groups drive LSTMs and hand-designed optimizers: leave out kind or the groups)"
        )
    learned = _build(LEARNED_KINDS[kind], "optimizer", optimizer)
    meta = dict(data.get("meta", {}))
    if record:
        meta = upgrade_record(meta)
    return ExperimentConfig(
        task=make_task_family(task.pop("name"), **task),
        optimizer=learned,
        meta=_build(MetaTrainConfig, "meta", meta),
        groups=_build_groups(groups, learned),
    )


def _build_groups(data: Any, defaults: LSTMConfig) -> dict[str, GroupConfig]:
    """The ``[optimizer.groups.NAME]`` tables; LSTM groups start from ``defaults``."""
    if not isinstance(data, dict):
        raise InvalidInput(
            f"Invalid optimizer.groups: {data!r} (a table of groups, e.g. [optimizer.groups.conv] "
            f'with params = ["conv*"])'
        )
    groups = {}
    # L-BFGS couples every coordinate of a problem: a group's tensors are only part of one
    group_baselines = [
        b for b in BASELINES if not getattr(OPTIMIZERS[b], "couples_coordinates", False)
    ]
    kinds = ", ".join(["lstm", *group_baselines])
    for name, options in data.items():
        where = f"optimizer.groups.{name}"
        if not GROUP_NAME.fullmatch(name):
            raise InvalidInput(
                f"Invalid group name {name!r} (letters, digits, _ and -, not starting with a digit)"
            )
        if not isinstance(options, dict):
            raise InvalidInput(f"Invalid {where}: {options!r} (a table with params = [...])")
        options = dict(options)
        params = options.pop("params", None)
        params = [params] if isinstance(params, str) else params
        if not (
            isinstance(params, list) and params and all(isinstance(p, str) and p for p in params)
        ):
            raise InvalidInput(
                f"Invalid {where}.params: {params!r} (a non-empty list of glob patterns of "
                f'parameter names, e.g. ["conv*"])'
            )
        kind = options.pop("kind", "lstm")
        if kind == "lstm":
            lstm = _build(LSTMConfig, where, {**asdict(defaults), **options})
            groups[name] = GroupConfig(tuple(params), "lstm", lstm=lstm)
        elif kind in group_baselines:
            try:
                OPTIMIZERS[kind](**options)
            except TypeError as e:
                raise InvalidInput(f"Invalid option for {where} (kind {kind!r}): {e}") from e
            groups[name] = GroupConfig(tuple(params), kind, options=options)
        else:
            raise InvalidInput(f"Invalid {where}.kind: {kind!r} (valid: {kinds})")
    if groups and all(g.kind != "lstm" for g in groups.values()):
        raise InvalidInput(
            f"optimizer.groups {', '.join(groups)} are all hand-designed: at least one must be "
            f'learned (kind = "lstm") for there to be anything to meta-train'
        )
    return groups


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"meta.epochs=100"`` -> ("meta", "epochs", 100)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS or not name:
        raise InvalidInput(
            f"Invalid override {text!r} (expected section.key=value with section one of "
            f"{', '.join(SECTIONS)}, e.g. meta.epochs=100)"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as task.variant=tf is a string
    return section, name, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        section, name, value = parse_override(text)
        table = data.setdefault(section, {})
        *path, key = name.split(".")  # optimizer.groups.fc.lr reaches into nested tables
        for part in path:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise InvalidInput(f"Invalid override {text!r}: {part} is not a table")
        table[key] = value
    return data


def load_config_dict(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"config file {path} is not valid TOML ({e})") from e


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML config (None: all defaults) and apply ``section.key=value`` overrides."""
    return config_from_dict(apply_overrides(load_config_dict(path), overrides or []), record=False)


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """Write a config dict (sections of scalars) as TOML."""
    import tomli_w

    return tomli_w.dumps(data)
