"""OTLP/HTTP trace ingest: `POST /v1/traces` turns OpenTelemetry GenAI spans into call events.

Both encodings of the OTLP/HTTP spec are accepted: `application/x-protobuf`
(ExportTraceServiceRequest, parsed with the `opentelemetry-proto` package) and
`application/json` (the protobuf JSON mapping with lowerCamelCase names, hex trace/span ids and
64-bit integers as strings or numbers). `Content-Encoding: gzip` is accepted. The answer is an
ExportTraceServiceResponse in the request's encoding, with `partial_success` when spans were
rejected; errors answer a google.rpc.Status (400 malformed, 413 too large, 415 wrong type).

Mapping of one span (attributes of the span win over those of its resource):
    gen_ai.response.model | gen_ai.request.model        -> model
    gen_ai.usage.input_tokens | gen_ai.usage.prompt_tokens       -> input_tokens
    gen_ai.usage.output_tokens | gen_ai.usage.completion_tokens  -> output_tokens
    gen_ai.usage.cache_read.input_tokens                -> cached_tokens (a part of input)
    shipway.feature / shipway.prompt_version / shipway.arm -> feature / prompt_version / arm
    shipway.cost_usd, shipway.cache_hit, shipway.user_key, shipway.outcome (optional)
    shipway.request_id | gen_ai.response.id             -> request_id
    end - start                                         -> latency_ms; start -> occurred_at
    status ERROR -> outcome "error" ("timeout" when error.type says so); error.type -> error_type
    trace_id + span_id (hex)                            -> event_id, so a re-export is harmless
`gen_ai.operation.name`, `gen_ai.provider.name` and the older `gen_ai.system` mark a span as a
GenAI span. Spans with no `gen_ai.*` attribute, or without `shipway.feature`, are skipped and
counted (reported in `partial_success.error_message` as a warning, not as rejected)."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from rest_framework.views import APIView

from apps.core.authentication import HasSdkScope, SdkKeyAuthentication
from apps.core.parsers import json_loads_checked
from apps.metrics.ingest import MAX_BATCH, IngestResult, call_events_ingest

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY_BYTES = 8 * 1024 * 1024
STATUS_CODE_ERROR = 2
GRPC_INVALID_ARGUMENT = 3
GRPC_RESOURCE_EXHAUSTED = 8
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GEN_AI_MARKERS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
                  "gen_ai.response.model")


class Malformed(Exception):
    pass


@dataclass
class Span:
    trace_id: str
    span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    status_message: str


# --------------------------------------------------------------------------- protobuf


def _pb_value(value) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _pb_attrs(attributes) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in attributes}


def spans_from_protobuf(body: bytes) -> Iterator[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise Malformed(f"not an ExportTraceServiceRequest: {exc}") from None
    for resource_spans in request.resource_spans:
        resource = _pb_attrs(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                           start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                           attributes=_pb_attrs(span.attributes), resource=resource,
                           status_code=span.status.code, status_message=span.status.message)


# --------------------------------------------------------------------------- JSON


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise Malformed(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise Malformed(f"{what} must be an integer (or a decimal string)")


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        raise Malformed("an attribute value must be an AnyValue object")
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return _int(value["intValue"], "intValue")
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            raise Malformed("doubleValue must be a number") from None
    if "arrayValue" in value:
        return [_json_value(v) for v in _list(value["arrayValue"], "values")]
    if "kvlistValue" in value:
        return _json_attrs(_list(value["kvlistValue"], "values"))
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"])
        except (binascii.Error, TypeError, ValueError):
            raise Malformed("bytesValue must be base64") from None
    return None


def _list(obj: Any, key: str) -> list:
    if not isinstance(obj, dict):
        raise Malformed(f"expected an object holding '{key}'")
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"'{key}' must be a list")
    return value


def _json_attrs(attributes: list) -> dict[str, Any]:
    out = {}
    for kv in attributes:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise Malformed("an attribute must be {\"key\": ..., \"value\": {...}}")
        out[kv["key"]] = _json_value(kv.get("value") or {})
    return out


def _hex_id(value: Any, size: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise Malformed(f"{what} must be {2 * size} hex characters")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise Malformed(f"{what} must be hex") from None
    return value.lower()


def _status_code(status: Any) -> int:
    if not isinstance(status, dict):
        return 0
    code = status.get("code", 0)
    if isinstance(code, str) and not code.isdigit():
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return _int(code, "status.code")


def _nanos(value: Any, what: str) -> int:
    """A fixed64 timestamp, as in the protobuf encoding (a larger one is no date at all)."""
    nanos = _int(value, what)
    if not 0 <= nanos < 2**64:
        raise Malformed(f"{what} must be an unsigned 64-bit integer")
    return nanos


def spans_from_json(body: bytes) -> Iterator[Span]:
    try:
        request = json_loads_checked(body)
    except ValueError as exc:  # also deep nesting, 1e400, lone surrogates and NULs
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise Malformed("the body must be an ExportTraceServiceRequest object")
    for resource_spans in _list(request, "resourceSpans"):
        resource = _json_attrs(_list(resource_spans.get("resource") or {}, "attributes")
                               if isinstance(resource_spans, dict) else [])
        for scope_spans in _list(resource_spans, "scopeSpans"):
            for span in _list(scope_spans, "spans"):
                if not isinstance(span, dict):
                    raise Malformed("a span must be an object")
                status = span.get("status") or {}
                yield Span(trace_id=_hex_id(span.get("traceId"), 16, "traceId"),
                           span_id=_hex_id(span.get("spanId"), 8, "spanId"),
                           start_ns=_nanos(span.get("startTimeUnixNano", 0), "startTimeUnixNano"),
                           end_ns=_nanos(span.get("endTimeUnixNano", 0), "endTimeUnixNano"),
                           attributes=_json_attrs(_list(span, "attributes")), resource=resource,
                           status_code=_status_code(status),
                           status_message=str(status.get("message", "")) if isinstance(status, dict) else "")


# --------------------------------------------------------------------------- mapping


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def span_event(span: Span) -> dict[str, Any] | None:
    """The call event of a GenAI span (for apps.metrics.ingest), or None to skip the span."""
    attrs = span.resource | span.attributes  # the span's own attributes win
    if not any(name.startswith("gen_ai.") for name in attrs):
        return None
    feature = attrs.get("shipway.feature")
    if not feature:
        return None
    outcome = attrs.get("shipway.outcome")
    error_type = _first(attrs, "error.type") or ""
    if not outcome:
        if span.status_code == STATUS_CODE_ERROR:
            text = f"{error_type} {span.status_message}".lower()
            outcome = "timeout" if "timeout" in text or "timed out" in text else "error"
            error_type = error_type or span.status_message[:100] or "error"
        else:
            outcome = "success"
    event: dict[str, Any] = {
        "event_id": span.trace_id + span.span_id,
        "feature": feature,
        "prompt_version": attrs.get("shipway.prompt_version") or "",
        "arm": attrs.get("shipway.arm") or "stable",
        "model": _first(attrs, "gen_ai.response.model", "gen_ai.request.model"),
        "latency_ms": (span.end_ns - span.start_ns) / 1_000_000,
        "input_tokens": _first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "cached_tokens": _first(attrs, "gen_ai.usage.cache_read.input_tokens"),
        "output_tokens": _first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        "cache_hit": attrs.get("shipway.cache_hit") or False,
        "outcome": outcome,
        "error_type": str(error_type)[:100],
        "user_key": attrs.get("shipway.user_key") or "",
        "request_id": _first(attrs, "shipway.request_id", "gen_ai.response.id") or "",
        "occurred_at": EPOCH + dt.timedelta(microseconds=span.start_ns // 1000),
    }
    if attrs.get("shipway.cost_usd") is not None:
        event["cost_usd"] = attrs["shipway.cost_usd"]
    return event


@dataclass
class TraceIngestResult:
    spans: int = 0
    skipped: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    messages: list[str] | None = None


def traces_ingest(*, environment_id: int, spans: Iterator[Span]) -> TraceIngestResult:
    """Map spans to call events and ingest them (in chunks of the event batch limit)."""
    out = TraceIngestResult(messages=[])
    events: list[dict] = []
    for span in spans:
        out.spans += 1
        event = span_event(span)
        if event is None:
            out.skipped += 1
        else:
            events.append(event)
    for start in range(0, len(events), MAX_BATCH):
        result: IngestResult = call_events_ingest(environment_id=environment_id,
                                                  events=events[start:start + MAX_BATCH])
        out.accepted += len(result.accepted)
        out.duplicates += len(result.duplicates)
        out.rejected += len(result.rejected)
        for rejected in result.rejected:
            if len(out.messages) < 5:
                reasons = "; ".join(r["message"] for r in rejected["reasons"])
                out.messages.append(f"span {rejected['event_id']}: {reasons}")
    return out


# --------------------------------------------------------------------------- HTTP


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _status_response(http_status: int, grpc_code: int, message: str, encoding: str) -> HttpResponse:
    """A google.rpc.Status body (code = 1, message = 2), as the OTLP/HTTP spec asks of errors."""
    if encoding == PROTOBUF:
        text = message.encode("utf-8")
        body = b"\x08" + _varint(grpc_code) + b"\x12" + _varint(len(text)) + text
        return HttpResponse(body, status=http_status, content_type=PROTOBUF)
    return HttpResponse(json.dumps({"code": grpc_code, "message": message}), status=http_status, content_type=JSON)


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise Malformed(f"unsupported Content-Encoding '{encoding}' (use gzip or none)")
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = decompressor.decompress(body, MAX_BODY_BYTES + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise Malformed(f"bad gzip body: {exc}") from None
    if len(data) > MAX_BODY_BYTES:
        raise OverflowError
    return data


class TraceExportApi(APIView):
    """OTLP/HTTP `POST /v1/traces` with `Authorization: Bearer <SDK key>` (scope events:write)."""

    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    required_scope = "events:write"

    @extend_schema(
        operation_id="otlp_traces_export",
        request={PROTOBUF: OpenApiTypes.BINARY, JSON: OpenApiTypes.OBJECT},
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 415: OpenApiTypes.OBJECT},
        description=__doc__,
    )
    def post(self, request):
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return _status_response(415, GRPC_INVALID_ARGUMENT,
                                    f"Content-Type must be {PROTOBUF} or {JSON}, not '{content_type or 'none'}'",
                                    JSON)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _status_response(413, GRPC_RESOURCE_EXHAUSTED, f"body larger than {MAX_BODY_BYTES} bytes",
                                    content_type)
        try:
            body = _decompress(request._request.read(MAX_BODY_BYTES + 1),
                               request.META.get("HTTP_CONTENT_ENCODING", ""))
            if len(body) > MAX_BODY_BYTES:
                raise OverflowError
            parse = spans_from_protobuf if content_type == PROTOBUF else spans_from_json
            spans = list(parse(body))
        except OverflowError:
            return _status_response(413, GRPC_RESOURCE_EXHAUSTED, f"body larger than {MAX_BODY_BYTES} bytes",
                                    content_type)
        except Malformed as exc:
            return _status_response(400, GRPC_INVALID_ARGUMENT, str(exc), content_type)
        result = traces_ingest(environment_id=request.auth.environment_id, spans=iter(spans))

        response = ExportTraceServiceResponse()
        notes = list(result.messages or [])
        if result.skipped:
            notes.append(f"skipped {result.skipped} of {result.spans} spans without gen_ai.* attributes "
                         "or shipway.feature")
        if result.rejected or notes:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = "; ".join(notes)
        if content_type == PROTOBUF:
            return HttpResponse(response.SerializeToString(), content_type=PROTOBUF)
        payload: dict[str, Any] = {}
        if response.HasField("partial_success"):
            payload["partialSuccess"] = {"rejectedSpans": str(result.rejected),
                                         "errorMessage": response.partial_success.error_message}
        return HttpResponse(json.dumps(payload), content_type=JSON)
