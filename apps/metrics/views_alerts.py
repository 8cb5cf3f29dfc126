"""The alerts page: open and resolved alerts (budget and SLO) with their figures, filtered by
kind, feature and state, paginated."""
import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.metrics.models import Alert
from apps.prompts.models import Feature

STATES = (("open", "Open"), ("resolved", "Resolved"), ("", "All"))


def _figure_rows(figures: dict) -> list[tuple[str, str]]:
    rows = []
    for key, value in figures.items():
        if key == "resolved":
            continue
        rows.append((key.replace("_", " "), json.dumps(value) if isinstance(value, dict | list) else str(value)))
    return rows


@login_required
@require_GET
def alerts_list(request):
    kind = request.GET.get("kind", "")
    feature_key = request.GET.get("feature", "").strip()
    state = request.GET.get("state", "")
    alerts = Alert.objects.select_related("feature", "environment").order_by("-opened_at", "-id")
    if kind in Alert.Kind.values:
        alerts = alerts.filter(kind=kind)
    if feature_key:
        alerts = alerts.filter(feature__key=feature_key)
    if state == "open":
        alerts = alerts.filter(resolved_at__isnull=True)
    elif state == "resolved":
        alerts = alerts.filter(resolved_at__isnull=False)
    page = Paginator(alerts, 25).get_page(request.GET.get("page"))
    rows = [{"alert": a, "figures": _figure_rows(a.figures),
             "resolved_figures": _figure_rows(a.figures.get("resolved") or {})
             if isinstance(a.figures.get("resolved"), dict) else []}
            for a in page.object_list]
    query = f"kind={kind}&feature={feature_key}&state={state}"
    return render(request, "metrics/alerts.html", {
        "rows": rows, "page": page, "kind": kind, "feature_key": feature_key, "state": state,
        "kinds": Alert.Kind.choices, "states": STATES, "query": query,
        "features": Feature.objects.order_by("key").values_list("key", flat=True),
        "open_count": Alert.objects.filter(resolved_at__isnull=True).count(),
    })
