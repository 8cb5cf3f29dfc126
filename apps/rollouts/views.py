"""The web UI: overview, feature page, release actions with confirm steps, audit log.
Views are thin: they parse a form, call one service, and redirect (POST/redirect/GET) so
every core action works as a plain form post; htmx only makes it faster."""
import json
import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.errors import ShipwayError
from apps.core.models import AuditEvent, Environment
from apps.core.parsers import json_loads_checked
from apps.core.roles import can
from apps.core.selectors import environment_get
from apps.metrics.health import canary_health_verdict
from apps.prompts import selectors as prompt_selectors
from apps.prompts import services as prompt_services
from apps.prompts.models import Feature, Stage
from apps.rollouts import forms, selectors, services
from shipway.bucketing import basis_points_to_percent


def _feature_url(feature: Feature, env: str | None = None) -> str:
    url = reverse("feature", args=[feature.key])
    return f"{url}#env-{env}" if env else url


def _form_error(request, form) -> None:
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{field}: "
        messages.error(request, label + "; ".join(errors))


def _canary_health(release, rev):
    """The verdict over the whole canary so far: the sequential test's false-alarm bound
    holds for looks that share a start, so the window starts when the canary did (a
    sliding last-hour window would start anew at every page view)."""
    started = selectors.canary_started_at(release=release, revision=rev)
    now = timezone.now()
    minutes = max(1, math.ceil((now - started).total_seconds() / 60))
    return canary_health_verdict(feature=release.feature, environment=release.environment, now=now,
                                 window_minutes=minutes, since=started, canary_version=rev.canary_version.version)


@login_required
@require_GET
def overview(request):
    environments = list(Environment.objects.all())
    features = Feature.objects.select_related("owner").order_by("key")
    stage, q = request.GET.get("stage", ""), request.GET.get("q", "").strip()
    if stage in Stage.values:
        features = features.filter(stage=stage)
    if q:
        features = features.filter(Q(key__icontains=q) | Q(name__icontains=q))
    page = Paginator(features, 25).get_page(request.GET.get("page"))
    releases = selectors.releases_by_feature(features=list(page.object_list))
    rows = [
        {"feature": f, "cells": [releases.get((f.id, e.id)) for e in environments]}
        for f in page.object_list
    ]
    # "What changed?" for the on-call: changes to what is served (releases, budgets), not
    # set-up noise such as price seeding or metric definitions (those are in the audit log).
    recent = AuditEvent.objects.select_related("environment").filter(
        object_type__in=("release", "budget", "feature"))[:12]
    return render(request, "rollouts/overview.html", {
        "environments": environments, "rows": rows, "page": page, "recent": recent,
        "stages": Stage.choices, "stage": stage, "q": q,
    })


@login_required
@require_GET
def feature_detail(request, key: str):
    feature = prompt_selectors.feature_get(key=key)
    versions = list(prompt_selectors.prompt_version_list(feature=feature))
    version_names = [v.version for v in versions]
    envs = []
    releases = selectors.releases_by_feature(features=[feature])
    for environment in Environment.objects.all():
        release = releases.get((feature.id, environment.id))
        entry = {"environment": environment, "release": release}
        if release:
            rev = release.current_revision
            entry.update(
                revision=rev,
                history=selectors.release_revisions(release=release)[:20],
                marks=selectors.release_marks(release=release),
                canary_percent=basis_points_to_percent(rev.canary_basis_points),
                stable_percent=basis_points_to_percent(10000 - rev.canary_basis_points),
                canary_form=forms.CanaryStartForm(
                    versions=[v for v in version_names if v != rev.stable_version.version],
                    initial={"expected_revision": rev.number}),
                canary_health=_canary_health(release, rev) if rev.canary_version_id else None,
            )
        else:
            entry["create_form"] = forms.ReleaseCreateForm(
                versions=version_names, initial={"environment": environment.key})
        envs.append(entry)
    return render(request, "rollouts/feature.html", {
        "feature": feature, "versions": versions, "envs": envs,
        "can": {action: can(request.user, action) for action in (
            "release.rollback", "release.kill_switch", "release.canary", "release.canary_abort",
            "release.restore", "release.configure", "prompt_version.create")},
    })


