"""The model price page (/settings/prices/): every price with the date it took effect, and a
form to add one (plain form post, errors inline). Saving goes through
apps.metrics.pricing.model_price_set, which checks the permission and writes the audit event."""
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from apps.core.errors import ShipwayError
from apps.core.roles import can
from apps.metrics import pricing, selectors

PRICE = {"max_digits": 12, "decimal_places": 6, "min_value": 0}


class PriceForm(forms.Form):
    model = forms.CharField(label="Model", max_length=100, help_text="As services report it, e.g. gpt-4o-mini")
    input_per_million = forms.DecimalField(label="Input, USD per million tokens", **PRICE)
    cached_input_per_million = forms.DecimalField(label="Cached input, USD per million tokens", **PRICE)
    output_per_million = forms.DecimalField(label="Output, USD per million tokens", **PRICE)
    effective_from = forms.DateField(label="Effective from (UTC date)", widget=forms.DateInput(attrs={"type": "date"}),
                                     help_text="Calls on or after this date use this price.")


@login_required
@require_http_methods(["GET", "POST"])
def prices(request):
    allowed = can(request.user, "price.manage")
    if request.method == "POST":
        form = PriceForm(request.POST)
        if form.is_valid():
            try:
                row = pricing.model_price_set(actor=request.user, **form.cleaned_data)
            except ShipwayError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Saved the price of {row.model} from {row.effective_from:%Y-%m-%d}.")
                return redirect("prices")
        status = 400
    else:
        form = PriceForm(initial={"effective_from": timezone.now().date()})
        status = 200
        if not selectors.model_price_list():  # first visit on a fresh install
            pricing.model_prices_seed_defaults()
    today = timezone.now().date()
    rows, in_effect = [], set()
    for row in selectors.model_price_list():  # newest first per model
        if row.effective_from > today:
            state = "scheduled"
        elif row.model not in in_effect:
            state = "in effect"
            in_effect.add(row.model)
        else:
            state = "superseded"
        rows.append({"price": row, "state": state})
    return render(request, "metrics/prices.html", {"form": form, "rows": rows, "allowed": allowed}, status=status)
