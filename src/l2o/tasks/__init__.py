"""Problems to optimize: single tasks and the families they are drawn from."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from l2o.errors import InvalidInput
from l2o.tasks.art import ArtFamily, ArtTask
from l2o.tasks.base import Task, TaskFamily
from l2o.tasks.conv import ConvFamily, ConvTask
from l2o.tasks.mixture import MixtureFamily, MixtureMember, MixtureTask
from l2o.tasks.mlp import MLPFamily, MLPTask
from l2o.tasks.polynomial import PolynomialFamily, PolynomialTask
from l2o.tasks.quadratic import QuadraticFamily, QuadraticTask
from l2o.tasks.simple import RosenbrockFamily, RosenbrockTask, SimpleFamily, SquareTask

TASK_FAMILIES: dict[str, type[TaskFamily]] = {
    "quadratic": QuadraticFamily,
    "polynomial": PolynomialFamily,
    "simple": SimpleFamily,
    "rosenbrock": RosenbrockFamily,
    "mnist": MLPFamily,
    "conv": ConvFamily,
    "mixture": MixtureFamily,
    "art": ArtFamily,
}


def make_task_family(name: str, **options: Any) -> TaskFamily:
    """Build the task family ``name`` from its options, e.g. ``make_task_family("quadratic", dim=5)``."""
    if name not in TASK_FAMILIES:
        raise InvalidInput(f"unknown task {name!r} (valid: {', '.join(TASK_FAMILIES)})")
    cls = TASK_FAMILIES[name]
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for task {name!r} (valid: {', '.join(valid)})"
        )
    return cls(**options)


__all__ = [
    "TASK_FAMILIES",
    "ArtFamily",
    "ArtTask",
    "ConvFamily",
    "ConvTask",
    "MLPFamily",
    "MLPTask",
    "MixtureFamily",
    "MixtureMember",
    "MixtureTask",
    "PolynomialFamily",
    "PolynomialTask",
    "QuadraticFamily",
    "QuadraticTask",
    "RosenbrockFamily",
    "RosenbrockTask",
    "SimpleFamily",
    "SquareTask",
    "Task",
    "TaskFamily",
    "make_task_family",
]
