"""UI pages for credentials: a person's API tokens, and (admins) the SDK keys per environment.
A new secret is shown once, on the page that created it, and never again."""
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.core import services
from apps.core.errors import ShipwayError
from apps.core.models import ApiToken, Environment, SdkKey
from apps.core.roles import can


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Token name", help_text="e.g. ci-pipeline")


class SdkKeyForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=Environment.objects.all(), to_field_name="key")
    name = forms.CharField(max_length=100, help_text="e.g. checkout-service")
    scopes = forms.MultipleChoiceField(choices=[(s, s) for s in SdkKey.SCOPES], widget=forms.CheckboxSelectMultiple,
                                       initial=["config:read"])


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    form = TokenForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        _, secret = services.api_token_create(user=request.user, name=form.cleaned_data["name"])
        form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "core/api_tokens.html", {"form": form, "tokens": tokens, "secret": secret})


@login_required
@require_POST
def api_token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk)
    try:
        services.api_token_revoke(token=token, actor=request.user)
        messages.success(request, f"Revoked token {token.name} ({token.prefix}…).")
    except ShipwayError as exc:
        messages.error(request, exc.message)
    return redirect("api-tokens")


@login_required
@require_http_methods(["GET", "POST"])
def sdk_keys(request):
    allowed = can(request.user, "sdk_key.manage")
    form = SdkKeyForm(request.POST or None)
    secret = None
    if request.method == "POST":
        if form.is_valid():
            try:
                key, secret = services.sdk_key_create(actor=request.user, **form.cleaned_data)
                form = SdkKeyForm()
            except ShipwayError as exc:
                messages.error(request, exc.message)
    keys = SdkKey.objects.select_related("environment", "created_by").order_by("revoked_at", "-created_at")
    return render(request, "core/sdk_keys.html", {"form": form, "keys": keys, "secret": secret, "allowed": allowed})


@login_required
@require_POST
def sdk_key_revoke(request, pk: int):
    key = get_object_or_404(SdkKey, pk=pk)
    try:
        services.sdk_key_revoke(key=key, actor=request.user)
        messages.success(request, f"Revoked SDK key {key.name} ({key.prefix}…). Services using it now get 401.")
    except ShipwayError as exc:
        messages.error(request, exc.message)
    return redirect("sdk-keys")
