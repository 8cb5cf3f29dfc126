"""`POST /api/v1/events`: a service reports a batch of LLM calls with an SDK key that has the
`events:write` scope. The environment comes from the key. See apps.metrics.ingest for the rules."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api_errors import error_body
from apps.core.authentication import HasSdkScope, SdkKeyAuthentication
from apps.core.errors import ValidationFailed
from apps.core.parsers import BatchJSONParser
from apps.metrics.ingest import MAX_BATCH, BatchTooLarge, call_events_ingest

MAX_BODY_BYTES = 4 * 1024 * 1024  # 1000 events of ~4 KB each

EVENT_DOC = f"""Report up to {MAX_BATCH} LLM calls in one batch (`{{"events": [...]}}`).

Each event: `event_id` (made by the client; re-sending an event is harmless), `feature` (key),
`prompt_version`, `arm` (`stable`|`canary`, default stable), `model`, `latency_ms`,
`input_tokens`, `cached_tokens` (a part of `input_tokens`), `output_tokens`, `cost_usd`
(optional: computed from the price table when absent), `cache_hit`, `outcome`
(`success`|`error`|`timeout`|`blocked`|`budget_blocked`|`fallback`), `error_type`, `user_key`
(hashed by the client), `request_id`, `occurred_at` (ISO-8601 with an offset).

Valid events are committed even when others are rejected. The answer (200) lists the
`accepted` (new) and `duplicate` event_ids, the `rejected` events (by index, with reasons) and
the `flagged` ones. **An unknown `prompt_version` is accepted and flagged `unknown_version`**
(telemetry is never dropped because Shipway has not seen a version). Rejected: negative
tokens or latency, unknown feature, cached > input tokens, `occurred_at` more than 5 minutes
ahead or older than the retention window, wrong types. When every event of the batch is
rejected the answer is 400 (`all_events_rejected`, the listing in `details`). More than
{MAX_BATCH} events: 413 `batch_too_large`; not JSON: 415 / 400."""


class RejectedEvent(serializers.Serializer):
    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    reasons = serializers.ListField(child=serializers.DictField())


class EventBatchApi(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    parser_classes = [BatchJSONParser]
    required_scope = "events:write"

    @extend_schema(
        operation_id="events_create",
        description=EVENT_DOC,
        request=inline_serializer("EventBatch", {"events": serializers.ListField(child=serializers.DictField(),
                                                                                  max_length=MAX_BATCH)}),
        responses={200: inline_serializer("EventBatchResult", {
            "counts": serializers.DictField(child=serializers.IntegerField()),
            "accepted": serializers.ListField(child=serializers.CharField()),
            "duplicate": serializers.ListField(child=serializers.CharField()),
            "rejected": RejectedEvent(many=True),
            "flagged": serializers.ListField(child=serializers.DictField()),
        }), 400: OpenApiTypes.OBJECT, 413: OpenApiTypes.OBJECT, 415: OpenApiTypes.OBJECT},
        examples=[OpenApiExample("one call", request_only=True, value={"events": [{
            "event_id": "0b7c6f0e-6c1e-4c53-9c89-5f3f5f0b1a01", "feature": "ticket-summarizer",
            "prompt_version": "1.2.0", "arm": "stable", "model": "gpt-4o-mini", "latency_ms": 812,
            "input_tokens": 2006, "cached_tokens": 1920, "output_tokens": 300, "cache_hit": False,
            "outcome": "success", "occurred_at": "2026-01-31T12:00:00Z"}]})],
    )
    def post(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise BatchTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes; send at most {MAX_BATCH} "
                                "events per batch")
        body = request.data
        if not isinstance(body, dict) or "events" not in body:
            raise ValidationFailed('the body must be a JSON object {"events": [...]}', code="invalid_batch")
        result = call_events_ingest(environment_id=request.auth.environment_id, events=body["events"])
        payload = result.as_dict()
        if result.rejected and not result.accepted and not result.duplicates:
            return Response(error_body("all_events_rejected", "Every event of the batch was rejected; see details.",
                                       payload), status=400)
        return Response(payload)
