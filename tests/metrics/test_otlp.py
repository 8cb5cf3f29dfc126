"""OTLP/HTTP `POST /v1/traces`: GenAI spans to call events, both encodings, bad input."""
import datetime as dt
import gzip
import json

import pytest
import time_machine
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from rest_framework.test import APIClient

from apps.core.services import sdk_key_create
from apps.metrics.models import CallEvent
from apps.metrics.tasks import metrics_rollup

pytestmark = pytest.mark.django_db
URL = "/v1/traces"
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
START_NS = int((NOW - dt.timedelta(minutes=1)).timestamp()) * 10**9
TRACE = "5b8efff798038103d269b633813fc60c"


@pytest.fixture(autouse=True)
def _frozen(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def otlp(feature, envs):
    _, secret = sdk_key_create(environment=envs["production"], name="otel", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _kv(key, value) -> dict:
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}  # the JSON mapping sends 64-bit ints as strings
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


def json_span(span_id: str, attrs: dict, *, duration_ms=812, status=None) -> dict:
    span = {"traceId": TRACE, "spanId": span_id, "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(START_NS), "endTimeUnixNano": str(START_NS + duration_ms * 10**6),
            "attributes": [_kv(k, v) for k, v in attrs.items()]}
    if status:
        span["status"] = status
    return span


def json_body(spans: list[dict], resource: dict | None = None) -> str:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [_kv(k, v) for k, v in (resource or {}).items()]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]})


GENAI = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
         "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 2006,
         "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 1920}


def test_otlp_json__genai_span__mapped(otlp):
    body = json_body([json_span("0000000000000001", GENAI | {"shipway.prompt_version": "1.1.0",
                                                             "shipway.arm": "canary"})],
                     resource={"shipway.feature": "ticket-summarizer", "service.name": "helpdesk",
                               "shipway.arm": "stable"})
    response = otlp.post(URL, data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}  # full success: no partialSuccess
    event = CallEvent.objects.get()
    assert event.event_id == TRACE + "0000000000000001"
    assert event.model == "gpt-4o-2024-08-06"  # the response model wins over the request model
    assert (event.input_tokens, event.cached_tokens, event.output_tokens) == (2006, 1920, 300)
    assert event.latency_ms == 812 and event.prompt_version == "1.1.0"
    assert event.arm == "canary"  # the span attribute wins over the resource
    assert event.occurred_at == NOW - dt.timedelta(minutes=1)
    assert event.outcome == "success" and event.cost_source == "unpriced"  # dated model name has no price


def test_otlp_json__older_attribute_names(otlp):
    attrs = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": 2006,
             "gen_ai.usage.completion_tokens": 300, "shipway.feature": "ticket-summarizer"}
    response = otlp.post(URL, data=json_body([json_span("0000000000000002", attrs)]),
                         content_type="application/json")
    assert response.status_code == 200
    event = CallEvent.objects.get()
    assert (event.model, event.input_tokens, event.output_tokens) == ("gpt-4o", 2006, 300)
    assert event.cost_source == "computed"


def test_otlp_json__error_status__outcome_error(otlp):
    attrs = GENAI | {"shipway.feature": "ticket-summarizer", "error.type": "RateLimitError"}
    timeout = GENAI | {"shipway.feature": "ticket-summarizer", "error.type": "TimeoutError"}
    otlp.post(URL, data=json_body([json_span("00000000000000e1", attrs, status={"code": 2, "message": "429"}),
                                   json_span("00000000000000e2", timeout, status={"code": "STATUS_CODE_ERROR"})]),
              content_type="application/json")
    events = {e.event_id[-2:]: e for e in CallEvent.objects.all()}
    assert (events["e1"].outcome, events["e1"].error_type) == ("error", "RateLimitError")
    assert events["e2"].outcome == "timeout"


