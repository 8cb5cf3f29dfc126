"""Budget API: services check-and-reserve before an LLM call (SDK key, `events:write`);
people read and set a feature's budget (personal API token or session)."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.authentication import HasSdkScope, SdkKeyAuthentication
from apps.core.errors import ValidationFailed
from apps.metrics import budgets
from apps.metrics.models import Budget
from apps.prompts.selectors import feature_get


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed("The request is invalid; see details.", details=serializer.errors)
    return serializer.validated_data


class ScopeStatusOutput(serializers.Serializer):
    cap = serializers.DecimalField(max_digits=20, decimal_places=6)
    unit = serializers.CharField()
    subject = serializers.CharField()
    spent = serializers.DecimalField(max_digits=24, decimal_places=10)
    reserved = serializers.DecimalField(max_digits=24, decimal_places=10)
    remaining = serializers.DecimalField(max_digits=24, decimal_places=10)
    percent = serializers.DecimalField(max_digits=12, decimal_places=1)
    period_start = serializers.DateTimeField(default_timezone=None)
    resets_at = serializers.DateTimeField(default_timezone=None)


class BudgetStatusOutput(serializers.Serializer):
    feature = serializers.CharField()
    configured = serializers.BooleanField()
    time_zone = serializers.CharField()
    max_tokens_per_request = serializers.IntegerField(allow_null=True)
    exhausted = serializers.BooleanField()
    scopes = serializers.DictField(child=ScopeStatusOutput())


def _aware_local(value):
    """resets_at keeps the feature's zone offset (e.g. +09:00), not the server's."""
    return value.isoformat() if value is not None else None


def _status_payload(feature, user_key: str | None) -> dict:
    status = budgets.budget_status(feature=feature, user_key=user_key)
    scopes = {
        name: {"cap": str(s["cap"]), "unit": s["unit"], "subject": s["subject"], "spent": str(s["spent"]),
               "reserved": str(s["reserved"]), "remaining": str(s["remaining"]), "percent": str(s["percent"]),
               "period_start": _aware_local(s["period_start"]), "resets_at": _aware_local(s["resets_at"])}
        for name, s in status["scopes"].items()
    }
    return {"feature": feature.key, "configured": status["configured"], "time_zone": status["time_zone"],
            "max_tokens_per_request": status["max_tokens_per_request"], "exhausted": status["exhausted"],
            "scopes": scopes}


class BudgetCheckApi(APIView):
    """Allow or deny one call and reserve its estimate. Send the answer's `reservation_id`
    as the call event's `request_id` so the event settles exactly this reservation."""

    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    required_scope = "events:write"

    class BudgetCheckInputSerializer(serializers.Serializer):
        feature = serializers.CharField(max_length=63)
        user_key = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
        estimated_cost_usd = serializers.DecimalField(max_digits=16, decimal_places=10, min_value=0,
                                                      required=False, allow_null=True, default=None)
        estimated_tokens = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False,
                                                    allow_null=True, default=None)
        max_tokens = serializers.IntegerField(min_value=1, max_value=2_000_000_000, required=False,
                                              allow_null=True, default=None)

    class BudgetCheckOutputSerializer(serializers.Serializer):
        allowed = serializers.BooleanField()
        reason = serializers.CharField()
        reservation_id = serializers.IntegerField(allow_null=True)
        remaining = serializers.DictField()
        resets_at = serializers.CharField(allow_null=True)

    # Distinct names: drf-spectacular names schema components after the class.
    InputSerializer, OutputSerializer = BudgetCheckInputSerializer, BudgetCheckOutputSerializer

    @extend_schema(request=InputSerializer, responses=OutputSerializer, operation_id="budgets_check",
                   description="Reserve before the call. `allowed` false is a normal answer (200) with a "
                   "`reason`: max_tokens_per_request, user_daily_cap or feature_monthly_cap.")
    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        feature = feature_get(key=data.pop("feature"))
        decision = budgets.budget_check(feature=feature, **data)
        remaining = {
            scope: {"cap": str(r["cap"]), "unit": r["unit"], "remaining": str(r["remaining"]),
                    "resets_at": _aware_local(r.get("resets_at"))}
            for scope, r in decision.remaining.items()
        }
        return Response({"allowed": decision.allowed, "reason": decision.reason,
                         "reservation_id": decision.reservation_id, "remaining": remaining,
                         "resets_at": _aware_local(decision.resets_at)})


class BudgetDetailApi(APIView):
    """A feature's budget and where it stands; PUT replaces it (permission budget.manage)."""

    class BudgetSetInputSerializer(serializers.Serializer):
        max_tokens_per_request = serializers.IntegerField(min_value=1, required=False, allow_null=True,
                                                          default=None)
        user_daily_cap = serializers.DecimalField(max_digits=16, decimal_places=6, required=False,
                                                  allow_null=True, default=None)
        user_daily_unit = serializers.ChoiceField(choices=Budget.Unit.choices, required=False, default="usd")
        feature_monthly_cap = serializers.DecimalField(max_digits=16, decimal_places=6, required=False,
                                                       allow_null=True, default=None)
        feature_monthly_unit = serializers.ChoiceField(choices=Budget.Unit.choices, required=False, default="usd")
        time_zone = serializers.CharField(max_length=64, required=False, default="UTC")
        webhook_url = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    InputSerializer = BudgetSetInputSerializer

    @extend_schema(responses=BudgetStatusOutput, operation_id="budget_retrieve")
    def get(self, request, key: str):
        feature = feature_get(key=key)
        return Response(_status_payload(feature, request.query_params.get("user_key") or None))

    @extend_schema(request=InputSerializer, responses=BudgetStatusOutput, operation_id="budget_set")
    def put(self, request, key: str):
        feature = feature_get(key=key)
        data = _valid(self.InputSerializer, request.data)
        budgets.budget_set(actor=request.user, feature=feature, **data)
        return Response(_status_payload(feature, None))
