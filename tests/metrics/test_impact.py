"""Impact metrics: audited definition services with personas, the report API (SDK key,
events:write) with its bad input, values derived from rollups, and the weekly review page."""
import datetime as dt
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.core.errors import PermissionDenied, ValidationFailed
from apps.core.models import AuditEvent
from apps.core.services import api_token_create, sdk_key_create
from apps.metrics import histogram
from apps.metrics.impact import (
    impact_row,
    impact_week_report,
    metric_definition_create,
    metric_definition_delete,
    metric_definition_update,
    telemetry_week_values,
    week_label,
    week_parse,
)
from apps.metrics.models import CallRollup, MetricDefinition, MetricValue

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # Thursday of 2026-W49
MONDAY = dt.date(2026, 11, 30)
URL = "/api/v1/features/ticket-summarizer/metrics"


def make_rollup(*, feature, environment, minute, calls=100, errors=0, cache_hits=0, cost="0.10", latency_ms=800):
    return CallRollup.objects.create(
        minute=minute, environment=environment, feature=feature, prompt_version="1.0.0", arm="stable",
        model="gpt-4o-mini", calls=calls, errors=errors, cache_hits=cache_hits, cost_usd=Decimal(cost),
        latency_sum_ms=latency_ms * calls, latency_histogram=histogram.add(histogram.empty(), latency_ms, calls),
    )


def define(feature, key="resolution_rate", *, kind="primary", direction="increase", target="0.40",
           source="reported", actor=None, **kw):
    return metric_definition_create(feature=feature, key=key, name=key.replace("_", " ").title(), kind=kind,
                                    direction=direction, target=target, source=source, actor=actor, **kw)


@pytest.fixture
def writer(envs):
    _, secret = sdk_key_create(environment=envs["production"], name="svc", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def metrics(feature, personas):
    return {
        "resolution_rate": define(feature, actor=personas["pm"], unit=""),
        "error_rate": define(feature, "error_rate", kind="guardrail", direction="decrease", target="0.02",
                             source="error_rate", actor=personas["pm"]),
        "p95": define(feature, "p95", kind="guardrail", direction="decrease", target="1500",
                      source="p95_latency_ms", actor=personas["pm"]),
        "cost": define(feature, "cost", kind="secondary", direction="decrease", target=None,
                       source="cost_per_call_usd", actor=personas["pm"]),
    }


# --- services ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "pm"])
def test_metric_definition_create__allowed_roles__audited(feature, personas, role):
    d = define(feature, actor=personas[role])
    assert d.target == Decimal("0.400000") and d.source == "reported"
    event = AuditEvent.objects.get(action="metric_definition.created")
    assert event.object_key == "ticket-summarizer" and event.actor == personas[role]
    assert event.after["key"] == "resolution_rate" and event.after["target"] == "0.400000"


@pytest.mark.parametrize("role", ["oncall", "engineer", "reviewer", "nobody"])
def test_metric_definition_create__other_roles__forbidden_and_nothing_written(feature, personas, role):
    with pytest.raises(PermissionDenied):
        define(feature, actor=personas[role])
    assert not MetricDefinition.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="metric_definition").exists()


@pytest.mark.parametrize("field, value, code", [
    ("key", "Bad Key", "invalid_key"), ("key", "", "invalid_key"), ("kind", "tertiary", "invalid_kind"),
    ("direction", "up", "invalid_direction"), ("source", "vibes", "invalid_source"),
    ("target", "abc", "invalid_target"), ("target", "NaN", "invalid_target"), ("target", "1e20", "invalid_target"),
    ("name", "  ", "invalid_name"),
])
def test_metric_definition_create__bad_input(feature, personas, field, value, code):
    kwargs = {"feature": feature, "key": "m", "name": "M", "kind": "primary", "direction": "increase",
              "actor": personas["pm"], field: value}
    with pytest.raises(ValidationFailed) as exc:
        metric_definition_create(**kwargs)
    assert exc.value.code == code