def test_otlp_json__skipped_and_rejected_spans__partial_success(otlp):
    spans = [
        json_span("0000000000000010", {"http.method": "GET"}),  # not a GenAI span: skipped
        json_span("0000000000000011", GENAI),  # no shipway.feature: skipped
        json_span("0000000000000012", GENAI | {"shipway.feature": "nope"}),  # unknown feature: rejected
        json_span("0000000000000013", GENAI | {"shipway.feature": "ticket-summarizer"}),
    ]
    response = otlp.post(URL, data=json_body(spans), content_type="application/json")
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "no feature with key 'nope'" in partial["errorMessage"]
    assert "skipped 2 of 4 spans" in partial["errorMessage"]
    assert list(CallEvent.objects.values_list("event_id", flat=True)) == [TRACE + "0000000000000013"]


def test_otlp_json__re_export__harmless(otlp):
    body = json_body([json_span("0000000000000020", GENAI | {"shipway.feature": "ticket-summarizer"})])
    for _ in range(3):
        assert otlp.post(URL, data=body, content_type="application/json").status_code == 200
    assert CallEvent.objects.count() == 1


def _pb_request(attrs: dict, *, span_id=b"\x00" * 7 + b"\x31", status_code=0) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="shipway.feature", value=AnyValue(string_value="ticket-summarizer")))
    span = rs.scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex(TRACE)
    span.span_id = span_id
    span.name = "chat"
    span.start_time_unix_nano = START_NS
    span.end_time_unix_nano = START_NS + 250 * 10**6
    span.status.code = status_code
    for key, value in attrs.items():
        if isinstance(value, int):
            any_value = AnyValue(int_value=value)
        else:
            any_value = AnyValue(string_value=value)
        span.attributes.append(KeyValue(key=key, value=any_value))
    return request


def test_otlp_protobuf__mapped_and_answered_in_protobuf(otlp):
    body = _pb_request(GENAI).SerializeToString()
    response = otlp.post(URL, data=body, content_type="application/x-protobuf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")
    event = CallEvent.objects.get()
    assert event.event_id == TRACE + "0000000000000031" and event.latency_ms == 250


def test_otlp_protobuf__gzip(otlp):
    body = gzip.compress(_pb_request(GENAI).SerializeToString())
    response = otlp.post(URL, data=body, content_type="application/x-protobuf", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert CallEvent.objects.count() == 1


def test_otlp_protobuf__rejected__partial_success_in_protobuf(otlp):
    body = _pb_request(GENAI | {"gen_ai.usage.input_tokens": 5}, status_code=Status.STATUS_CODE_ERROR)
    response = otlp.post(URL, data=body.SerializeToString(), content_type="application/x-protobuf")
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert response.status_code == 200
    assert answer.partial_success.rejected_spans == 1
    assert "cached_tokens cannot exceed input_tokens" in answer.partial_success.error_message
    assert not CallEvent.objects.exists()


def test_otlp_protobuf__malformed__400_status(otlp):
    response = otlp.post(URL, data=b"\xff\xff\xff\xff not protobuf", content_type="application/x-protobuf")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/x-protobuf"
    assert response.content[:2] == b"\x08\x03"  # google.rpc.Status code = INVALID_ARGUMENT


@pytest.mark.parametrize("body", [
    "{not json",
    "[]",
    json.dumps({"resourceSpans": {"a": 1}}),
    json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "spanId": "00"}]}]}]}),
    json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE, "spanId": "0000000000000001", "startTimeUnixNano": "soon"}]}]}]}),
])
def test_otlp_json__malformed__400(otlp, body):
    response = otlp.post(URL, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == 3 and response.json()["message"]
    assert not CallEvent.objects.exists()


def test_otlp__wrong_content_type__415(otlp):
    response = otlp.post(URL, data="hello", content_type="text/plain")
    assert response.status_code == 415


def test_otlp__bad_gzip__400(otlp):
    response = otlp.post(URL, data=b"not gzip", content_type="application/x-protobuf", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400


def test_otlp__key_without_scope__403(feature, envs, sdk_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {sdk_key}")
    response = client.post(URL, data=json_body([]), content_type="application/json")
    assert response.status_code == 403


def test_otlp__no_key__401(feature):
    response = APIClient().post(URL, data=json_body([]), content_type="application/json")
    assert response.status_code == 401


def test_otlp__empty_request__ok(otlp):
    response = otlp.post(URL, data=json.dumps({}), content_type="application/json")
    assert response.status_code == 200 and response.json() == {}
