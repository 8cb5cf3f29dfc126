"""Admin for inspection. Call events and rollups are read-only (telemetry is written by
ingest and the rollup task only). Model prices may be added and edited here, but every save
goes through `model_price_set`, so it is permission-checked and audited; rows are never
deleted (past events keep the price they were billed at)."""
from django.contrib import admin
from django.contrib.admin.options import csrf_protect_m

from apps.core.admin_base import ReadOnlyAdmin
from apps.core.roles import can
from apps.metrics.models import (
    Alert,
    Budget,
    BudgetReservation,
    BudgetUsage,
    CallEvent,
    CallRollup,
    CallRollupHour,
    MetricDefinition,
    MetricValue,
    ModelPrice,
)
from apps.metrics.pricing import model_price_set


@admin.register(CallEvent)
class CallEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "environment", "feature", "prompt_version", "arm", "model", "outcome",
                    "latency_ms", "input_tokens", "output_tokens", "cost_usd", "occurred_at", "rolled_up"]
    list_filter = ["environment", "outcome", "arm", "cost_source", "unknown_version", "rolled_up"]
    search_fields = ["event_id", "request_id", "model"]
    date_hierarchy = "occurred_at"
    list_select_related = ["environment", "feature"]
    show_full_result_count = False  # the table is large: no COUNT(*) per page


@admin.register(CallRollup)
class CallRollupAdmin(ReadOnlyAdmin):
    list_display = ["minute", "environment", "feature", "prompt_version", "arm", "model", "calls", "errors",
                    "cost_usd"]
    list_filter = ["environment", "arm"]
    date_hierarchy = "minute"
    list_select_related = ["environment", "feature"]
    show_full_result_count = False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "effective_from", "input_per_million", "cached_input_per_million",
                    "output_per_million", "created_at"]
    search_fields = ["model"]
    fields = ["model", "effective_from", "input_per_million", "cached_input_per_million", "output_per_million"]

    def get_readonly_fields(self, request, obj=None):
        # The (model, day) of an existing row is its identity: a new day is a new row.
        return ["model", "effective_from"] if obj is not None else []

    def has_add_permission(self, request) -> bool:
        return can(request.user, "price.manage") and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return can(request.user, "price.manage") and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # ModelAdmin wraps the form view in a transaction; model_price_set opens its own
        # durable one (one change = one transaction + its audit event), which cannot nest.
        return self._changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        saved = model_price_set(
            actor=request.user, model=obj.model, input_per_million=obj.input_per_million,
            cached_input_per_million=obj.cached_input_per_million, output_per_million=obj.output_per_million,
            effective_from=obj.effective_from,
        )
        obj.pk = saved.pk


@admin.register(MetricDefinition)
class MetricDefinitionAdmin(ReadOnlyAdmin):
    """Read-only: definitions change through apps.metrics.impact (audited)."""

    list_display = ["feature", "key", "name", "kind", "direction", "target", "source", "unit"]
    list_filter = ["kind", "source"]
    search_fields = ["key", "name", "feature__key"]
    list_select_related = ["feature"]


@admin.register(MetricValue)
class MetricValueAdmin(ReadOnlyAdmin):
    list_display = ["definition", "environment", "value", "recorded_at", "created_at"]
    list_filter = ["environment"]
    date_hierarchy = "recorded_at"
    list_select_related = ["definition", "environment"]
    show_full_result_count = False


# Budgets change through apps.metrics.budgets.budget_set (permission-checked, audited);
# usage counters and reservations are written by check/settle only; alerts by alerts.py.
@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    list_display = ["feature", "max_tokens_per_request", "user_daily_cap", "user_daily_unit",
                    "feature_monthly_cap", "feature_monthly_unit", "time_zone", "exhausted_until", "updated_at"]
    exclude = ["webhook_url"]  # a Slack webhook URL embeds its token
    list_select_related = ["feature"]


@admin.register(BudgetUsage)
class BudgetUsageAdmin(ReadOnlyAdmin):
    list_display = ["feature", "scope", "subject", "period_start", "unit", "spent", "reserved"]
    list_filter = ["scope", "unit"]
    search_fields = ["feature__key", "subject"]
    list_select_related = ["feature"]
    show_full_result_count = False


@admin.register(BudgetReservation)
class BudgetReservationAdmin(ReadOnlyAdmin):
    list_display = ["id", "feature", "user_key", "amount", "tokens", "unit", "created_at", "expires_at",
                    "settled_at"]
    list_select_related = ["feature"]
    show_full_result_count = False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["title", "kind", "feature", "environment", "opened_at", "resolved_at", "notified_at",
                    "notify_attempts"]
    list_filter = ["kind", "environment"]
    search_fields = ["title", "dedupe_key", "feature__key"]
    list_select_related = ["feature", "environment"]


@admin.register(CallRollupHour)
class CallRollupHourAdmin(ReadOnlyAdmin):
    list_display = ["hour", "environment", "feature", "prompt_version", "arm", "model", "calls", "errors",
                    "cost_usd"]
    list_filter = ["environment", "arm"]
    date_hierarchy = "hour"
    list_select_related = ["environment", "feature"]
    show_full_result_count = False
