"""OTLP ingest against a real HTTP server, fed by the real OpenTelemetry SDK and its OTLP/HTTP
exporters (protobuf: opentelemetry-exporter-otlp-proto-http; JSON:
opentelemetry-exporter-otlp-json-http), as an instrumented product service would send them."""
import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtoSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from apps.core.services import sdk_key_create
from apps.metrics.models import CallEvent
from apps.metrics.tasks import metrics_rollup

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

EXPORTERS = {"protobuf": ProtoSpanExporter, "json": JsonSpanExporter}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)


@pytest.fixture
def events_secret(feature, envs):
    _, secret = sdk_key_create(environment=envs["production"], name="otel", scopes=["events:write"])
    return secret


def _spans(resource_attrs: dict):
    """Record a few spans the way an instrumented service makes them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "helpdesk"} | resource_attrs))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("helpdesk.llm")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 2006, "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1920, "shipway.prompt_version": "1.2.0",
        })
    with tracer.start_as_current_span("chat canary") as span:
        span.set_attributes({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                             "gen_ai.usage.prompt_tokens": 50, "gen_ai.usage.completion_tokens": 7,
                             "shipway.arm": "canary", "shipway.prompt_version": "1.3.0"})
        span.set_status(Status(StatusCode.ERROR, "upstream 500"))
        span.set_attribute("error.type", "InternalServerError")
    with tracer.start_as_current_span("GET /tickets"):  # not a GenAI span
        pass
    provider.shutdown()
    return memory.get_finished_spans()


@pytest.mark.parametrize("encoding", sorted(EXPORTERS))
def test_otlp_live__real_exporter__events_stored(live_server, events_secret, encoding):
    spans = _spans({"shipway.feature": "ticket-summarizer"})
    exporter = EXPORTERS[encoding](endpoint=f"{live_server.url}/v1/traces",
                                   headers={"Authorization": f"Bearer {events_secret}"}, timeout=10)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # a retry / re-export is harmless
    finally:
        exporter.shutdown()
    events = {e.model: e for e in CallEvent.objects.all()}
    assert set(events) == {"gpt-4o", "gpt-4o-mini"}
    main, canary = events["gpt-4o"], events["gpt-4o-mini"]
    assert (main.input_tokens, main.cached_tokens, main.output_tokens) == (2006, 1920, 300)
    assert main.prompt_version == "1.2.0" and main.unknown_version is False and main.arm == "stable"
    assert str(main.cost_usd.normalize()) == "0.005615" and main.cost_source == "computed"
    first = next(s for s in spans if s.name == "chat gpt-4o")
    assert main.event_id == f"{first.context.trace_id:032x}{first.context.span_id:016x}"
    assert main.latency_ms == round((first.end_time - first.start_time) / 1e6)
    assert (canary.arm, canary.outcome, canary.error_type) == ("canary", "error", "InternalServerError")
    assert canary.unknown_version is True  # 1.3.0 does not exist: accepted and flagged
    assert (canary.input_tokens, canary.output_tokens) == (50, 7)


@pytest.mark.parametrize("encoding", sorted(EXPORTERS))
def test_otlp_live__wrong_key__export_fails(live_server, feature, encoding):
    exporter = EXPORTERS[encoding](endpoint=f"{live_server.url}/v1/traces",
                                   headers={"Authorization": "Bearer sw_sdk_wrong"}, timeout=10)
    try:
        assert exporter.export(_spans({"shipway.feature": "ticket-summarizer"})) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert not CallEvent.objects.exists()
