"""The budget page of a feature: set the budget (plain form post, inline errors) and see
where each cap stands, with gauges and when it resets."""
from decimal import Decimal
from zoneinfo import available_timezones

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.core.errors import PermissionDenied, ShipwayError
from apps.core.models import AuditEvent
from apps.core.roles import can
from apps.metrics import budgets
from apps.metrics.alerts import alerts_open
from apps.metrics.models import Alert, Budget
from apps.metrics.templatetags.dashboard_tags import plain_decimal
from apps.prompts.selectors import feature_get

UNITS = Budget.Unit.choices


class BudgetForm(forms.Form):
    max_tokens_per_request = forms.IntegerField(label="Max tokens per request", required=False, min_value=1,
                                                help_text="Served in the config; the SDK refuses larger requests.")
    user_daily_cap = forms.DecimalField(label="Per-user daily cap", required=False, max_digits=16,
                                        decimal_places=6, help_text="Empty: no per-user cap.")
    user_daily_unit = forms.ChoiceField(label="Per-user cap unit", choices=UNITS, initial="usd")
    feature_monthly_cap = forms.DecimalField(label="Feature monthly ceiling", required=False, max_digits=16,
                                             decimal_places=6, help_text="Empty: no monthly ceiling.")
    feature_monthly_unit = forms.ChoiceField(label="Monthly ceiling unit", choices=UNITS, initial="usd")
    time_zone = forms.CharField(label="Time zone", max_length=64, initial="UTC",
                                help_text="IANA name, e.g. Asia/Tokyo: days and months start at local midnight.",
                                widget=forms.TextInput(attrs={"list": "time-zones"}))
    webhook_url = forms.CharField(label="Alert webhook URL", required=False, max_length=200,
                                  help_text="Slack-compatible; empty: the default alert webhook.",
                                  widget=forms.URLInput())


def _initial(budget: Budget | None) -> dict:
    if budget is None:
        return {}
    values = {f: getattr(budget, f) for f in BudgetForm.base_fields}
    # Stored with six decimals; show 25 and 0.1, not 25.000000 and 0.100000.
    return {f: plain_decimal(v) if isinstance(v, Decimal) else v for f, v in values.items()}


@login_required
@require_http_methods(["GET", "POST"])
def budget_page(request, key: str):
    feature = feature_get(key=key)
    budget = budgets.budget_get(feature=feature)
    form = BudgetForm(request.POST or None, initial=_initial(budget))
    status_code = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                budgets.budget_set(actor=request.user, feature=feature, **form.cleaned_data)
            except PermissionDenied as exc:
                form.add_error(None, exc.message)
                status_code = 403
            except ShipwayError as exc:
                for name, errors in (exc.details or {}).items():
                    form.add_error(name if name in form.fields else None, errors)
                if not exc.details:
                    form.add_error(None, exc.message)
                status_code = 400
            else:
                messages.success(request, f"Saved the budget of {feature.key}.")
                return redirect("feature-budget", key=feature.key)
        else:
            status_code = 400
    user_key = request.GET.get("user_key", "").strip()[:128]
    status = budgets.budget_status(feature=feature, user_key=user_key or None)
    return render(request, "metrics/budget.html", {
        "feature": feature, "form": form, "status": status, "user_key": user_key,
        "can_manage": can(request.user, "budget.manage"),
        "last_change": AuditEvent.objects.filter(object_type="budget", object_key=feature.key).first(),
        "alerts": alerts_open(feature=feature).filter(kind=Alert.Kind.BUDGET)[:20],
        "time_zones": sorted(available_timezones()),
    }, status=status_code)
