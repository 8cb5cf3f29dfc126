"""Impact metrics: a feature's primary, secondary and guardrail metric definitions (audited
services), values reported by services, values derived from telemetry rollups, and the
weekly review (this week against target and last week).

Reported values: `metric_values_report` takes a batch; each item is checked on its own, the
valid ones are committed together and the invalid ones listed by index with reasons (as for
call events). Only definitions with source `reported` accept values; telemetry sources are
derived. A week's value of a reported metric is the mean of the values recorded in it.

Weeks are ISO weeks (Monday 00:00 to Monday 00:00, UTC), written `YYYY-Www`."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.core import roles
from apps.core.errors import NotFound, ValidationFailed
from apps.core.models import Environment
from apps.core.services import audit_event_record
from apps.metrics import histogram
from apps.metrics.models import CallRollup, MetricDefinition, MetricValue
from apps.prompts.models import Feature

Kind = MetricDefinition.Kind
Direction = MetricDefinition.Direction
Source = MetricDefinition.Source

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")
MAX_VALUES = 1000
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
VALUE_QUANTUM = Decimal("0.000001")  # MetricValue.value has decimal_places=6
VALUE_LIMIT = Decimal("1e14")  # max_digits=20 with 6 decimals
EDITABLE = ("name", "kind", "direction", "target", "unit")


# --- definitions (audited) -----------------------------------------------------------------

def _state(definition: MetricDefinition) -> dict[str, Any]:
    return {"key": definition.key, "name": definition.name, "kind": definition.kind,
            "direction": definition.direction, "source": definition.source, "unit": definition.unit,
            "target": None if definition.target is None else str(definition.target)}


def _clean_target(target: Any) -> Decimal | None:
    if target is None or target == "":
        return None
    try:
        value = Decimal(str(target))
    except InvalidOperation:
        raise ValidationFailed("target must be a number", code="invalid_target", details={"field": "target"}) from None
    if not value.is_finite() or value.copy_abs() >= VALUE_LIMIT:
        raise ValidationFailed("target must be a finite number below 1e14", code="invalid_target",
                               details={"field": "target"})
    return value.quantize(VALUE_QUANTUM)


def _check_choices(*, kind: str, direction: str, source: str | None = None) -> None:
    for field, value, choices in (("kind", kind, Kind), ("direction", direction, Direction),
                                  ("source", source, Source)):
        if value is not None and value not in choices.values:
            raise ValidationFailed(f"{field} must be one of {', '.join(choices.values)}", code=f"invalid_{field}",
                                   details={"field": field})


def metric_definition_create(
    *,
    feature: Feature,
    key: str,
    name: str,
    kind: str,
    direction: str,
    target: Decimal | str | None = None,
    source: str = Source.REPORTED,
    unit: str = "",
    actor=None,
) -> MetricDefinition:
    roles.require(actor, "metric.manage")
    if not KEY_RE.match(key or ""):
        raise ValidationFailed("key must be lowercase letters, digits or '_', starting with a letter (1-63)",
                               code="invalid_key", details={"field": "key"})
    if not (name or "").strip():
        raise ValidationFailed("name is required", code="invalid_name", details={"field": "name"})
    _check_choices(kind=kind, direction=direction, source=source)
    definition = MetricDefinition(feature=feature, key=key, name=name.strip()[:200], kind=kind, direction=direction,
                                  target=_clean_target(target), source=source, unit=(unit or "").strip()[:20])
    try:
        with transaction.atomic(durable=True):
            definition.save()
            audit_event_record(actor=actor, action="metric_definition.created", object_type="metric_definition",
                               object_key=feature.key, after=_state(definition))
    except IntegrityError:
        # Race or repeat: the (feature, key) unique constraint decides.
        raise ValidationFailed(f"{feature.key} already has a metric '{key}'", code="metric_exists",
                               details={"field": "key"}) from None
    return definition


def metric_definition_update(*, definition: MetricDefinition, actor=None, **changes: Any) -> MetricDefinition:
    """Change name, kind, direction, target or unit. The key and the source stay: values
    already recorded under them would change meaning."""
    roles.require(actor, "metric.manage")
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationFailed(f"cannot change {', '.join(unknown)}; editable: {', '.join(EDITABLE)}",
                               code="not_editable", details={"fields": unknown})
    _check_choices(kind=changes.get("kind", definition.kind), direction=changes.get("direction", definition.direction))
    if "name" in changes and not (changes["name"] or "").strip():
        raise ValidationFailed("name is required", code="invalid_name", details={"field": "name"})
    with transaction.atomic(durable=True):
        # Lock: two people editing the same definition at once must not both write "before".
        current = MetricDefinition.objects.select_for_update().get(pk=definition.pk)
        before = _state(current)
        for field in changes:
            value = changes[field]
            if field == "target":
                value = _clean_target(value)
            elif field in ("name", "unit"):
                value = (value or "").strip()
            setattr(current, field, value)
        current.save(update_fields=list(changes) or ["name"])
        audit_event_record(actor=actor, action="metric_definition.updated", object_type="metric_definition",
                           object_key=current.feature.key, before=before, after=_state(current))
    return current


def metric_definition_delete(*, definition: MetricDefinition, actor=None) -> None:
    """Delete the definition and its reported values (the audit event keeps what it was)."""
    roles.require(actor, "metric.manage")
    with transaction.atomic(durable=True):
        count = MetricValue.objects.filter(definition=definition).count()
        audit_event_record(actor=actor, action="metric_definition.deleted", object_type="metric_definition",
                           object_key=definition.feature.key, before={**_state(definition), "values": count})
        definition.delete()


def metric_definition_get(*, feature: Feature, pk: int) -> MetricDefinition:
    definition = MetricDefinition.objects.select_related("feature").filter(feature=feature, pk=pk).first()
    if definition is None:
        raise NotFound(f"{feature.key} has no metric {pk}", code="metric_not_found")
    return definition


# --- reported values ---------------------------------------------------------------------

@dataclass
class ReportResult:
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"counts": {"accepted": len(self.accepted), "rejected": len(self.rejected)},
                "accepted": self.accepted, "rejected": self.rejected}


def _reason(field: str | None, code: str, message: str) -> dict[str, Any]:
    return {"field": field, "code": code, "message": message}


def _parse_value(raw: Any) -> Decimal:
    # Numbers go through their text so 0.1 stays 0.1 (never a binary float's expansion).
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError("value must be a number (or a decimal string)")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError("value must be a number (or a decimal string)") from None
    if not value.is_finite():
        raise ValueError("value must be finite")
    if value.copy_abs() >= VALUE_LIMIT:
        raise ValueError("value must be below 1e14 in magnitude")
    if value.as_tuple().exponent < -6 and value != value.quantize(VALUE_QUANTUM):
        raise ValueError("value has more than 6 decimal places")
    return value.quantize(VALUE_QUANTUM)


def _parse_time(raw: Any, now: dt.datetime) -> dt.datetime:
    if raw is None:
        return now
    if not isinstance(raw, str):
        raise ValueError("recorded_at must be an ISO-8601 string")
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise ValueError("recorded_at must be an ISO-8601 date-time, e.g. 2026-12-03T12:00:00Z")
    if timezone.is_naive(value):
        raise ValueError("recorded_at needs a UTC offset (e.g. 'Z' or '+01:00')")
    if value > now + FUTURE_TOLERANCE:
        raise ValueError("recorded_at is more than 5 minutes in the future")
    return value


def metric_values_report(*, environment: Environment, feature: Feature, values: Any) -> ReportResult:
    """Record a batch of reported values: `[{"metric": key, "value": number, "recorded_at":
    iso}]`. Items are checked one by one; the valid ones are committed in one transaction."""
    if not isinstance(values, list):
        raise ValidationFailed('"values" must be a list of {"metric", "value", "recorded_at"}', code="invalid_body")
    if not values:
        raise ValidationFailed('"values" is empty', code="invalid_body")
    if len(values) > MAX_VALUES:
        raise ValidationFailed(f"at most {MAX_VALUES} values per request (got {len(values)})",
                               code="batch_too_large", details={"limit": MAX_VALUES})
    definitions = {d.key: d for d in MetricDefinition.objects.filter(feature=feature)}
    now = timezone.now()
    rows: list[MetricValue] = []
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(values):
        reasons: list[dict[str, Any]] = []
        if not isinstance(item, dict):
            rejected.append({"index": index, "metric": None,
                             "reasons": [_reason(None, "invalid_type", "each value must be a JSON object")]})
            continue
        key = item.get("metric")
        definition = definitions.get(key) if isinstance(key, str) else None
        if definition is None:
            known = ", ".join(sorted(k for k, d in definitions.items() if d.source == Source.REPORTED)) or "none"
            reasons.append(_reason("metric", "unknown_metric",
                                   f"{feature.key} has no metric {key!r} (reported metrics: {known})"))
        elif definition.source != Source.REPORTED:
            reasons.append(_reason("metric", "derived_metric",
                                   f"{key} is derived from telemetry ({definition.source}); it takes no values"))
        try:
            value = _parse_value(item.get("value"))
        except ValueError as exc:
            reasons.append(_reason("value", "invalid_value", str(exc)))
        try:
            recorded_at = _parse_time(item.get("recorded_at"), now)
        except ValueError as exc:
            reasons.append(_reason("recorded_at", "invalid_recorded_at", str(exc)))
        if reasons:
            rejected.append({"index": index, "metric": key if isinstance(key, str) else None, "reasons": reasons})
            continue
        rows.append(MetricValue(definition=definition, environment=environment, value=value, recorded_at=recorded_at))
        accepted.append({"index": index, "metric": key, "value": str(value), "recorded_at": recorded_at.isoformat()})
    if rows:
        with transaction.atomic(durable=True):
            MetricValue.objects.bulk_create(rows)
    return ReportResult(accepted=accepted, rejected=rejected)


# --- weeks and the weekly review ---------------------------------------------------------

WEEK_YEARS = (1970, 9998)


def week_parse(text: str | None, *, today: dt.date | None = None) -> dt.date:
    """The Monday of ISO week `YYYY-Www`; the current week when empty."""
    if not text:
        today = today or timezone.now().date()
        return today - dt.timedelta(days=today.weekday())
    match = WEEK_RE.match(text.strip())
    try:
        if not match or not WEEK_YEARS[0] <= int(match[1]) <= WEEK_YEARS[1]:
            raise ValueError  # outside the years, the report's neighbouring weeks overflow datetime
        return dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ValidationFailed(f"week must look like 2026-W49 (got {text!r})", code="invalid_week") from None


def week_label(monday: dt.date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def _week_bounds(monday: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(monday, dt.time.min, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=7)


def telemetry_week_values(*, feature: Feature, environment: Environment, monday: dt.date,
                          with_latency: bool = True) -> dict[str, Decimal | None]:
    """The telemetry-derived metrics of one week, from rollups: sums in the database,
    latency histograms merged here (only when a p95 metric asks for them)."""
    start, end = _week_bounds(monday)
    qs = CallRollup.objects.filter(feature=feature, environment=environment, minute__gte=start, minute__lt=end)
    sums = qs.aggregate(calls=Sum("calls"), errors=Sum("errors"), cache_hits=Sum("cache_hits"), cost=Sum("cost_usd"))
    calls = sums["calls"] or 0
    out: dict[str, Decimal | None] = {Source.CALLS: Decimal(calls), Source.ERROR_RATE: None,
                                      Source.CACHE_HIT_RATE: None, Source.COST_PER_CALL_USD: None,
                                      Source.P95_LATENCY_MS: None}
    if calls:
        out[Source.ERROR_RATE] = (Decimal(sums["errors"] or 0) / calls).quantize(VALUE_QUANTUM)
        out[Source.CACHE_HIT_RATE] = (Decimal(sums["cache_hits"] or 0) / calls).quantize(VALUE_QUANTUM)
        out[Source.COST_PER_CALL_USD] = (Decimal(sums["cost"] or 0) / calls).quantize(VALUE_QUANTUM)
        if with_latency:
            p95 = histogram.percentile(histogram.merge(qs.values_list("latency_histogram", flat=True).iterator()),
                                       0.95)
            out[Source.P95_LATENCY_MS] = None if p95 is None else Decimal(str(round(p95, 1)))
    return out


def reported_week_values(*, feature: Feature, environment: Environment,
                         monday: dt.date) -> dict[int, tuple[Decimal, int]]:
    """definition id -> (mean of the week's reported values, how many)."""
    start, end = _week_bounds(monday)
    rows = (MetricValue.objects.filter(definition__feature=feature, environment=environment, recorded_at__gte=start,
                                       recorded_at__lt=end)
            .values("definition_id").annotate(mean=Avg("value"), n=Count("id")))
    return {r["definition_id"]: (Decimal(str(r["mean"])).quantize(VALUE_QUANTUM), r["n"]) for r in rows}


@dataclass
class ImpactRow:
    definition: MetricDefinition
    value: Decimal | None
    previous: Decimal | None
    count: int | None  # reported values this week (None for telemetry)
    meets_target: bool | None
    change: str | None  # better | worse | same
    status: str  # good | bad | none


@dataclass
class ImpactReport:
    feature: Feature
    environment: Environment
    monday: dt.date
    rows: list[ImpactRow]

    @property
    def week(self) -> str:
        return week_label(self.monday)

    @property
    def previous_week(self) -> str:
        return week_label(self.monday - dt.timedelta(days=7))

    @property
    def next_week(self) -> str:
        return week_label(self.monday + dt.timedelta(days=7))

    def by_kind(self) -> list[tuple[str, list[ImpactRow]]]:
        return [(label, [r for r in self.rows if r.definition.kind == kind]) for kind, label in Kind.choices]


def _better(direction: str, a: Decimal, b: Decimal) -> bool:
    return a > b if direction == Direction.INCREASE else a < b


def impact_row(definition: MetricDefinition, value: Decimal | None, previous: Decimal | None,
               count: int | None = None) -> ImpactRow:
    """Green or red by direction: against the target when there is one, else against last week."""
    meets = None
    if value is not None and definition.target is not None:
        meets = value == definition.target or _better(definition.direction, value, definition.target)
    change = None
    if value is not None and previous is not None:
        change = "same" if value == previous else ("better" if _better(definition.direction, value, previous)
                                                   else "worse")
    if meets is not None:
        status = "good" if meets else "bad"
    elif change in ("better", "worse"):
        status = "good" if change == "better" else "bad"
    else:
        status = "none"
    return ImpactRow(definition, value, previous, count, meets, change, status)


def impact_week_report(*, feature: Feature, environment: Environment, monday: dt.date) -> ImpactReport:
    definitions = list(MetricDefinition.objects.filter(feature=feature).order_by("kind", "key"))
    previous_monday = monday - dt.timedelta(days=7)
    telemetry_sources = {d.source for d in definitions if d.source != Source.REPORTED}
    with_latency = Source.P95_LATENCY_MS in telemetry_sources
    now_t = prev_t = None
    if telemetry_sources:
        now_t = telemetry_week_values(feature=feature, environment=environment, monday=monday,
                                      with_latency=with_latency)
        prev_t = telemetry_week_values(feature=feature, environment=environment, monday=previous_monday,
                                       with_latency=with_latency)
    now_r = prev_r = {}
    if any(d.source == Source.REPORTED for d in definitions):
        now_r = reported_week_values(feature=feature, environment=environment, monday=monday)
        prev_r = reported_week_values(feature=feature, environment=environment, monday=previous_monday)
    rows = []
    for d in definitions:
        if d.source == Source.REPORTED:
            value, count = now_r.get(d.id, (None, 0))
            rows.append(impact_row(d, value, prev_r.get(d.id, (None, 0))[0], count))
        else:
            rows.append(impact_row(d, now_t[d.source], prev_t[d.source]))
    return ImpactReport(feature=feature, environment=environment, monday=monday, rows=rows)
