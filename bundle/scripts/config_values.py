"""Values that reach the bundle from its configs or the command line, checked and named.

``python -m monai.bundle run ... --resume false`` hands the config the *string* ``"false"``
(the command line is parsed as Python literals, and ``false`` is none), and ``bool("false")`` is
True: a guard that should keep the shipped weights let a run replace them. Every on/off value the
bundle reads goes through :func:`switch`, every number through :func:`number`, so a value that
is neither says which field it is.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import short_repr

__all__ = ["number", "switch"]

_WORDS = {"true": True, "false": False}


def switch(value: Any, name: str) -> bool:
    """An on/off value: ``True``/``False``, or the command line's ``true``/``false`` (any case).

    Raises:
        ValueError: ``"<name>: expected true or false, got ..."`` for anything else (``1``, ``"no"``, ``None``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ValueError(f"{name}: expected true or false, got {short_repr(value)}")


def number(value: Any, name: str) -> float:
    """A finite number (an int, a float, or its text).

    Raises:
        ValueError: ``"<name>: expected a number, got ..."`` (text that is no number, NaN, infinity, a bool, None).
    """
    try:
        result = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        result = math.nan
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected a number, got {short_repr(value)}")
    return result
