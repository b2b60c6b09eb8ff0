"""Enumerated settings: a dataclass field typed ``Literal[...]`` is checked here, once, for every command.

argparse turns ``Literal`` fields into ``choices`` for flags, but values that come from a YAML recipe
become argparse *defaults*, which it never checks; and dataclasses built in Python skip argparse.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from xtask_safety.errors import ConfigError


def check_choices(obj: Any) -> None:
    """Every ``Literal[...]`` field holds one of its values (argparse checks flags, not recipe values)."""
    try:
        hints = typing.get_type_hints(type(obj))
    except Exception:  # a library's dataclass with unresolvable annotations: nothing of ours to check
        return
    for f in dataclasses.fields(obj):
        allowed = _literal_values(hints.get(f.name))
        value = getattr(obj, f.name)
        if allowed and value is not None and value not in allowed:
            raise ConfigError(f"{f.name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")


def _literal_values(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None)):
        for arg in typing.get_args(hint):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
    return ()


def check_counts(obj: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Sizes and token counts: ``positive`` fields must be >= 1, ``non_negative`` >= 0 (None means unset)."""
    for names, low in ((positive, 1), (non_negative, 0)):
        for name in names:
            value = getattr(obj, name)
            if value is not None and value < low:
                want = "a positive number" if low else "zero or more"
                raise ConfigError(f"{name}: expected {want}, got {value}")
