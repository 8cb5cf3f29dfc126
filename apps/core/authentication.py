"""API authentication: personal API tokens (people) and SDK keys (services).

Both come as `Authorization: Bearer <secret>`. People's tokens authenticate as their user;
SDK keys authenticate a service in one environment with scopes, and views that accept them
use `SdkKeyAuthentication` + `HasSdkScope`."""
import time

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from apps.core.selectors import api_token_authenticate, sdk_key_authenticate
from apps.core.services import API_TOKEN_PREFIX, SDK_KEY_PREFIX

_LAST_TOUCH: dict[tuple[str, int], float] = {}
TOUCH_EVERY_SECONDS = 60


def touch_last_used(model, pk: int) -> None:
    """Record last_used_at at most once a minute per process and credential, so a poll
    every few seconds does not turn the hot read path into a write path."""
    slot = (model.__name__, pk)
    now = time.monotonic()
    if now - _LAST_TOUCH.get(slot, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS:
        return
    _LAST_TOUCH[slot] = now
    model.objects.filter(pk=pk).update(last_used_at=timezone.now())


def bearer_secret(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        secret = bearer_secret(request)
        if secret is None:
            return None
        if secret.startswith(SDK_KEY_PREFIX):
            raise exceptions.AuthenticationFailed(
                "This endpoint needs a personal API token, not an SDK key."
            )
        token = api_token_authenticate(secret=secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        touch_last_used(type(token), token.pk)
        return token.user, token

    def authenticate_header(self, request):
        return "Bearer"


class SdkPrincipal(AnonymousUser):
    """The request.user of a service call: not a person, carries its SDK key."""

    def __init__(self, sdk_key) -> None:
        self.sdk_key = sdk_key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True


class SdkKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        secret = bearer_secret(request)
        if secret is None:
            raise exceptions.NotAuthenticated(
                "Send the SDK key as 'Authorization: Bearer <key>'."
            )
        if secret.startswith(API_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed(
                "This endpoint needs an SDK key, not a personal API token."
            )
        key = sdk_key_authenticate(secret=secret)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked SDK key.")
        touch_last_used(type(key), key.pk)
        return SdkPrincipal(key), key

    def authenticate_header(self, request):
        return "Bearer"


class HasSdkScope(permissions.BasePermission):
    """Grants access when the request's SDK key has the view's `required_scope`."""

    message = "This SDK key lacks the required scope."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        scope = view.required_scope
        if key is None or not hasattr(key, "has_scope"):
            return False
        if not key.has_scope(scope):
            self.message = f"This SDK key lacks the '{scope}' scope."
            return False
        return True
