"""Writes for environments, credentials and the audit log."""
import hashlib
import secrets
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.utils import timezone

from apps.core import roles
from apps.core.errors import PermissionDenied, ValidationFailed
from apps.core.models import ApiToken, AuditEvent, Environment, SdkKey

SDK_KEY_PREFIX = "sw_sdk_"
API_TOKEN_PREFIX = "sw_pat_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)  # 256 bits of entropy


def audit_event_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    object_type: str,
    object_key: str,
    environment: Environment | None = None,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    actor_label: str | None = None,
) -> AuditEvent:
    """Record one audit event. Call inside the transaction of the change it describes."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor_label or (actor.get_username() if actor is not None else "system"),
        action=action,
        object_type=object_type,
        object_key=object_key,
        environment=environment,
        before=before,
        after=after,
        reason=reason,
    )


def roles_ensure() -> None:
    for name in roles.ROLES:
        Group.objects.get_or_create(name=name)


@transaction.atomic
def environment_create(*, key: str, name: str, position: int = 0, actor=None) -> Environment:
    roles.require(actor, "feature.manage")
    env = Environment(key=key, name=name, position=position)
    env.full_clean()
    env.save()
    audit_event_record(
        actor=actor, action="environment.created", object_type="environment", object_key=key,
        environment=env, after={"key": key, "name": name},
    )
    return env


@transaction.atomic
def sdk_key_create(
    *, environment: Environment, name: str, scopes: list[str], actor=None
) -> tuple[SdkKey, str]:
    """Create an SDK key; returns the row and the secret, which is shown once and never stored."""
    roles.require(actor, "sdk_key.manage")
    unknown = sorted(set(scopes) - set(SdkKey.SCOPES))
    if unknown or not scopes:
        raise ValidationFailed(
            f"Unknown or missing scopes: {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SdkKey.SCOPES)}",
            details={"scopes": unknown},
        )
    secret = _new_secret(SDK_KEY_PREFIX)
    key = SdkKey.objects.create(
        environment=environment,
        name=name,
        prefix=secret[: len(SDK_KEY_PREFIX) + 4],
        key_hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    audit_event_record(
        actor=actor, action="sdk_key.created", object_type="sdk_key", object_key=key.prefix,
        environment=environment, after={"name": name, "scopes": key.scopes},
    )
    return key, secret


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    secret = _new_secret(API_TOKEN_PREFIX)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=secret[: len(API_TOKEN_PREFIX) + 4], token_hash=hash_secret(secret)
    )
    audit_event_record(
        actor=user, action="api_token.created", object_type="api_token", object_key=token.prefix,
        after={"name": name},
    )
    return token, secret


@transaction.atomic
def sdk_key_revoke(*, key: SdkKey, actor=None) -> SdkKey:
    roles.require(actor, "sdk_key.manage")
    # Compare-and-set: revoking twice (two tabs) is harmless and audited once.
    if SdkKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_event_record(actor=actor, action="sdk_key.revoked", object_type="sdk_key", object_key=key.prefix,
                           environment=key.environment, before={"name": key.name, "scopes": key.scopes})
    key.refresh_from_db()
    return key


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor) -> ApiToken:
    if actor is None or (token.user_id != actor.pk and not roles.can(actor, "sdk_key.manage")):
        raise PermissionDenied("You may revoke only your own tokens")
    if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_event_record(actor=actor, action="api_token.revoked", object_type="api_token",
                           object_key=token.prefix, before={"name": token.name})
    token.refresh_from_db()
    return token
