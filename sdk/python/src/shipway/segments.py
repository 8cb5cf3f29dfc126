"""Segment matching: does an evaluation context belong to a named segment such as
``internal``?

A segment is ``{"key": ..., "match": "any" | "all", "rules": [...]}``; each rule
compares one context attribute (``{"attribute": "email", "op": "ends_with", "value":
"@example.com"}``). Strings are compared exactly. A missing (or null) attribute matches
no rule except ``exists: false``, so an incomplete context is never pulled into a
segment by a negative rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_MISSING = object()


def _as_list(rule: Mapping) -> list[Any]:
    values = rule.get("values")
    if values is None and "value" in rule:
        values = [rule["value"]]
    return list(values or [])


def _text_op(test: Callable[[str, str], bool]) -> Callable[[Any, Mapping], bool]:
    def op(actual: Any, rule: Mapping) -> bool:
        if not isinstance(actual, str):
            return False
        return any(isinstance(v, str) and test(actual, v) for v in _as_list(rule))

    return op


_OPS: dict[str, Callable[[Any, Mapping], bool]] = {
    "equals": lambda actual, rule: actual == rule.get("value"),
    "not_equals": lambda actual, rule: actual != rule.get("value"),
    "in": lambda actual, rule: actual in _as_list(rule),
    "not_in": lambda actual, rule: actual not in _as_list(rule),
    "starts_with": _text_op(str.startswith),
    "ends_with": _text_op(str.endswith),
    "contains": _text_op(lambda actual, part: part in actual),
}

OPERATORS = frozenset([*_OPS, "exists"])


def rule_matches(rule: Mapping, context: Mapping) -> bool:
    """Whether one rule holds for ``context``. Unknown operators never match."""
    op = rule.get("op")
    attribute = rule.get("attribute")
    actual = (
        context.get(attribute, _MISSING) if isinstance(attribute, str) else _MISSING
    )
    if op == "exists":
        present = actual is not _MISSING and actual is not None
        return present == bool(rule.get("value", True))
    if actual is _MISSING or actual is None:
        return False
    check = _OPS.get(op) if isinstance(op, str) else None
    return check(actual, rule) if check else False


def segment_matches(segment: Mapping, context: Mapping) -> bool:
    """Whether ``context`` belongs to ``segment``.

    A segment with no rules, or with an unknown ``match`` mode, matches nobody:
    targeting must fail closed.
    """
    rules = segment.get("rules") or []
    mode = segment.get("match", "any")
    if not rules or mode not in ("any", "all"):
        return False
    results = (rule_matches(rule, context) for rule in rules)
    return all(results) if mode == "all" else any(results)
