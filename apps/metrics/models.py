"""Telemetry: call events, per-minute rollups with mergeable latency histograms, the model
price table, budgets with their usage counters and reservations, alerts, and impact
metrics (definitions and reported values)."""
from django.db import models

from apps.core.models import Environment
from apps.prompts.models import Feature


class ModelPrice(models.Model):
    """USD per million tokens for one model, from the day it took effect."""

    model = models.CharField(max_length=100)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    effective_from = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="price_unique_per_day")]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    ERROR = "error", "Error"
    TIMEOUT = "timeout", "Timeout"
    BLOCKED = "blocked", "Blocked by a guardrail"
    BUDGET_BLOCKED = "budget_blocked", "Blocked by a budget"
    FALLBACK = "fallback", "Served by a fallback model"


FAILED_OUTCOMES = (Outcome.ERROR, Outcome.TIMEOUT)


class CallEvent(models.Model):
    """One LLM call as reported by a service. `event_id` is made by the client so that
    re-sending a batch is harmless."""

    event_id = models.CharField(max_length=100, unique=True)
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    prompt_version = models.CharField(max_length=64, blank=True)
    unknown_version = models.BooleanField(default=False, help_text="Version not found for the feature")
    arm = models.CharField(max_length=8, default="stable")
    model = models.CharField(max_length=100)
    latency_ms = models.PositiveIntegerField()
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=10, null=True, blank=True)
    cost_source = models.CharField(max_length=10, default="computed")  # reported | computed | unpriced
    cache_hit = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    error_type = models.CharField(max_length=100, blank=True)
    user_key = models.CharField(max_length=128, blank=True, help_text="Hashed by the client")
    request_id = models.CharField(max_length=100, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    rolled_up = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["occurred_at"], name="callevent_occurred"),
            models.Index(fields=["id"], condition=models.Q(rolled_up=False), name="callevent_pending_rollup"),
        ]

    def __str__(self) -> str:
        return self.event_id


class RollupMeasures(models.Model):
    """What a rollup row adds up for one (period, environment, feature, prompt version, arm,
    model): counters, cost, latency sum and `latency_histogram`, the calls per bucket of
    `apps.metrics.histogram.BOUNDS_MS`, so percentiles can be computed for any window by
    adding histograms."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    prompt_version = models.CharField(max_length=64, blank=True)
    arm = models.CharField(max_length=8)
    model = models.CharField(max_length=100)
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    blocked = models.PositiveIntegerField(default=0)
    budget_blocked = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=10, default=0)
    latency_sum_ms = models.PositiveBigIntegerField(default=0)
    latency_histogram = models.JSONField(default=list)

    class Meta:
        abstract = True


class CallRollup(RollupMeasures):
    """Calls in one minute for one (environment, feature, prompt version, arm, model)."""

    minute = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "environment", "feature", "prompt_version", "arm", "model"],
                                    name="rollup_unique_key")
        ]
        indexes = [models.Index(fields=["feature", "environment", "minute"], name="rollup_feature_time")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.feature_id} {self.prompt_version} {self.arm}"


class CallRollupHour(RollupMeasures):
    """The same measures per UTC hour: exactly the sum of that hour's CallRollup rows (kept in
    the same transaction by apps.metrics.rollups), so long dashboard ranges read 60x fewer rows."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "environment", "feature", "prompt_version", "arm", "model"],
                                    name="rollup_hour_unique_key")
        ]
        indexes = [models.Index(fields=["feature", "environment", "hour"], name="rollup_hour_feature_time")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.feature_id} {self.prompt_version} {self.arm}"


class Budget(models.Model):
    """A feature's spending limits. Periods are calendar days / months in `time_zone`."""

    class Unit(models.TextChoices):
        USD = "usd", "USD"
        TOKENS = "tokens", "tokens"

    feature = models.OneToOneField(Feature, on_delete=models.CASCADE, related_name="budget")
    max_tokens_per_request = models.PositiveIntegerField(null=True, blank=True)
    user_daily_cap = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    user_daily_unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.USD)
    feature_monthly_cap = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    feature_monthly_unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.USD)
    time_zone = models.CharField(max_length=64, default="UTC")
    webhook_url = models.URLField(blank=True, help_text="Alerts are POSTed here (Slack-compatible)")
    # Set while the feature-month cap is reached: the end of that month. Served in the config
    # snapshot as `budget.exhausted`; a periodic task clears it when the month is over.
    exhausted_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"budget of {self.feature_id}"


