"""Segment rules over the evaluation context."""

from __future__ import annotations

import pytest

from shipway.segments import segment_matches

INTERNAL = {
    "key": "internal",
    "match": "any",
    "rules": [
        {"attribute": "email", "op": "ends_with", "value": "@example.com"},
        {"attribute": "targetingKey", "op": "in", "values": ["u1", "u2"]},
    ],
}


def rule(op, attribute="plan", **kwargs):
    return {
        "key": "s",
        "match": "all",
        "rules": [{"attribute": attribute, "op": op, **kwargs}],
    }


def test_any_segment__one_matching_rule__matches():
    assert segment_matches(INTERNAL, {"email": "ada@example.com"})
    assert segment_matches(INTERNAL, {"targetingKey": "u2", "email": "x@other.org"})


def test_any_segment__no_matching_rule__does_not_match():
    assert not segment_matches(
        INTERNAL, {"targetingKey": "u3", "email": "ada@example.com.evil"}
    )


def test_all_segment__needs_every_rule():
    segment = {**INTERNAL, "match": "all"}
    assert segment_matches(segment, {"targetingKey": "u1", "email": "a@example.com"})
    assert not segment_matches(segment, {"targetingKey": "u1", "email": "a@other.org"})


def test_segment__without_rules_or_with_unknown_match_mode__matches_nobody():
    assert not segment_matches(
        {"key": "empty", "match": "any", "rules": []}, {"a": "b"}
    )
    assert not segment_matches(
        {**INTERNAL, "match": "most"}, {"email": "a@example.com"}
    )


@pytest.mark.parametrize(
    ("op", "kwargs", "actual", "expected"),
    [
        ("equals", {"value": "pro"}, "pro", True),
        ("equals", {"value": "pro"}, "Pro", False),
        ("not_equals", {"value": "pro"}, "free", True),
        ("not_equals", {"value": "pro"}, "pro", False),
        ("in", {"values": ["pro", "team"]}, "team", True),
        ("in", {"values": ["pro", "team"]}, "TEAM", False),
        ("not_in", {"values": ["pro"]}, "free", True),
        ("not_in", {"values": ["pro"]}, "pro", False),
        ("starts_with", {"value": "pr"}, "pro", True),
        ("starts_with", {"value": "pr"}, "apro", False),
        ("ends_with", {"values": ["@a.com", "@b.com"]}, "x@b.com", True),
        ("contains", {"value": "ro"}, "pro", True),
        ("contains", {"value": "x"}, "pro", False),
        ("contains", {"value": "1"}, 123, False),
        ("exists", {}, "anything", True),
        ("exists", {"value": False}, "anything", False),
        ("no_such_op", {"value": "pro"}, "pro", False),
    ],
)
def test_rule__operator_on_present_attribute(op, kwargs, actual, expected):
    assert segment_matches(rule(op, **kwargs), {"plan": actual}) is expected


@pytest.mark.parametrize(
    ("op", "kwargs"),
    [
        ("equals", {"value": "pro"}),
        ("not_equals", {"value": "pro"}),
        ("in", {"values": ["pro"]}),
        ("not_in", {"values": ["pro"]}),
        ("starts_with", {"value": "p"}),
        ("ends_with", {"value": "o"}),
        ("contains", {"value": "r"}),
        ("exists", {}),
    ],
)
def test_rule__missing_or_null_attribute__never_matches(op, kwargs):
    assert not segment_matches(rule(op, **kwargs), {})
    assert not segment_matches(rule(op, **kwargs), {"plan": None})


def test_rule__exists_false__matches_a_missing_attribute():
    assert segment_matches(rule("exists", value=False), {})
