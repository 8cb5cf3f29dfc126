"""Dashboard pages: a feature's dashboard (the feature page's second tab), its CSV export,
and the overview of every feature. Thin views over apps.metrics.dashboards; the range and
environment pickers are plain GET forms, so everything works without JavaScript (the
charts are drawn by static/shipway/dashboard.js over the same figures the tables show)."""
import csv
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.core.errors import ValidationFailed
from apps.core.models import Environment
from apps.metrics import dashboards
from apps.prompts.models import Feature
from apps.prompts.selectors import feature_get


def _range(request) -> tuple[dashboards.TimeRange, str]:
    """The asked-for range, or the default one with the reason it was refused."""
    try:
        return dashboards.time_range_parse(range_key=request.GET.get("range"), from_text=request.GET.get("from"),
                                           to_text=request.GET.get("to")), ""
    except ValidationFailed as exc:
        fallback = dashboards.time_range_parse(range_key=dashboards.DEFAULT_RANGE)
        return fallback, f"{exc.message} Showing {fallback.label.lower()} instead."


def _environment(request, environments: list[Environment]) -> tuple[Environment | None, str]:
    wanted = request.GET.get("env", "").strip()
    by_key = {e.key: e for e in environments}
    default = by_key.get("production") or (environments[-1] if environments else None)
    if not wanted:
        return default, ""
    if wanted in by_key:
        return by_key[wanted], ""
    shown = f" Showing {default.key} instead." if default else ""
    return default, f"Unknown environment '{wanted[:40]}'.{shown}"


def _charts(time_range: dashboards.TimeRange) -> list[dict]:
    per = "day" if time_range.bucket == "day" else "hour"
    return [{"key": "calls", "title": f"Calls per {per}"}, {"key": "error_rate", "title": "Error rate"},
            {"key": "p50_ms", "title": "p50 latency (ms)"}, {"key": "p95_ms", "title": "p95 latency (ms)"},
            {"key": "tokens", "title": f"Tokens per {per} (input + output)"},
            {"key": "cost_usd", "title": f"Cost per {per} (USD)"}, {"key": "cache_hit_rate", "title": "Cache hit rate"}]


def _picker(request, time_range: dashboards.TimeRange) -> dict:
    """What the range picker form shows: the preset or the custom dates as typed."""
    custom = request.GET.get("range") == "custom" or bool(request.GET.get("from") or request.GET.get("to"))
    return {
        "presets": dashboards.PRESETS.items(),
        "range_key": "custom" if custom else time_range.key,
        "from_text": request.GET.get("from", "")[:40],
        "to_text": request.GET.get("to", "")[:40],
    }


@login_required
@require_GET
def feature_dashboard(request, key: str):
    feature = feature_get(key=key)
    environments = list(Environment.objects.all())
    environment, env_error = _environment(request, environments)
    time_range, range_error = _range(request)
    dash = None
    if environment is not None:
        dash = dashboards.feature_dashboard(feature=feature, environment=environment, time_range=time_range)
    query = urlencode({"env": environment.key if environment else "", **time_range.query()})
    errors = [e for e in (env_error, range_error) if e]
    rows = []
    if dash:
        for i, start in enumerate(dash.bucket_starts):
            for s in dash.series:
                if s.buckets[i].calls:
                    rows.append({"start": start, "series": s, "f": s.buckets[i]})
    return render(request, "metrics/dashboard.html", {
        "feature": feature, "environments": environments, "environment": environment, "dash": dash,
        "time_range": time_range, "errors": errors, "query": query, "rows": rows, "charts": _charts(time_range),
        "chart_data": dashboards.dashboard_chart_data(dash) if dash else None,
        "gauges": dashboards.budget_gauges(feature=feature), **_picker(request, time_range),
    }, status=400 if errors else 200)


class _Echo:
    def write(self, value):
        return value


@login_required
@require_GET
def feature_dashboard_csv(request, key: str):
    """The dashboard's series as CSV: one row per bucket x prompt version x arm. Bad input is
    a 400 with the reason (a spreadsheet cannot show a flash message)."""
    feature = feature_get(key=key)
    environments = list(Environment.objects.all())
    environment, env_error = _environment(request, environments)
    try:
        time_range = dashboards.time_range_parse(range_key=request.GET.get("range"),
                                                 from_text=request.GET.get("from"), to_text=request.GET.get("to"))
    except ValidationFailed as exc:
        return HttpResponse(exc.message + "\n", status=400, content_type="text/plain; charset=utf-8")
    if env_error or environment is None:
        return HttpResponse((env_error or "No environments.") + "\n", status=400,
                            content_type="text/plain; charset=utf-8")
    dash = dashboards.feature_dashboard(feature=feature, environment=environment, time_range=time_range)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in dashboards.dashboard_csv_rows(dash)),
                                     content_type="text/csv; charset=utf-8")
    name = f"{feature.key}-{environment.key}-{time_range.start:%Y%m%d%H}-{time_range.end:%Y%m%d%H}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_GET
def dashboards_overview(request):
    """Every feature's calls, error rate, p95 and cost over the range, per environment, with a
    calls sparkline. A fixed number of queries per page."""
    environments = list(Environment.objects.all())
    env_key = request.GET.get("env", "").strip()
    errors = []
    shown = environments
    if env_key:
        shown = [e for e in environments if e.key == env_key]
        if not shown:
            errors.append(f"Unknown environment '{env_key[:40]}'. Showing every environment instead.")
            shown, env_key = environments, ""
    time_range, range_error = _range(request)
    if range_error:
        errors.append(range_error)
    page = Paginator(Feature.objects.order_by("key"), 25).get_page(request.GET.get("page"))
    features = list(page.object_list)
    cells = dashboards.overview_figures(features=features, environments=shown, time_range=time_range)
    rows = [{"feature": f, "cells": [cells[(f.id, e.id)] for e in shown]} for f in features]
    return render(request, "metrics/dashboard_overview.html", {
        "rows": rows, "environments": environments, "shown": shown, "env_key": env_key, "page": page,
        "time_range": time_range, "spark_bucket": dashboards.sparkline_bucket(time_range), "errors": errors,
        "range_query": urlencode(time_range.query()),
        "page_query": urlencode({"env": env_key, **time_range.query()}), **_picker(request, time_range),
    }, status=400 if errors else 200)
