"""Budget enforcement in the SDK, from the config's per-feature ``budget`` entry:
``{"max_tokens_per_request": int | None, "exhausted": bool}``.

A request asking for more tokens than the feature's per-request cap is refused with
``BudgetExceeded`` before any LLM call; so is every request once the feature's monthly
ceiling is reached (``exhausted``). Without a config, or without a budget entry,
nothing is refused: the SDK never blocks a service because Shipway is unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_TOKENS_PER_REQUEST = "max_tokens_per_request"
EXHAUSTED = "exhausted"


class BudgetExceeded(Exception):
    """A request over the feature's budget.

    ``reason`` is ``max_tokens_per_request`` or ``exhausted``; ``limit`` and
    ``requested`` are token counts (``None`` when not relevant).
    """

    def __init__(
        self,
        feature: str,
        reason: str,
        *,
        limit: int | None = None,
        requested: int | None = None,
    ) -> None:
        self.feature = feature
        self.reason = reason
        self.limit = limit
        self.requested = requested
        if reason == MAX_TOKENS_PER_REQUEST:
            message = (
                f"{feature}: {requested} tokens requested, "
                f"the per-request cap is {limit}"
            )
        else:
            message = f"{feature}: the monthly budget is exhausted"
        super().__init__(message)


@dataclass(frozen=True)
class BudgetInfo:
    """What the config says about a feature's budget."""

    max_tokens_per_request: int | None = None
    exhausted: bool = False


NO_BUDGET = BudgetInfo()


def budget_info(feature: Mapping | None) -> BudgetInfo:
    """The feature's budget entry; tolerant of an absent or malformed one."""
    entry: Any = feature.get("budget") if isinstance(feature, Mapping) else None
    if not isinstance(entry, Mapping):
        return NO_BUDGET
    cap = entry.get(MAX_TOKENS_PER_REQUEST)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        cap = None
    return BudgetInfo(
        max_tokens_per_request=cap, exhausted=entry.get(EXHAUSTED) is True
    )


def check_tokens(feature_key: str, info: BudgetInfo, tokens: int) -> None:
    """Raise ``BudgetExceeded`` if a request of ``tokens`` tokens is over ``info``."""
    if info.exhausted:
        raise BudgetExceeded(feature_key, EXHAUSTED, requested=tokens)
    cap = info.max_tokens_per_request
    if cap is not None and tokens > cap:
        raise BudgetExceeded(
            feature_key, MAX_TOKENS_PER_REQUEST, limit=cap, requested=tokens
        )
