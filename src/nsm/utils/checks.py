"""Argument checks whose messages name the argument and what it was given.

Booleans are not integers here (``True`` is an ``int`` to Python, never a count to a user);
numpy integers are, and come back as Python ints.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["is_int", "is_number", "check_int"]


def is_int(v: Any) -> bool:
    """Whether ``v`` is an integer (Python or numpy), ``bool`` excluded."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a finite real number (int or float, Python or numpy), ``bool`` excluded."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_int(name: str, v: Any, minimum: int = 1, what: str = "") -> int:
    """``v`` as an int if it is one and ``>= minimum``; else ``ValueError`` naming ``name``.

    The message says "a positive int" for ``minimum=1`` and "an int >= minimum" otherwise;
    ``what`` adds a parenthesis saying what the number counts."""
    if not is_int(v) or v < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}{f' ({what})' if what else ''}, got {v!r}")
    return int(v)