@login_required
@require_http_methods(["GET", "POST"])
def feature_create(request):
    form = forms.FeatureForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            feature = prompt_services.feature_create(actor=request.user, owner=request.user, **form.cleaned_data)
        except ShipwayError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Created {feature.key}. Add its first prompt version.")
            return redirect("version-create", key=feature.key)
    return render(request, "rollouts/feature_form.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def version_create(request, key: str):
    feature = prompt_selectors.feature_get(key=key)
    latest = prompt_selectors.prompt_version_list(feature=feature).first()
    initial = {}
    if latest:
        initial = {
            "kind": latest.kind, "model": latest.model, "params": json.dumps(latest.params),
            "fallback_models": ", ".join(latest.fallback_models),
            "body": json.dumps(latest.messages, indent=2) if latest.messages is not None else latest.template,
        }
    form = forms.PromptVersionForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        fields = form.template_fields()
        if fields:
            try:
                pv = prompt_services.prompt_version_create(
                    feature=feature, actor=request.user, version=form.cleaned_data["version"],
                    model=form.cleaned_data["model"], params=form.cleaned_data["params"],
                    fallback_models=form.cleaned_data["fallback_models"],
                    changelog=form.cleaned_data["changelog"], **fields)
            except ShipwayError as exc:
                form.add_error("body" if exc.code == "invalid_template" else None, exc.message)
            else:
                messages.success(request, f"Saved {feature.key} v{pv.version}.")
                return redirect("feature", key=feature.key)
    return render(request, "rollouts/version_form.html", {"form": form, "feature": feature, "latest": latest})


@login_required
@require_POST
def version_validate(request, key: str):
    """htmx: live validation of the template being typed; answers a fragment."""
    kind, body = request.POST.get("kind", "text"), request.POST.get("body", "")
    variables, error = [], ""
    try:
        if kind == "chat":
            try:
                parsed = json_loads_checked(body or "null")
            except ValueError as exc:
                raise ShipwayError(f"Chat messages must be a JSON list: {exc}") from None
            variables = prompt_services.template_check(messages=parsed)
        else:
            variables = prompt_services.template_check(template=body)
    except ShipwayError as exc:
        error = exc.message
    return render(request, "rollouts/feature.html#template-check", {"variables": variables, "error": error})


@login_required
@require_GET
def version_diff(request, key: str):
    feature = prompt_selectors.feature_get(key=key)
    versions = list(prompt_selectors.prompt_version_list(feature=feature))
    names = [v.version for v in versions]
    a = request.GET.get("a") or (names[1] if len(names) > 1 else (names[0] if names else ""))
    b = request.GET.get("b") or (names[0] if names else "")
    diff, old, new = [], None, None
    if a and b:
        old = prompt_selectors.prompt_version_get(feature=feature, version=a)
        new = prompt_selectors.prompt_version_get(feature=feature, version=b)
        diff = prompt_selectors.prompt_version_diff(old=old, new=new)
    return render(request, "rollouts/diff.html", {
        "feature": feature, "names": names, "a": a, "b": b, "diff": diff, "old": old, "new": new})


def _release_target(key: str, env: str):
    feature = prompt_selectors.feature_get(key=key)
    environment = environment_get(key=env)
    return feature, environment, selectors.release_get_current(feature=feature, environment=environment)


@login_required
@require_http_methods(["GET", "POST"])
def rollback(request, key: str, env: str):
    feature, environment, release = _release_target(key, env)
    if request.method == "POST":
        form = forms.ChangeForm(request.POST)
        if not form.is_valid():
            _form_error(request, form)
            return redirect(_feature_url(feature, env))
        try:
            result = services.release_rollback(feature=feature, environment=environment, actor=request.user,
                                               **form.cleaned_data)
        except ShipwayError as exc:
            messages.error(request, exc.message)
        else:
            rev = result.revision
            messages.success(request, f"{env}: rolled back v{result.marked.version} - revision {rev.number} "
                             f"by {rev.created_by_label} at {rev.created_at:%H:%M:%S} UTC.")
        return redirect(_feature_url(feature, env))
    plan_error, description = None, ""
    try:
        current, target, victim = services.rollback_plan(release=release)
        description = services.rollback_describe(current=current, target=target)
    except ShipwayError as exc:
        plan_error, current, target, victim = exc.message, release.current_revision, None, None
    return render(request, "rollouts/confirm.html", {
        "feature": feature, "environment": environment, "title": f"Roll back {feature.key} in {env}?",
        "description": description, "error": plan_error, "action": reverse("rollback", args=[key, env]),
        "form": forms.ChangeForm(initial={"expected_revision": current.number}),
        "button": f"Roll back v{victim.version}" if victim else "", "danger": True,
        "detail": f"v{victim.version} will be marked rolled back in {env} and never restored by a "
                  f"later rollback. Revision {current.number} stays in the history." if victim else "",
    })


@login_required
@require_http_methods(["GET", "POST"])
def kill_switch(request, key: str, env: str):
    feature, environment, release = _release_target(key, env)
    rev = release.current_revision
    if request.method == "POST":
        form = forms.KillSwitchForm(request.POST)
        if not form.is_valid():
            _form_error(request, form)
        else:
            try:
                new = services.release_set_enabled(feature=feature, environment=environment,
                                                   actor=request.user, **form.cleaned_data)
            except ShipwayError as exc:
                messages.error(request, exc.message)
            else:
                state = "on" if new.enabled else "OFF"
                messages.success(request, f"{env}: {feature.key} is {state} - revision {new.number} by "
                                 f"{new.created_by_label} at {new.created_at:%H:%M:%S} UTC.")
        return redirect(_feature_url(feature, env))
    turning_on = not rev.enabled
    if turning_on:
        served = f"v{rev.stable_version.version}"
        if rev.canary_version_id and rev.canary_basis_points:
            served += f" and v{rev.canary_version.version} at {basis_points_to_percent(rev.canary_basis_points)} %"
        description = f"{env}: serve {served} again instead of nothing"
    else:
        description = (f"{env}: serve nothing (services fall back to their code default) instead of "
                       f"v{rev.stable_version.version}"
                       + (f" with v{rev.canary_version.version} at {basis_points_to_percent(rev.canary_basis_points)} %"
                          if rev.canary_version_id and rev.canary_basis_points else ""))
    return render(request, "rollouts/confirm.html", {
        "feature": feature, "environment": environment,
        "title": f"Turn {feature.key} {'on' if turning_on else 'off'} in {env}?",
        "description": description, "action": reverse("kill-switch", args=[key, env]),
        "form": forms.KillSwitchForm(initial={"expected_revision": rev.number, "enabled": "1" if turning_on else "0"}),
        "button": "Turn on" if turning_on else "Turn off (kill switch)", "danger": not turning_on,
    })


@login_required
@require_http_methods(["GET", "POST"])
def restore(request, key: str, env: str, number: int):
    feature, environment, release = _release_target(key, env)
    if request.method == "POST":
        form = forms.RestoreForm(request.POST)
        if not form.is_valid():
            _form_error(request, form)
        else:
            try:
                new = services.release_restore(
                    feature=feature, environment=environment, actor=request.user, number=number,
                    expected_revision=form.cleaned_data["expected_revision"], reason=form.cleaned_data["reason"])
            except ShipwayError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"{env}: restored revision {number} as revision {new.number} by "
                                 f"{new.created_by_label} at {new.created_at:%H:%M:%S} UTC.")
        return redirect(_feature_url(feature, env))
    old = selectors.revision_get(release=release, number=number)
    current = release.current_revision
    return render(request, "rollouts/confirm.html", {
        "feature": feature, "environment": environment,
        "title": f"Restore revision {number} of {feature.key} in {env}?",
        "description": services.rollback_describe(current=current, target=old),
        "detail": f"Every field of revision {number} (enabled: {'yes' if old.enabled else 'no'}) is copied "
                  "into a new revision; nothing is deleted.",
        "action": reverse("restore", args=[key, env, number]),
        "form": forms.RestoreForm(initial={"expected_revision": current.number, "revision": number}),
        "button": f"Restore revision {number}", "danger": False,
    })


