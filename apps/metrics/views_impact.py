"""The weekly impact review: /features/<key>/impact?week=YYYY-Www&env=production shows each
metric (primary, secondary, guardrail) this week against its target and last week, and holds
the plain-form posts that add and delete metric definitions (inline errors on failure)."""
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import PermissionDenied, ShipwayError
from apps.core.models import Environment
from apps.core.roles import can
from apps.core.selectors import environment_get
from apps.metrics import impact
from apps.metrics.models import MetricDefinition
from apps.prompts.selectors import feature_get

Source = MetricDefinition.Source


class MetricDefinitionForm(forms.Form):
    key = forms.RegexField(regex=r"^[a-z][a-z0-9_]{0,62}$", max_length=63, help_text="e.g. resolution_rate",
                           error_messages={"invalid": "Use lowercase letters, digits or '_', starting with a letter."})
    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=MetricDefinition.Kind.choices)
    direction = forms.ChoiceField(choices=MetricDefinition.Direction.choices)
    source = forms.ChoiceField(choices=Source.choices, initial=Source.REPORTED)
    target = forms.DecimalField(required=False, max_digits=20, decimal_places=6,
                                help_text="Optional; rates as fractions (0.05 = 5 %)")
    unit = forms.CharField(required=False, max_length=20)


def format_value(definition: MetricDefinition, value: Decimal | None) -> str:
    if value is None:
        return "—"
    source = definition.source
    if source in (Source.ERROR_RATE, Source.CACHE_HIT_RATE):
        return f"{value * 100:.2f} %"
    if source == Source.P95_LATENCY_MS:
        return f"{value:.0f} ms"
    if source == Source.COST_PER_CALL_USD:
        return f"${value:.6f}"
    if source == Source.CALLS:
        return f"{value:,.0f}"
    text = f"{value.normalize():f}"
    return f"{text} {definition.unit}".strip()


def _why(row: impact.ImpactRow) -> str:
    if row.meets_target is not None:
        return "meets target" if row.meets_target else "misses target"
    return {"better": "better than last week (no target)", "worse": "worse than last week (no target)"}.get(
        row.change or "", "")


def _page(request, feature, *, week: str, env_key: str, form=None, status=200):
    environments = list(Environment.objects.order_by("position", "key"))
    if env_key:
        environment = environment_get(key=env_key)
    else:
        environment = next((e for e in environments if e.key == "production"), environments[-1] if environments
                           else None)
    monday = impact.week_parse(week)
    report = impact.impact_week_report(feature=feature, environment=environment, monday=monday) if environment \
        else None
    groups = []
    if report:
        for label, rows in report.by_kind():
            groups.append((label, [{
                "row": r, "value": format_value(r.definition, r.value),
                "previous": format_value(r.definition, r.previous),
                "target": format_value(r.definition, r.definition.target), "why": _why(r),
            } for r in rows]))
    return render(request, "metrics/impact.html", {
        "feature": feature, "environments": environments, "environment": environment, "report": report,
        "groups": groups, "form": form or MetricDefinitionForm(), "can_manage": can(request.user, "metric.manage"),
    }, status=status)


def _back(feature, request):
    week, env = request.POST.get("week", ""), request.POST.get("env", "")
    return f"{reverse('feature-impact', args=[feature.key])}?week={week}&env={env}"


@login_required
@require_GET
def impact_page(request, key: str):
    feature = feature_get(key=key)
    try:
        return _page(request, feature, week=request.GET.get("week", ""), env_key=request.GET.get("env", ""))
    except ShipwayError as exc:
        if exc.code != "invalid_week":
            raise
        messages.error(request, exc.message)
        return redirect("feature-impact", key=feature.key)


@login_required
@require_POST
def metric_definition_create(request, key: str):
    feature = feature_get(key=key)
    form = MetricDefinitionForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            definition = impact.metric_definition_create(feature=feature, actor=request.user, **form.cleaned_data)
        except ShipwayError as exc:
            field = (exc.details or {}).get("field") if isinstance(exc.details, dict) else None
            form.add_error(field if field in form.fields else None, exc.message)
            status = exc.status
        else:
            messages.success(request, f"Added {definition.get_kind_display().lower()} metric {definition.key}.")
            return redirect(_back(feature, request))
    # Re-render with the errors inline, for the week and environment the form came from.
    return _page(request, feature, week=request.POST.get("week", ""), env_key=request.POST.get("env", ""),
                 form=form, status=status)


@login_required
@require_POST
def metric_definition_delete(request, key: str, pk: int):
    feature = feature_get(key=key)
    definition = impact.metric_definition_get(feature=feature, pk=pk)
    try:
        impact.metric_definition_delete(definition=definition, actor=request.user)
    except PermissionDenied as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Deleted metric {definition.key}.")
    return redirect(_back(feature, request))
