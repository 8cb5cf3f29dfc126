"""`POST /api/v1/features/{key}/metrics`: a service reports impact-metric values with an SDK
key that has the `events:write` scope; the environment comes from the key."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api_errors import error_body
from apps.core.authentication import HasSdkScope, SdkKeyAuthentication
from apps.core.errors import ValidationFailed
from apps.core.parsers import BatchJSONParser
from apps.metrics.impact import MAX_VALUES, metric_values_report
from apps.prompts.selectors import feature_get

REPORT_DOC = f"""Report values of the feature's **reported** impact metrics (`{{"values": [...]}}`,
at most {MAX_VALUES}). Each item: `metric` (the definition's key), `value` (a JSON number or a
decimal string; at most 6 decimal places), `recorded_at` (ISO-8601 with an offset; default now;
at most 5 minutes ahead).

Items are checked one by one: the valid ones are committed and listed in `accepted`; the others
are listed in `rejected` by index with reasons (`unknown_metric`; `derived_metric` for a metric
computed from telemetry, which takes no values; `invalid_value`; `invalid_recorded_at`). When
every item is rejected the answer is 400 `all_values_rejected` with the listing in `details`.
A body that is not `{{"values": [...]}}`, an empty list or more than {MAX_VALUES} items: 400."""


class RejectedValue(serializers.Serializer):
    index = serializers.IntegerField()
    metric = serializers.CharField(allow_null=True)
    reasons = serializers.ListField(child=serializers.DictField())


class FeatureMetricsReportApi(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    parser_classes = [BatchJSONParser]
    required_scope = "events:write"

    @extend_schema(
        operation_id="feature_metrics_report",
        description=REPORT_DOC,
        request=inline_serializer("MetricValuesReport", {
            "values": serializers.ListField(child=serializers.DictField(), max_length=MAX_VALUES)}),
        responses={200: inline_serializer("MetricValuesReportResult", {
            "counts": serializers.DictField(child=serializers.IntegerField()),
            "accepted": serializers.ListField(child=serializers.DictField()),
            "rejected": RejectedValue(many=True),
        }), 400: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT},
        examples=[OpenApiExample("a resolution rate", request_only=True, value={"values": [
            {"metric": "resolution_rate", "value": "0.42", "recorded_at": "2026-12-03T12:00:00Z"}]})],
    )
    def post(self, request, key: str):
        feature = feature_get(key=key)
        body = request.data
        if not isinstance(body, dict) or "values" not in body:
            raise ValidationFailed('the body must be a JSON object {"values": [...]}', code="invalid_body")
        result = metric_values_report(environment=request.auth.environment, feature=feature, values=body["values"])
        payload = result.as_dict()
        if not result.accepted:
            return Response(error_body("all_values_rejected", "Every value was rejected; see details.", payload),
                            status=400)
        return Response(payload)
