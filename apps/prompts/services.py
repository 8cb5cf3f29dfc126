"""Writes for features and prompt versions."""
import hashlib
import json
import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from apps.core import roles
from apps.core.errors import Conflict, ValidationFailed
from apps.core.services import audit_event_record
from apps.prompts.models import Feature, PromptVersion, Stage
from shipway.templating import TemplateSyntaxError, messages_variables, template_variables

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
ROLES = ("system", "user", "assistant", "developer", "tool")
SEMVER_PART_MAX = 2_147_483_647  # PositiveIntegerField (PostgreSQL integer) holds each part


def _validation(exc: DjangoValidationError) -> ValidationFailed:
    details = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    first = next(iter(details.values()))[0]
    return ValidationFailed(first, details=details)


def feature_create(
    *,
    key: str,
    name: str,
    actor=None,
    description: str = "",
    owner=None,
    stage: str = Stage.DEMO,
    runbook_url: str = "",
    oncall_contact: str = "",
) -> Feature:
    roles.require(actor, "feature.manage")
    feature = Feature(
        key=key, name=name, description=description, owner=owner, stage=stage,
        runbook_url=runbook_url, oncall_contact=oncall_contact,
    )
    try:
        feature.full_clean()
    except DjangoValidationError as exc:
        if "key" in getattr(exc, "error_dict", {}) and Feature.objects.filter(key=key).exists():
            raise Conflict(f"Feature '{key}' already exists", code="feature_exists") from None
        raise _validation(exc) from None
    with transaction.atomic():
        feature.save()
        audit_event_record(
            actor=actor, action="feature.created", object_type="feature", object_key=key,
            after={"key": key, "name": name, "stage": stage, "owner": owner.get_username() if owner else None},
        )
    return feature


def parse_semver(version: str) -> tuple[int, int, int, str]:
    match = SEMVER.match(version or "")
    if not match:
        raise ValidationFailed(
            f"'{version}' is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)",
            code="invalid_version", details={"version": ["Not a semantic version"]},
        )
    major, minor, patch, pre = match.groups()
    numbers = int(major), int(minor), int(patch)
    if max(numbers) > SEMVER_PART_MAX:
        raise ValidationFailed(
            f"'{version[:80]}' has a part larger than {SEMVER_PART_MAX}",
            code="invalid_version", details={"version": [f"Each number must be at most {SEMVER_PART_MAX}"]},
        )
    return *numbers, pre or ""


def _validate_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValidationFailed("messages must be a non-empty list of {role, content}",
                               details={"messages": ["Must be a non-empty list"]})
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or set(message) - {"role", "content", "name"}
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValidationFailed(
                f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, \"content\": text}}",
                details={"messages": [f"Message {i} is malformed"]},
            )
    return messages


def template_check(*, template: str | None = None, messages: list | None = None) -> list[str]:
    """The variables a template needs; raises ValidationFailed naming every syntax error."""
    try:
        if messages is not None:
            return messages_variables(_validate_messages(messages))
        return template_variables(template or "")
    except TemplateSyntaxError as exc:
        errors = [f"line {e.line}, column {e.column}: {e.message}" for e in exc.errors]
        raise ValidationFailed(
            "The template has malformed placeholders: " + "; ".join(errors),
            code="invalid_template", details={"template": errors},
        ) from None


def content_hash(*, template, messages, model, params, fallback_models) -> str:
    canonical = json.dumps(
        {"template": template, "messages": messages, "model": model, "params": params,
         "fallback_models": fallback_models},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_version_create(
    *,
    feature: Feature,
    version: str,
    model: str,
    actor=None,
    template: str | None = None,
    messages: list | None = None,
    params: dict | None = None,
    fallback_models: list[str] | None = None,
    changelog: str = "",
) -> PromptVersion:
    roles.require(actor, "prompt_version.create")
    major, minor, patch, pre = parse_semver(version)
    if (template is None) == (messages is None):
        raise ValidationFailed("Give either a text template or chat messages, not both",
                               details={"template": ["Give a template or messages"]})
    if template is not None and not template.strip():
        raise ValidationFailed("The template is empty", details={"template": ["Required"]})
    variables = template_check(template=template, messages=messages)
    if not model or not isinstance(model, str) or len(model) > 100:
        raise ValidationFailed("model is required (at most 100 characters)", details={"model": ["Required"]})
    params = params if params is not None else {}
    fallback_models = fallback_models if fallback_models is not None else []
    if not isinstance(params, dict):
        raise ValidationFailed("params must be a JSON object", details={"params": ["Must be an object"]})
    if not isinstance(fallback_models, list) or not all(isinstance(m, str) and m for m in fallback_models):
        raise ValidationFailed("fallback_models must be a list of model names",
                               details={"fallback_models": ["Must be a list of strings"]})
    pv = PromptVersion(
        feature=feature, version=version, major=major, minor=minor, patch=patch, prerelease=pre,
        template=template, messages=messages, variables=variables, model=model, params=params,
        fallback_models=fallback_models, changelog=changelog,
        content_hash=content_hash(template=template, messages=messages, model=model, params=params,
                                  fallback_models=fallback_models),
        author=actor if actor is not None and actor.is_authenticated else None,
    )
    try:
        with transaction.atomic():
            pv.save()
            audit_event_record(
                actor=actor, action="prompt_version.created", object_type="feature",
                object_key=feature.key,
                after={"version": version, "model": model, "content_hash": pv.content_hash,
                       "variables": variables},
                reason=changelog,
            )
    except IntegrityError:
        raise Conflict(
            f"{feature.key} already has a version {version}; versions are immutable, save a new one",
            code="version_exists",
        ) from None
    return pv
