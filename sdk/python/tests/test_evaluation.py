"""Local evaluation of features and plain flags."""

from __future__ import annotations

import copy

import pytest

from shipway.bucketing import bucket
from shipway.evaluation import Evaluation, evaluate_feature, evaluate_flag

SEGMENTS = {
    "internal": {
        "key": "internal",
        "match": "any",
        "rules": [{"attribute": "email", "op": "ends_with", "value": "@example.com"}],
    },
    "blocked": {
        "key": "blocked",
        "match": "any",
        "rules": [{"attribute": "targetingKey", "op": "in", "values": ["bad-user"]}],
    },
}


def make_feature(basis_points=500, **overrides):
    feature = {
        "enabled": True,
        "stage": "beta",
        "salt": "ticket-summarizer",
        "targeting": [],
        "stable": {
            "prompt_version": "1.2.0",
            "template": None,
            "messages": [{"role": "system", "content": "Summarise {{ticket}}"}],
            "model": "gpt-4o-mini",
            "params": {"temperature": 0.2},
            "fallback_models": [],
        },
        "canary": {
            "prompt_version": "1.3.0",
            "template": "New: {{ticket}}",
            "messages": None,
            "model": "gpt-4o",
            "params": {"temperature": 0.1},
            "fallback_models": ["gpt-4o-mini"],
            "basis_points": basis_points,
        },
        "review_sample_rate": 0.2,
    }
    feature.update(overrides)
    return feature


def keys_by_arm(salt, basis_points):
    canary = next(
        f"k{i}" for i in range(10_000) if bucket(salt, f"k{i}") < basis_points
    )
    stable = next(
        f"k{i}" for i in range(10_000) if bucket(salt, f"k{i}") >= basis_points
    )
    return canary, stable


def test_feature__disabled__answers_disabled_off_without_value():
    result = evaluate_feature(make_feature(enabled=False), {"targetingKey": "u"})
    assert result == Evaluation(value=None, reason="DISABLED", variant="off")
    assert result.arm is None


def test_feature__split__serves_canary_below_basis_points_and_stable_above():
    canary_key, stable_key = keys_by_arm("ticket-summarizer", 500)
    canary = evaluate_feature(make_feature(), {"targetingKey": canary_key})
    stable = evaluate_feature(make_feature(), {"targetingKey": stable_key})
    assert (canary.reason, canary.variant, canary.arm) == ("SPLIT", "canary", "canary")
    assert canary.value == {
        "prompt_version": "1.3.0",
        "template": "New: {{ticket}}",
        "model": "gpt-4o",
        "params": {"temperature": 0.1},
        "fallback_models": ["gpt-4o-mini"],
        "arm": "canary",
    }
    assert (stable.reason, stable.variant) == ("SPLIT", "stable")
    assert stable.value == {
        "prompt_version": "1.2.0",
        "messages": [{"role": "system", "content": "Summarise {{ticket}}"}],
        "model": "gpt-4o-mini",
        "params": {"temperature": 0.2},
        "fallback_models": [],
        "arm": "stable",
    }


@pytest.mark.parametrize("context", [{}, {"targetingKey": ""}, {"targetingKey": None}])
def test_feature__split_without_targeting_key__serves_stable_with_error(context):
    result = evaluate_feature(make_feature(), context)
    assert (result.reason, result.variant, result.error_code) == (
        "ERROR",
        "stable",
        "TARGETING_KEY_MISSING",
    )
    assert result.value["prompt_version"] == "1.2.0"


@pytest.mark.parametrize("canary", [None, "zero"])
def test_feature__no_canary_or_zero_percent__serves_stable_statically(canary):
    feature = (
        make_feature(basis_points=0) if canary == "zero" else make_feature(canary=None)
    )
    result = evaluate_feature(feature, {})
    assert (result.reason, result.variant, result.error_code) == (
        "STATIC",
        "stable",
        None,
    )


def test_feature__full_canary__serves_canary_statically_without_key():
    result = evaluate_feature(make_feature(basis_points=10_000), {})
    assert (result.reason, result.variant, result.error_code) == (
        "STATIC",
        "canary",
        None,
    )


