"""Sticky bucketing: which users land in a canary or rollout, and exact percent
conversion.

Implements ``contracts/bucketing.json``. The server and every SDK must agree bit for
bit, so the hash is taken over the key exactly as given and percentages travel as
integer basis points converted from decimal text, never through a float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import mmh3

BUCKETS = 10_000
MAX_BASIS_POINTS = 10_000

# Digits with an optional fraction of at most two digits: no sign, exponent, NaN or
# spaces.
_PERCENT_TEXT = re.compile(r"[0-9]+(\.[0-9]{1,2})?")


class InvalidPercent(ValueError):
    """A percentage that cannot be converted exactly to basis points."""


def bucket(salt: str, targeting_key: str) -> int:
    """Return the bucket (0..9999) of ``targeting_key`` under ``salt``."""
    data = (salt + ":" + targeting_key).encode("utf-8")
    return mmh3.hash(data, 0, signed=False) % BUCKETS


def in_canary(salt: str, targeting_key: str, basis_points: int) -> bool:
    """Whether the key is in the canary, which owns buckets ``[0, basis_points)``."""
    return bucket(salt, targeting_key) < basis_points


def _refuse(value: object) -> InvalidPercent:
    return InvalidPercent(
        "percent must be a number between 0 and 100 with at most two decimals, "
        f"got {str(value)!r}"
    )


def percent_to_basis_points(value: str | int | Decimal) -> int:
    """Convert a percentage (``"5"``, ``"0.29"``, ``33``) to basis points exactly.

    Raises ``TypeError`` for floats (their binary value is not the decimal the user
    typed) and ``InvalidPercent`` for anything that is not 0..100 with at most two
    decimals.
    """
    # bool is an int subclass; True as "1 percent" is almost certainly a bug upstream.
    if isinstance(value, (bool, float)):
        raise TypeError(
            f"percent must be given as text, int or Decimal, not {type(value).__name__}"
        )
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _refuse(value)
        # Decimal("5.000") is still exactly 500 bp; only a real third decimal fails.
        if value * 100 != (value * 100).to_integral_value():
            raise _refuse(value)
        number = value
    elif isinstance(value, str):
        if not _PERCENT_TEXT.fullmatch(value):
            raise _refuse(value)
        try:
            number = Decimal(value)
        except (
            InvalidOperation
        ) as exc:  # pragma: no cover - the regex admits only decimals
            raise _refuse(value) from exc
    else:
        raise TypeError(
            f"percent must be given as text, int or Decimal, not {type(value).__name__}"
        )
    if number < 0 or number > 100:
        raise _refuse(value)
    return int(number * 100)


def basis_points_to_percent(bp: int) -> str:
    """Basis points as the shortest exact percent text: 500 -> "5", 29 -> "0.29"."""
    if isinstance(bp, bool) or not isinstance(bp, int):
        raise TypeError(f"basis points must be an int, not {type(bp).__name__}")
    if not 0 <= bp <= MAX_BASIS_POINTS:
        raise ValueError(
            f"basis points must be between 0 and {MAX_BASIS_POINTS}, got {bp}"
        )
    whole, fraction = divmod(bp, 100)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:02d}".rstrip("0")
