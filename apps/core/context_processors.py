"""Template context shared by every page: the environments and the user's roles."""
from apps.core.roles import user_roles


def shipway(request) -> dict:
    user = getattr(request, "user", None)
    return {"user_roles": user_roles(user) if user is not None else set()}