def test_feature__targeting_match__serves_rule_variant_before_the_split():
    _, stable_key = keys_by_arm("ticket-summarizer", 500)
    feature = make_feature(targeting=[{"segment": "internal", "variant": "canary"}])
    result = evaluate_feature(
        feature, {"targetingKey": stable_key, "email": "ada@example.com"}, SEGMENTS
    )
    assert (result.reason, result.variant) == ("TARGETING_MATCH", "canary")


def test_feature__targeting_to_canary_without_canary__serves_stable():
    feature = make_feature(
        canary=None, targeting=[{"segment": "internal", "variant": "canary"}]
    )
    result = evaluate_feature(feature, {"email": "ada@example.com"}, SEGMENTS)
    assert (result.reason, result.variant) == ("TARGETING_MATCH", "stable")


def test_feature__targeting_to_off__serves_no_value():
    feature = make_feature(targeting=[{"segment": "blocked", "variant": "off"}])
    result = evaluate_feature(feature, {"targetingKey": "bad-user"}, SEGMENTS)
    assert result == Evaluation(value=None, reason="TARGETING_MATCH", variant="off")


def test_feature__targeting_rules__first_matching_rule_wins():
    feature = make_feature(
        targeting=[
            {"segment": "blocked", "variant": "off"},
            {"segment": "internal", "variant": "canary"},
        ]
    )
    context = {"targetingKey": "bad-user", "email": "x@example.com"}
    assert evaluate_feature(feature, context, SEGMENTS).variant == "off"


def test_feature__unknown_or_unmatched_segment__falls_through_to_split():
    feature = make_feature(targeting=[{"segment": "ghost", "variant": "canary"}])
    result = evaluate_feature(
        feature, {"targetingKey": "u", "email": "a@example.com"}, SEGMENTS
    )
    assert result.reason == "SPLIT"


def test_feature__evaluation__does_not_mutate_inputs_or_share_values():
    feature = make_feature(basis_points=10_000)
    context = {"targetingKey": "u"}
    before = copy.deepcopy(feature)
    result = evaluate_feature(feature, context, SEGMENTS)
    result.value["params"]["temperature"] = 9
    result.value["fallback_models"].append("x")
    assert feature == before
    assert context == {"targetingKey": "u"}


def make_flag(**overrides):
    flag = {
        "enabled": True,
        "type": "boolean",
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "off_variant": "off",
        "targeting": [],
        "rollout": {"variant": "on", "basis_points": 2500, "salt": "new-ui"},
    }
    flag.update(overrides)
    return flag


def test_flag__disabled__serves_off_variant():
    result = evaluate_flag(make_flag(enabled=False), {"targetingKey": "u"})
    assert result == Evaluation(value=False, reason="DISABLED", variant="off")


def test_flag__rollout__splits_by_bucket_of_rollout_salt():
    inside, outside = keys_by_arm("new-ui", 2500)
    assert evaluate_flag(make_flag(), {"targetingKey": inside}) == Evaluation(
        True, "SPLIT", "on"
    )
    assert evaluate_flag(make_flag(), {"targetingKey": outside}) == Evaluation(
        False, "SPLIT", "off"
    )


def test_flag__rollout_without_targeting_key__serves_default_with_error():
    result = evaluate_flag(make_flag(), {"targetingKey": ""})
    assert (result.value, result.reason, result.variant, result.error_code) == (
        False,
        "ERROR",
        "off",
        "TARGETING_KEY_MISSING",
    )


def test_flag__no_rollout__serves_default_statically():
    result = evaluate_flag(make_flag(rollout=None, default_variant="on"), {})
    assert result == Evaluation(True, "STATIC", "on")


def test_flag__targeting_match__serves_rule_variant():
    flag = make_flag(targeting=[{"segment": "internal", "variant": "on"}])
    result = evaluate_flag(flag, {"email": "a@example.com"}, SEGMENTS)
    assert result == Evaluation(True, "TARGETING_MATCH", "on")


def test_flag__json_value__is_copied_out():
    flag = make_flag(
        type="json",
        variants={"a": {"x": [1]}, "off": {}},
        default_variant="a",
        rollout=None,
    )
    result = evaluate_flag(flag, {})
    result.value["x"].append(2)
    assert flag["variants"]["a"] == {"x": [1]}