def test_metric_definition_create__duplicate_key__clear_error(feature, personas):
    define(feature, actor=personas["pm"])
    with pytest.raises(ValidationFailed) as exc:
        define(feature, actor=personas["admin"])
    assert exc.value.code == "metric_exists" and "already has a metric 'resolution_rate'" in exc.value.message


def test_metric_definition_update__audited_before_after(feature, personas):
    d = define(feature, actor=personas["pm"])
    d = metric_definition_update(definition=d, actor=personas["admin"], target="0.5", name="Resolved")
    assert d.target == Decimal("0.5") and d.name == "Resolved"
    event = AuditEvent.objects.get(action="metric_definition.updated")
    assert event.before["target"] == "0.400000" and event.after["target"] == "0.500000"


def test_metric_definition_update__key_and_source_not_editable__roles_checked(feature, personas):
    d = define(feature, actor=personas["pm"])
    with pytest.raises(ValidationFailed) as exc:
        metric_definition_update(definition=d, actor=personas["pm"], key="other", source="calls")
    assert exc.value.code == "not_editable"
    with pytest.raises(ValidationFailed):
        metric_definition_update(definition=d, actor=personas["pm"], direction="sideways")
    with pytest.raises(PermissionDenied):
        metric_definition_update(definition=d, actor=personas["engineer"], target="1")


def test_metric_definition_delete__audited__values_go_too(feature, personas, envs):
    d = define(feature, actor=personas["pm"])
    MetricValue.objects.create(definition=d, environment=envs["production"], value=1, recorded_at=NOW)
    with pytest.raises(PermissionDenied):
        metric_definition_delete(definition=d, actor=personas["oncall"])
    metric_definition_delete(definition=d, actor=personas["pm"])
    assert not MetricDefinition.objects.exists() and not MetricValue.objects.exists()
    assert AuditEvent.objects.get(action="metric_definition.deleted").before["values"] == 1


# --- the report API ---------------------------------------------------------------------------

