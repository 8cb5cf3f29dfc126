"""Local evaluation of features (stable/canary prompt arms) and plain flags.

Works on the server's config snapshot (``GET /api/v1/config``) so a service decides
without a network call. Order: kill switch, targeting rules, static 0 %/100 %, then the
sticky split. A split without a targeting key serves the safe answer and reports
``TARGETING_KEY_MISSING``; it never hashes a constant, which would push every anonymous
caller into the same arm.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .bucketing import MAX_BASIS_POINTS, bucket
from .budget import BudgetInfo, budget_info
from .segments import segment_matches

STATIC = "STATIC"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DISABLED = "DISABLED"
DEFAULT = "DEFAULT"
ERROR = "ERROR"

TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
PARSE_ERROR = "PARSE_ERROR"

_ARMS = ("stable", "canary")
_VALUE_FIELDS = (
    "prompt_version",
    "template",
    "messages",
    "model",
    "params",
    "fallback_models",
)


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation, shaped like an OFREP answer."""

    value: Any
    reason: str
    variant: str
    error_code: str | None = None
    error_message: str | None = None
    # Features only: the config's budget entry. Not part of equality: it describes the
    # feature, not the decision.
    budget: BudgetInfo | None = dataclasses.field(default=None, compare=False)

    @property
    def arm(self) -> str | None:
        """``stable`` or ``canary`` when a feature arm was served, else ``None``."""
        return self.variant if self.variant in _ARMS else None

    @property
    def max_tokens_per_request(self) -> int | None:
        return self.budget.max_tokens_per_request if self.budget else None

    @property
    def exhausted(self) -> bool:
        """The feature's monthly budget is used up: the SDK refuses its requests."""
        return bool(self.budget and self.budget.exhausted)


def _targeting_key(context: Mapping) -> str | None:
    key = context.get("targetingKey")
    if key is None or key == "":
        return None
    return str(key)


def _targeted_variant(
    rules: Any, context: Mapping, segments: Mapping[str, Mapping] | None
) -> str | None:
    """The variant of the first targeting rule whose segment matches, if any."""
    for rule in rules or []:
        segment = (segments or {}).get(rule.get("segment"))
        # A rule naming a deleted segment is skipped rather than matching everyone.
        if segment is not None and segment_matches(segment, context):
            return rule.get("variant")
    return None


def _feature_value(arm_config: Mapping, arm: str) -> dict:
    value: dict[str, Any] = {}
    for field in _VALUE_FIELDS:
        if field in ("template", "messages") and arm_config.get(field) is None:
            continue
        value[field] = copy.deepcopy(arm_config.get(field))
    if value.get("params") is None:
        value["params"] = {}
    if value.get("fallback_models") is None:
        value["fallback_models"] = []
    value["arm"] = arm
    return value


def _serve_arm(feature: Mapping, arm: str, reason: str, **error: str) -> Evaluation:
    if arm == "canary" and not feature.get("canary"):
        arm = "stable"
    arm_config = feature.get(arm)
    if not arm_config:
        return Evaluation(None, ERROR, "off", PARSE_ERROR, f"feature has no {arm} arm")
    return Evaluation(_feature_value(arm_config, arm), reason, arm, **error)


def evaluate_feature(
    feature: Mapping, context: Mapping, segments: Mapping[str, Mapping] | None = None
) -> Evaluation:
    """Decide which arm of a feature ``context`` gets. Inputs are never modified."""
    evaluation = _evaluate_feature(feature, context, segments)
    return replace(evaluation, budget=budget_info(feature))


def _evaluate_feature(
    feature: Mapping, context: Mapping, segments: Mapping[str, Mapping] | None
) -> Evaluation:
    if not feature.get("enabled"):
        return Evaluation(None, DISABLED, "off")
    targeted = _targeted_variant(feature.get("targeting"), context, segments)
    if targeted == "off":
        return Evaluation(None, TARGETING_MATCH, "off")
    if targeted in _ARMS:
        return _serve_arm(feature, targeted, TARGETING_MATCH)
    canary = feature.get("canary")
    basis_points = int(canary.get("basis_points") or 0) if canary else 0
    if basis_points <= 0:
        return _serve_arm(feature, "stable", STATIC)
    if basis_points >= MAX_BASIS_POINTS:
        return _serve_arm(feature, "canary", STATIC)
    key = _targeting_key(context)
    if key is None:
        return _serve_arm(
            feature,
            "stable",
            ERROR,
            error_code=TARGETING_KEY_MISSING,
            error_message="a canary split needs a targetingKey in the context",
        )
    salt = str(feature.get("salt") or "")
    arm = "canary" if bucket(salt, key) < basis_points else "stable"
    return _serve_arm(feature, arm, SPLIT)


def _flag_answer(flag: Mapping, variant: str, reason: str, **error: str) -> Evaluation:
    variants = flag.get("variants") or {}
    if variant not in variants:
        return Evaluation(
            None, ERROR, variant, PARSE_ERROR, f"flag has no variant {variant!r}"
        )
    return Evaluation(copy.deepcopy(variants[variant]), reason, variant, **error)


def evaluate_flag(
    flag: Mapping, context: Mapping, segments: Mapping[str, Mapping] | None = None
) -> Evaluation:
    """Decide which variant of a plain flag ``context`` gets; inputs are untouched."""
    if not flag.get("enabled"):
        return _flag_answer(flag, flag.get("off_variant", "off"), DISABLED)
    targeted = _targeted_variant(flag.get("targeting"), context, segments)
    if targeted is not None:
        return _flag_answer(flag, targeted, TARGETING_MATCH)
    default = flag.get("default_variant", "on")
    rollout = flag.get("rollout")
    if not rollout:
        return _flag_answer(flag, default, STATIC)
    basis_points = int(rollout.get("basis_points") or 0)
    if basis_points <= 0:
        return _flag_answer(flag, default, STATIC)
    if basis_points >= MAX_BASIS_POINTS:
        return _flag_answer(flag, rollout.get("variant") or default, STATIC)
    key = _targeting_key(context)
    if key is None:
        return _flag_answer(
            flag,
            default,
            ERROR,
            error_code=TARGETING_KEY_MISSING,
            error_message="a percentage rollout needs a targetingKey in the context",
        )
    in_rollout = bucket(str(rollout.get("salt") or ""), key) < basis_points
    return _flag_answer(
        flag, (rollout.get("variant") or default) if in_rollout else default, SPLIT
    )
