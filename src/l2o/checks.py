"""Checks of option values, shared by every config dataclass: each failure is one line
(``InvalidInput``) naming the option, the bad value and what would be valid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from l2o.errors import InvalidInput


def is_int(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (int or float), not a bool and not a string."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> None:
    if not (is_int(value) and value >= 1):
        raise InvalidInput(f"Invalid {name}: {value!r} (must be an integer >= 1)")


def check_real(name: str, value: Any, valid: Callable[[float], bool], expected: str) -> None:
    """A real number that ``valid`` accepts, or a one-line error."""
    if not (is_real(value) and valid(value)):
        raise InvalidInput(f"Invalid {name}: {value!r} ({expected})")


def check_choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise InvalidInput(f"Invalid {name}: {value!r} (valid: {', '.join(valid)})")


def set_real(config: Any, name: str, valid: Callable[[float], bool], expected: str) -> None:
    """Check field ``name`` of a frozen dataclass with ``check_real`` and store it as a float."""
    value = getattr(config, name)
    check_real(name, value, valid, expected)
    object.__setattr__(config, name, float(value))


def set_reals(config: Any, name: str, valid: Callable[[float], bool], expected: str) -> None:
    """The same for a list of numbers, stored as a tuple of floats (lists from TOML or JSON
    become tuples: the config stays hashable and frozen)."""
    values = getattr(config, name)
    if not (isinstance(values, (list, tuple)) and all(is_real(v) and valid(v) for v in values)):
        raise InvalidInput(f"Invalid {name}: {values!r} ({expected})")
    object.__setattr__(config, name, tuple(float(v) for v in values))