def test_report_api__accepts_values_in_the_keys_environment(writer, metrics, envs, time_machine):
    time_machine.move_to(NOW, tick=False)
    response = writer.post(URL, {"values": [
        {"metric": "resolution_rate", "value": 0.1, "recorded_at": "2026-12-03T11:00:00Z"},
        {"metric": "resolution_rate", "value": "0.4567", "recorded_at": "2026-12-03T12:00:00+01:00"},
        {"metric": "resolution_rate", "value": 3},  # recorded_at defaults to now
    ]}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["counts"] == {"accepted": 3, "rejected": 0}
    assert [a["value"] for a in body["accepted"]] == ["0.100000", "0.456700", "3.000000"]
    values = list(MetricValue.objects.order_by("id"))
    assert [v.value for v in values] == [Decimal("0.1"), Decimal("0.4567"), Decimal("3")]
    assert all(v.environment == envs["production"] for v in values)
    assert values[1].recorded_at == datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
    assert values[2].recorded_at == NOW


def test_report_api__bad_items_rejected_by_index__valid_ones_committed(writer, metrics, time_machine):
    time_machine.move_to(NOW)
    response = writer.post(URL, {"values": [
        {"metric": "resolution_rate", "value": "0.5", "recorded_at": "2026-12-03T11:00:00Z"},
        {"metric": "nope", "value": 1},
        {"metric": "error_rate", "value": 0.01},
        {"metric": "resolution_rate", "value": True},
        {"metric": "resolution_rate", "value": "abc"},
        {"metric": "resolution_rate", "value": "NaN"},
        {"metric": "resolution_rate", "value": "0.1234567"},
        {"metric": "resolution_rate", "value": 1, "recorded_at": "2026-12-03T11:00:00"},
        {"metric": "resolution_rate", "value": 1, "recorded_at": "2026-12-04T11:00:00Z"},
        {"metric": "resolution_rate", "value": 1, "recorded_at": "yesterday"},
        "not an object",
        {"value": 1},
    ]}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["counts"] == {"accepted": 1, "rejected": 11}
    codes = {r["index"]: [reason["code"] for reason in r["reasons"]] for r in body["rejected"]}
    assert codes == {1: ["unknown_metric"], 2: ["derived_metric"], 3: ["invalid_value"], 4: ["invalid_value"],
                     5: ["invalid_value"], 6: ["invalid_value"], 7: ["invalid_recorded_at"],
                     8: ["invalid_recorded_at"], 9: ["invalid_recorded_at"], 10: ["invalid_type"],
                     11: ["unknown_metric"]}
    assert "reported metrics: resolution_rate" in body["rejected"][0]["reasons"][0]["message"]
    assert "needs a UTC offset" in body["rejected"][6]["reasons"][0]["message"]
    assert MetricValue.objects.count() == 1


def test_report_api__everything_rejected__400_with_the_listing(writer, metrics):
    response = writer.post(URL, {"values": [{"metric": "nope", "value": 1}]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "all_values_rejected" and error["details"]["rejected"][0]["index"] == 0
    assert not MetricValue.objects.exists()


@pytest.mark.parametrize("body, code", [
    ({"values": {"metric": "x"}}, "invalid_body"), ({"values": []}, "invalid_body"), ({}, "invalid_body"),
    ([], "invalid_body"), ({"values": [{"metric": "resolution_rate", "value": 1}] * 1001}, "batch_too_large"),
])
def test_report_api__bad_body__400(writer, metrics, body, code):
    response = writer.post(URL, body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert not MetricValue.objects.exists()


def test_report_api__not_json__4xx(writer, metrics):
    response = writer.post(URL, "values=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    response = writer.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400 and "error" in response.json()


def test_report_api__unknown_feature__404(writer, metrics):
    response = writer.post("/api/v1/features/nope/metrics", {"values": [{"metric": "x", "value": 1}]}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "feature_not_found"


def test_report_api__credentials(metrics, envs, personas, sdk_key):
    body = {"values": [{"metric": "resolution_rate", "value": 1}]}
    anonymous = APIClient()
    assert anonymous.post(URL, body, format="json").status_code == 401
    read_only = APIClient()
    read_only.credentials(HTTP_AUTHORIZATION=f"Bearer {sdk_key}")  # config:read only
    response = read_only.post(URL, body, format="json")
    assert response.status_code == 403 and "events:write" in response.json()["error"]["message"]
    _, token = api_token_create(user=personas["admin"], name="t")
    person = APIClient()
    person.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert person.post(URL, body, format="json").status_code == 401
    assert not MetricValue.objects.exists()


def test_report_api__wrong_method(writer, metrics):
    assert writer.get(URL).status_code == 405


def test_report_api__in_the_openapi_schema(client, db):
    schema = client.get("/api/schema/?format=json").json()
    assert "post" in schema["paths"]["/api/v1/features/{key}/metrics"]


# --- weeks, derived values, the review -------------------------------------------------------

def test_week_parse():
    assert week_parse("2026-W49") == MONDAY
    assert week_parse("", today=dt.date(2026, 12, 3)) == MONDAY
    assert week_label(MONDAY) == "2026-W49" and week_label(dt.date(2021, 1, 4)) == "2021-W01"
    for bad in ("2026-49", "2026-W54", "2026-W00", "W49", "2026-W4x"):
        with pytest.raises(ValidationFailed):
            week_parse(bad)


def test_telemetry_week_values__from_rollups_of_that_week_only(feature, envs):
    prod = envs["production"]
    start = datetime(2026, 11, 30, tzinfo=UTC)
    make_rollup(feature=feature, environment=prod, minute=start, calls=100, errors=2, cache_hits=30, cost="0.10",
                latency_ms=800)
    make_rollup(feature=feature, environment=prod, minute=start + timedelta(days=6, hours=23, minutes=59), calls=100,
                errors=0, cache_hits=10, cost="0.30", latency_ms=2000)
    make_rollup(feature=feature, environment=prod, minute=start + timedelta(days=7), calls=1000, errors=1000)
    make_rollup(feature=feature, environment=envs["staging"], minute=start, calls=1000, errors=1000)
    values = telemetry_week_values(feature=feature, environment=prod, monday=MONDAY)
    assert values["calls"] == 200 and values["error_rate"] == Decimal("0.01")
    assert values["cache_hit_rate"] == Decimal("0.2") and values["cost_per_call_usd"] == Decimal("0.002")
    assert Decimal("1800") < values["p95_latency_ms"] < Decimal("2200")  # histogram: within a bucket
    empty = telemetry_week_values(feature=feature, environment=prod, monday=MONDAY - timedelta(days=7))
    assert empty["calls"] == 0 and empty["error_rate"] is None and empty["p95_latency_ms"] is None


@pytest.mark.parametrize("direction, target, value, previous, status, change", [
    ("increase", "0.4", "0.5", "0.3", "good", "better"),
    ("increase", "0.4", "0.3", "0.5", "bad", "worse"),
    ("increase", "0.4", "0.4", "0.4", "good", "same"),
    ("decrease", "0.02", "0.01", "0.03", "good", "better"),
    ("decrease", "0.02", "0.03", "0.01", "bad", "worse"),
    ("decrease", None, "0.03", "0.01", "bad", "worse"),
    ("increase", None, "0.03", "0.01", "good", "better"),
    ("increase", None, "0.03", None, "none", None),
    ("increase", "1", None, "0.5", "none", None),
])
def test_impact_row__green_red_by_direction(direction, target, value, previous, status, change):
    d = MetricDefinition(key="m", name="m", kind="primary", direction=direction,
                         target=Decimal(target) if target else None)
    row = impact_row(d, Decimal(value) if value else None, Decimal(previous) if previous else None)
    assert (row.status, row.change) == (status, change)


@pytest.fixture
def two_weeks(metrics, feature, envs):
    prod = envs["production"]
    this, last = datetime(2026, 12, 1, 9, 0, tzinfo=UTC), datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    make_rollup(feature=feature, environment=prod, minute=this, calls=100, errors=1, cost="0.20", latency_ms=900)
    make_rollup(feature=feature, environment=prod, minute=last, calls=100, errors=5, cost="0.10", latency_ms=700)
    rr = metrics["resolution_rate"]
    for value, when in (("0.30", this), ("0.40", this + timedelta(days=1)), ("0.45", last)):
        MetricValue.objects.create(definition=rr, environment=prod, value=Decimal(value), recorded_at=when)
    MetricValue.objects.create(definition=rr, environment=envs["staging"], value=Decimal("0.99"), recorded_at=this)
    return metrics


def test_impact_week_report(two_weeks, feature, envs):
    report = impact_week_report(feature=feature, environment=envs["production"], monday=MONDAY)
    rows = {r.definition.key: r for r in report.rows}
    rr = rows["resolution_rate"]
    assert (rr.value, rr.previous, rr.count, rr.status, rr.change) == (Decimal("0.35"), Decimal("0.45"), 2, "bad",
                                                                       "worse")
    er = rows["error_rate"]
    assert (er.value, er.previous, er.status, er.change) == (Decimal("0.01"), Decimal("0.05"), "good", "better")
    assert rows["cost"].status == "bad" and rows["cost"].value == Decimal("0.002")  # no target: worse than last week
    assert rows["p95"].status == "good"
    assert [label for label, _ in report.by_kind()] == ["Primary", "Secondary", "Guardrail"]
    assert report.week == "2026-W49" and report.previous_week == "2026-W48" and report.next_week == "2026-W50"


# --- the page -------------------------------------------------------------------------------

PAGE = "/features/ticket-summarizer/impact"


def test_impact_page__needs_login(client, feature):
    response = client.get(PAGE)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_impact_page__shows_each_metric_vs_target_and_last_week(client, personas, two_weeks,
                                                                django_assert_max_num_queries):
    client.force_login(personas["reviewer"])
    with django_assert_max_num_queries(14):
        response = client.get(PAGE + "?week=2026-W49&env=production")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Week 2026-W49" in html and "in production" in html
    assert '<span class="badge badge-off" title="misses target">✗ 0.35</span>' in html
    assert '<span class="badge badge-on" title="meets target">✓ 1.00 %</span>' in html
    assert "5.00 %" in html and "$0.002000" in html and "0.45" in html
    assert '<span class="badge badge-off" title="worse than last week (no target)">✗ $0.002000</span>' in html
    assert "Only admins and product managers can add" in html and 'action="/features/ticket-summarizer/impact/metrics' \
        not in html
    assert "2026-W48" in html and "2026-W50" in html


def test_impact_page__default_week_and_env(client, personas, two_weeks, time_machine):
    time_machine.move_to(NOW)
    client.force_login(personas["pm"])
    html = client.get(PAGE).content.decode()
    assert "Week 2026-W49" in html and "in production" in html and "✗ 0.35" in html
    html = client.get(PAGE + "?env=staging").content.decode()
    assert "in staging" in html and "0.99" in html


def test_impact_page__bad_week_and_unknown_env(client, personas, feature, envs):
    client.force_login(personas["pm"])
    response = client.get(PAGE + "?week=someday", follow=True)
    assert response.status_code == 200 and "week must look like 2026-W49" in response.content.decode()
    assert client.get(PAGE + "?env=mars").status_code == 404
    assert client.get("/features/nope/impact").status_code == 404


def test_impact_page__add_metric__plain_form_post(client, personas, feature, envs):
    client.force_login(personas["pm"])
    response = client.post(PAGE + "/metrics", {
        "key": "csat", "name": "Customer satisfaction", "kind": "primary", "direction": "increase",
        "source": "reported", "target": "4.5", "unit": "/5", "week": "2026-W49", "env": "production"})
    assert response.status_code == 302 and response["Location"] == PAGE + "?week=2026-W49&env=production"
    html = client.get(response["Location"]).content.decode()
    assert "Added primary metric csat." in html and "Customer satisfaction" in html and "4.5 /5" in html
    assert AuditEvent.objects.filter(action="metric_definition.created", actor=personas["pm"]).exists()


def test_impact_page__add_metric__inline_errors(client, personas, feature, envs):
    client.force_login(personas["admin"])
    response = client.post(PAGE + "/metrics", {"key": "Bad Key", "name": "", "kind": "primary",
                                               "direction": "up", "source": "reported", "target": "abc",
                                               "week": "2026-W49", "env": "staging"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "Use lowercase letters, digits or" in html and "This field is required." in html
    assert "Select a valid choice" in html and "Enter a number." in html
    assert 'value="Bad Key"' in html and "in staging" in html
    define(feature, "csat", actor=personas["pm"])
    response = client.post(PAGE + "/metrics", {"key": "csat", "name": "again", "kind": "primary",
                                               "direction": "increase", "source": "reported"})
    assert response.status_code == 400
    assert "ticket-summarizer already has a metric &#x27;csat&#x27;" in response.content.decode()


def test_impact_page__add_metric__forbidden_persona(client, personas, feature, envs):
    client.force_login(personas["engineer"])
    response = client.post(PAGE + "/metrics", {"key": "csat", "name": "CSAT", "kind": "primary",
                                               "direction": "increase", "source": "reported"})
    assert response.status_code == 403 and "may not metric.manage" in response.content.decode()
    assert not MetricDefinition.objects.exists()


def test_impact_page__delete_metric(client, personas, feature, envs):
    d = define(feature, "csat", actor=personas["pm"])
    client.force_login(personas["oncall"])
    html = client.post(f"{PAGE}/metrics/{d.pk}/delete", {"week": "2026-W49", "env": "production"},
                       follow=True).content.decode()
    assert "may not metric.manage" in html and MetricDefinition.objects.exists()
    client.force_login(personas["pm"])
    html = client.post(f"{PAGE}/metrics/{d.pk}/delete", {"week": "2026-W49", "env": "production"},
                       follow=True).content.decode()
    assert "Deleted metric csat." in html and not MetricDefinition.objects.exists()
    assert client.post(f"{PAGE}/metrics/{d.pk}/delete").status_code == 404
    assert client.get(f"{PAGE}/metrics/{d.pk}/delete").status_code == 405
