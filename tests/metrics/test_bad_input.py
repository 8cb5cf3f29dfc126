"""Bad input to the telemetry endpoints (events, OTLP/JSON, impact metric values) gets a clear
4xx, never a 500, and writes nothing that is not valid."""
import datetime as dt
import json

import pytest
import time_machine
from rest_framework.test import APIClient

from apps.core.services import sdk_key_create
from apps.metrics.impact import metric_definition_create, metric_values_report
from apps.metrics.models import CallEvent, MetricValue
from apps.metrics.tasks import metrics_rollup

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
TRACE = "5b8efff798038103d269b633813fc60c"


@pytest.fixture(autouse=True)
def _frozen(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def writer(feature, envs):
    _, secret = sdk_key_create(environment=envs["production"], name="svc", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _event_json(**fields) -> str:
    event = {"event_id": "e-1", "feature": "ticket-summarizer", "model": "gpt-4o-mini", "latency_ms": 5,
             "occurred_at": NOW.isoformat()}
    return json.dumps({"events": [event]})[:-3] + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}]}"


@pytest.mark.parametrize("raw", [
    _event_json(model='"gpt\\ud800"'),
    _event_json(user_key='"\\udfff"'),
    _event_json(request_id='"a\\u0000b"'),  # PostgreSQL text cannot hold a NUL
    _event_json(extra="[" * 100_000 + "]" * 100_000),
    _event_json(latency_ms="1e400"),
])
def test_events__body_that_cannot_be_stored__400_invalid_json_nothing_written(writer, raw):
    response = writer.post("/api/v1/events", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_json"
    assert not CallEvent.objects.exists()


def test_events__nested_unknown_fields_still_accepted(writer):
    response = writer.post("/api/v1/events", _event_json(extra="[" * 200 + "]" * 200),
                           content_type="application/json")
    assert response.status_code == 200, response.content
    assert CallEvent.objects.count() == 1


def _span(start, end, model="gpt-4o") -> dict:
    return {"traceId": TRACE, "spanId": "0000000000000001", "startTimeUnixNano": start, "endTimeUnixNano": end,
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": model}},
                           {"key": "shipway.feature", "value": {"stringValue": "ticket-summarizer"}}]}


def _otlp(spans) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})


@pytest.mark.parametrize("start, end", [(str(10**30), str(10**30 + 5)), (str(-10**30), "0"), ("-1", "5"),
                                        ("0", str(2**64))])
def test_otlp_json__timestamp_outside_fixed64__400(writer, start, end):
    response = writer.post("/v1/traces", _otlp([_span(start, end)]), content_type="application/json")
    assert response.status_code == 400, response.content
    assert "unsigned 64-bit" in response.json()["message"]
    assert not CallEvent.objects.exists()


@pytest.mark.parametrize("raw", [
    _otlp([_span("1", "2", model="gpt\\ud800")]).replace("\\\\ud800", "\\ud800"),
    "[" * 100_000 + "]" * 100_000,
    _otlp([_span("1", "2")]).replace('{"stringValue": "gpt-4o"}',
                                     '{"kvlistValue": {"values": [{"key": "a", "value": ' * 400 + "{}" + "}]}}" * 400),
])
def test_otlp_json__malformed_beyond_the_decoder__400(writer, raw):
    response = writer.post("/v1/traces", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == 3  # google.rpc.Status INVALID_ARGUMENT
    assert not CallEvent.objects.exists()


@pytest.mark.parametrize("value", ["1e999999999", "-1e999999999", "1E+1000000"])
def test_metric_values__exponent_beyond_decimal_context__rejected_not_500(writer, feature, envs, personas, value):
    metric_definition_create(feature=feature, key="resolution_rate", name="Resolution rate", kind="primary",
                             direction="increase", target="0.4", source="reported", actor=personas["pm"])
    response = writer.post(f"/api/v1/features/{feature.key}/metrics",
                           {"values": [{"metric": "resolution_rate", "value": value}]}, format="json")
    assert response.status_code == 400, response.content
    rejected = response.json()["error"]["details"]["rejected"]
    assert rejected[0]["reasons"][0]["code"] == "invalid_value"
    assert not MetricValue.objects.exists()
    result = metric_values_report(environment=envs["production"], feature=feature,
                                  values=[{"metric": "resolution_rate", "value": "0.5"}])
    assert len(result.accepted) == 1


def test_metric_definition__target_beyond_decimal_context__validation_failed(feature, personas):
    from apps.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        metric_definition_create(feature=feature, key="resolution_rate", name="Resolution rate", kind="primary",
                                 direction="increase", target="1e999999999", source="reported", actor=personas["pm"])


@pytest.mark.parametrize("week", ["9999-W52", "0001-W01", "1969-W01"])
def test_impact_page__week_at_the_edge_of_the_calendar__invalid_week_not_500(client, feature, personas, week):
    client.force_login(personas["pm"])
    response = client.get(f"/features/{feature.key}/impact", {"week": week})
    assert response.status_code == 302 and response["Location"] == f"/features/{feature.key}/impact"  # + message


def test_week_parse__ordinary_weeks_still_parse():
    from apps.metrics.impact import week_parse

    assert week_parse("2026-W49") == dt.date(2026, 11, 30)
    assert week_parse("9998-W52").year == 9998


@pytest.mark.parametrize("field", ["model", "feature", "user_key", "prompt_version", "error_type"])
def test_ingest__nul_in_a_string__event_rejected_not_500(feature, envs, field):
    # OTLP protobuf strings may hold a NUL (valid UTF-8) and reach ingest without the JSON parser.
    from apps.metrics.ingest import call_events_ingest

    good = {"event_id": "ok-1", "feature": "ticket-summarizer", "model": "m", "latency_ms": 1,
            "occurred_at": NOW.isoformat()}
    bad = good | {"event_id": "bad-1", field: "x\x00y"}
    result = call_events_ingest(environment_id=envs["production"].id, events=[good, bad])
    assert result.accepted == ["ok-1"]
    assert result.rejected[0]["reasons"][0] == {"field": field, "code": "invalid_characters",
                                                "message": f"{field} holds a NUL character"}
    assert list(CallEvent.objects.values_list("event_id", flat=True)) == ["ok-1"]