def _canary_action(request, key, env, form_class, call, done):
    feature, environment, release = _release_target(key, env)
    form = form_class(request.POST, **({"versions": [v.version for v in feature.versions.all()]}
                                       if form_class is forms.CanaryStartForm else {}))
    if not form.is_valid():
        _form_error(request, form)
    else:
        try:
            rev = call(feature=feature, environment=environment, actor=request.user, **form.cleaned_data)
        except ShipwayError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{env}: {done(rev)} - revision {rev.number} by {rev.created_by_label} "
                             f"at {rev.created_at:%H:%M:%S} UTC.")
    return redirect(_feature_url(feature, env))


@login_required
@require_POST
def canary_start(request, key, env):
    return _canary_action(request, key, env, forms.CanaryStartForm, services.canary_start,
                          lambda r: f"canary v{r.canary_version.version} started at "
                                    f"{basis_points_to_percent(r.canary_basis_points)} %")


@login_required
@require_POST
def canary_percent(request, key, env):
    return _canary_action(request, key, env, forms.CanaryPercentForm, services.canary_set_percent,
                          lambda r: f"canary now at {basis_points_to_percent(r.canary_basis_points)} %")


@login_required
@require_POST
def canary_promote(request, key, env):
    return _canary_action(request, key, env, forms.ChangeForm, services.canary_promote,
                          lambda r: f"v{r.stable_version.version} promoted to stable")


@login_required
@require_POST
def canary_abort(request, key, env):
    return _canary_action(request, key, env, forms.ChangeForm, services.canary_abort,
                          lambda r: "canary aborted and its version marked halted")


@login_required
@require_POST
def release_create(request, key):
    feature = prompt_selectors.feature_get(key=key)
    form = forms.ReleaseCreateForm(request.POST, versions=[v.version for v in feature.versions.all()])
    if not form.is_valid():
        _form_error(request, form)
        return redirect(_feature_url(feature))
    environment = form.cleaned_data["environment"]
    try:
        rev = services.release_create(feature=feature, environment=environment, actor=request.user,
                                      stable_version=form.cleaned_data["stable_version"])
    except ShipwayError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{environment.key}: now serving v{rev.stable_version.version}.")
    return redirect(_feature_url(feature, environment.key))


@login_required
@require_GET
def audit_log(request):
    events = AuditEvent.objects.select_related("environment")
    filters = {k: request.GET.get(k, "").strip() for k in ("action", "object_key", "environment", "actor")}
    if filters["action"]:
        events = events.filter(action__startswith=filters["action"])
    if filters["object_key"]:
        events = events.filter(object_key=filters["object_key"])
    if filters["environment"]:
        events = events.filter(environment__key=filters["environment"])
    if filters["actor"]:
        events = events.filter(actor_label=filters["actor"])
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    actions = AuditEvent.objects.order_by().values_list("action", flat=True).distinct()
    return render(request, "rollouts/audit.html", {
        "page": page, "filters": filters, "query": query, "environments": Environment.objects.all(),
        "actions": sorted(set(actions)),
    })
