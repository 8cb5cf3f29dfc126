"""Reads for environments and credentials."""
from apps.core.errors import NotFound
from apps.core.models import ApiToken, Environment, SdkKey
from apps.core.services import hash_secret


def environment_get(*, key: str) -> Environment:
    try:
        return Environment.objects.get(key=key)
    except Environment.DoesNotExist:
        raise NotFound(f"Unknown environment '{key}'", code="environment_not_found") from None


def sdk_key_authenticate(*, secret: str) -> SdkKey | None:
    """The live SDK key for `secret`, with its environment, in one query; None if unknown."""
    if not secret:
        return None
    return (
        SdkKey.objects.select_related("environment")
        .filter(key_hash=hash_secret(secret), revoked_at__isnull=True)
        .first()
    )


def api_token_authenticate(*, secret: str) -> ApiToken | None:
    if not secret:
        return None
    return (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_secret(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
