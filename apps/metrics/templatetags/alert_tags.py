"""`{% alert_banner %}`: the open-alerts banner shown on every page (one query)."""
from django import template

from apps.metrics.alerts import alerts_open

register = template.Library()

BANNER_LIMIT = 5


@register.inclusion_tag("metrics/_alert_banner.html", takes_context=True)
def alert_banner(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"alerts": [], "count": 0}
    # One query: a few more rows than shown tell whether there are more.
    rows = list(alerts_open().values("kind", "title", "feature__key")[:BANNER_LIMIT + 20])
    return {"alerts": rows[:BANNER_LIMIT], "count": len(rows), "more": len(rows) > BANNER_LIMIT,
            "capped": len(rows) == BANNER_LIMIT + 20}
