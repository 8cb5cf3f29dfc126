"""Roles are Django groups. Which role may do what lives here, and services check it
(DESIGN invariant 6: permissions are checked in the service layer, not only in views)."""
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from apps.core.errors import PermissionDenied

ROLES = ("admin", "pm", "oncall", "engineer", "reviewer")

# action -> roles allowed to perform it. Superusers may do everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "feature.manage": frozenset({"admin", "pm"}),
    "feature.stage": frozenset({"admin", "pm"}),
    "prompt_version.create": frozenset({"admin", "engineer"}),
    "release.rollback": frozenset({"admin", "oncall", "engineer"}),
    "release.kill_switch": frozenset({"admin", "oncall"}),
    "release.restore": frozenset({"admin", "oncall"}),
    "release.canary": frozenset({"admin", "engineer"}),
    "release.canary_abort": frozenset({"admin", "engineer", "oncall"}),
    "release.configure": frozenset({"admin", "engineer"}),
    "price.manage": frozenset({"admin"}),
    "sdk_key.manage": frozenset({"admin"}),
    "review.decide": frozenset({"admin", "reviewer"}),
    "budget.manage": frozenset({"admin", "pm"}),
    "metric.manage": frozenset({"admin", "pm"}),
}

User = AbstractBaseUser | AnonymousUser


def user_roles(user: User | None) -> set[str]:
    if user is None or not user.is_authenticated:
        return set()
    cached = getattr(user, "_shipway_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add("admin")
        user._shipway_roles = cached
    return cached


def can(user: User | None, action: str) -> bool:
    if user is not None and getattr(user, "is_superuser", False):
        return True
    return bool(user_roles(user) & PERMISSIONS[action])


def require(user: User | None, action: str) -> None:
    """Raise PermissionDenied unless `user` may perform `action`. `user=None` is the system
    (Celery, management commands run by an operator) and is always allowed."""
    if user is None:
        return
    if not can(user, action):
        allowed = ", ".join(sorted(PERMISSIONS[action]))
        raise PermissionDenied(
            f"{getattr(user, 'username', 'anonymous')} may not {action}: needs one of the roles {allowed}",
            details={"action": action, "roles": sorted(PERMISSIONS[action])},
        )