class BudgetUsage(models.Model):
    """Spent and reserved amounts for one budget scope in one period. Row-locked by
    reservations so concurrent callers cannot overspend."""

    class Scope(models.TextChoices):
        USER_DAY = "user_day", "per user per day"
        FEATURE_MONTH = "feature_month", "per feature per month"

    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=16, choices=Scope.choices)
    subject = models.CharField(max_length=128, blank=True, help_text="user key for user scopes")
    period_start = models.DateTimeField()
    # Part of the key: switching a cap between USD and tokens starts fresh counters instead
    # of adding tokens to dollars.
    unit = models.CharField(max_length=8, default="usd")
    spent = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    reserved = models.DecimalField(max_digits=20, decimal_places=10, default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["feature", "scope", "subject", "period_start", "unit"],
                                               name="budget_usage_unique_unit")]

    def __str__(self) -> str:
        return f"{self.feature_id} {self.scope} {self.subject} {self.period_start:%Y-%m-%d}"


class BudgetReservation(models.Model):
    """An amount held by a budget check until the call's event settles it (or it expires)."""

    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    user_key = models.CharField(max_length=128, blank=True)
    amount = models.DecimalField(max_digits=20, decimal_places=10, help_text="USD held")
    tokens = models.PositiveBigIntegerField(default=0, help_text="tokens held")
    unit = models.CharField(max_length=8, help_text="usd, tokens or both: which amounts the usages hold")
    usages = models.ManyToManyField(BudgetUsage, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["feature", "user_key", "created_at"], condition=models.Q(settled_at=None),
                                name="reservation_unsettled")]

    def __str__(self) -> str:
        return f"reservation {self.pk} {self.amount} {self.unit}"


class Alert(models.Model):
    """A budget threshold crossed or an SLO breached. Budget alerts fire once per period
    and threshold (unique `dedupe_key`); SLO alerts resolve by themselves."""

    class Kind(models.TextChoices):
        BUDGET = "budget", "Budget"
        SLO = "slo", "SLO"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    environment = models.ForeignKey(Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    dedupe_key = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=300)
    figures = models.JSONField(default=dict)
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    notify_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return self.title


class MetricDefinition(models.Model):
    """One of a feature's impact metrics: primary, secondary or guardrail. `source` says
    where values come from: derived from telemetry rollups, or reported by a service."""

    class Kind(models.TextChoices):
        PRIMARY = "primary", "Primary"
        SECONDARY = "secondary", "Secondary"
        GUARDRAIL = "guardrail", "Guardrail"

    class Direction(models.TextChoices):
        INCREASE = "increase", "Higher is better"
        DECREASE = "decrease", "Lower is better"

    class Source(models.TextChoices):
        REPORTED = "reported", "Reported by a service"
        ERROR_RATE = "error_rate", "Error rate (telemetry)"
        P95_LATENCY_MS = "p95_latency_ms", "p95 latency, ms (telemetry)"
        COST_PER_CALL_USD = "cost_per_call_usd", "Cost per call, USD (telemetry)"
        CACHE_HIT_RATE = "cache_hit_rate", "Cache hit rate (telemetry)"
        CALLS = "calls", "Calls (telemetry)"

    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="metric_definitions")
    key = models.CharField(max_length=63, help_text="e.g. resolution_rate")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    target = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.REPORTED)
    unit = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["feature", "kind", "key"]
        constraints = [models.UniqueConstraint(fields=["feature", "key"], name="metric_key_unique_per_feature")]

    def __str__(self) -> str:
        return f"{self.feature_id}:{self.key}"


class MetricValue(models.Model):
    """A value a service reported for a metric, at a time, in an environment."""

    definition = models.ForeignKey(MetricDefinition, on_delete=models.CASCADE, related_name="values")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    value = models.DecimalField(max_digits=20, decimal_places=6)
    recorded_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["definition", "environment", "recorded_at"], name="metricvalue_lookup")]

    def __str__(self) -> str:
        return f"{self.definition_id}={self.value} at {self.recorded_at:%Y-%m-%d}"
