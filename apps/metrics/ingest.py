"""Call-event ingest, shared by `POST /api/v1/events` and OTLP `POST /v1/traces`.

A batch is validated in plain Python (a DRF serializer per event would cost more than the
insert), with the batch's features, their prompt versions and the price table each read once.
The valid events are written in one statement per chunk that skips duplicates
(`INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id`): re-sending an event
changes nothing, and the answer says exactly which events were new, even when two clients
send the same event at once. In the same transaction budgets are settled for the new events
only; a rollup is enqueued after commit.

Rules (documented for clients in the API description):
- `event_id` (client-made, <= 100 chars), `feature` (key of an existing feature), `model`,
  `latency_ms` and `occurred_at` (ISO-8601 with an offset) are required.
- `arm` is `stable` (default) or `canary`; `outcome` one of `Outcome`; tokens and latency are
  non-negative integers; `cached_tokens` is a part of `input_tokens` and cannot exceed it.
- `occurred_at` more than 5 minutes in the future, or older than the retention window
  (SHIPWAY_EVENT_RETENTION_DAYS, default 30), is rejected.
- An unknown `prompt_version` is accepted and flagged (`unknown_version`), so telemetry from a
  service running a version Shipway has not seen is never lost.
- `cost_usd` absent: computed from the price table (`cost_source` "computed"), or left empty
  when the model has no price on that date ("unpriced"); present: stored ("reported").
- Unknown fields are ignored (forward compatibility)."""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import ShipwayError, ValidationFailed
from apps.metrics.budgets import budget_events_settle
from apps.metrics.models import CallEvent, Outcome
from apps.metrics.pricing import COST_QUANTUM, PriceBook
from apps.prompts.models import Feature, PromptVersion

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
INT_MAX = 2_147_483_647  # PositiveIntegerField
COST_MAX = Decimal("999999")  # max_digits=16, decimal_places=10
ARMS = frozenset({"stable", "canary"})
OUTCOMES = frozenset(Outcome.values)
ROLLUP_ENQUEUE_EVERY_SECONDS = 1.0  # per process; beat runs the rollup every minute anyway


class BatchTooLarge(ShipwayError):
    status = 413
    code = "batch_too_large"


def retention_days() -> int:
    return int(getattr(settings, "SHIPWAY_EVENT_RETENTION_DAYS", 30))


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    new_events: list[CallEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {"accepted": len(self.accepted), "duplicate": len(self.duplicates),
                       "rejected": len(self.rejected)},
            "accepted": self.accepted,
            "duplicate": self.duplicates,
            "rejected": self.rejected,
            "flagged": self.flagged,
        }


class _Invalid(Exception):
    def __init__(self, field_name: str, code: str, message: str) -> None:
        self.reason = {"field": field_name, "code": code, "message": message}


# --------------------------------------------------------------------------- field checks


def _str(event: dict, name: str, max_length: int, *, required: bool = False) -> str:
    value = event.get(name)
    if value is None or value == "":
        if required:
            raise _Invalid(name, "required", f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise _Invalid(name, "invalid_type", f"{name} must be a string")
    if len(value) > max_length:
        raise _Invalid(name, "too_long", f"{name} is longer than {max_length} characters")
    if "\x00" in value:  # OTLP protobuf strings may hold one; PostgreSQL text cannot
        raise _Invalid(name, "invalid_characters", f"{name} holds a NUL character")
    return value


def _count(event: dict, name: str, *, required: bool = False, rounding: bool = False) -> int:
    value = event.get(name)
    if value is None:
        if required:
            raise _Invalid(name, "required", f"{name} is required")
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(name, "invalid_type", f"{name} must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(name, "invalid_type", f"{name} must be a finite number")
        if not rounding and not value.is_integer():
            raise _Invalid(name, "invalid_type", f"{name} must be an integer")
        value = round(value)
    if value < 0:
        raise _Invalid(name, "negative", f"{name} cannot be negative")
    if value > INT_MAX:
        raise _Invalid(name, "too_large", f"{name} is larger than {INT_MAX}")
    return value


def _bool(event: dict, name: str) -> bool:
    value = event.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Invalid(name, "invalid_type", f"{name} must be true or false")
    return value


def _cost(event: dict) -> Decimal | None:
    value = event.get("cost_usd")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Invalid("cost_usd", "invalid_type", "cost_usd must be a number or a decimal string")
    try:
        cost = Decimal(str(value).strip())  # via str: a float's shortest repr, never its binary expansion
    except InvalidOperation:
        raise _Invalid("cost_usd", "invalid_type", "cost_usd must be a decimal number") from None
    if not cost.is_finite():
        raise _Invalid("cost_usd", "invalid_type", "cost_usd must be finite")
    if cost < 0:
        raise _Invalid("cost_usd", "negative", "cost_usd cannot be negative")
    if cost > COST_MAX:
        raise _Invalid("cost_usd", "too_large", f"cost_usd is larger than {COST_MAX}")
    return cost.quantize(COST_QUANTUM)


def _when(event: dict, earliest: dt.datetime, latest: dt.datetime) -> dt.datetime:
    value = event.get("occurred_at")
    if value is None or value == "":
        raise _Invalid("occurred_at", "required", "occurred_at is required")
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("occurred_at", "invalid_timestamp",
                           "occurred_at must be an ISO-8601 timestamp with an offset, "
                           "e.g. 2026-01-31T12:00:00Z") from None
    elif isinstance(value, dt.datetime):  # OTLP hands in datetimes
        when = value
    else:
        raise _Invalid("occurred_at", "invalid_type", "occurred_at must be an ISO-8601 string")
    if when.tzinfo is None or when.utcoffset() is None:
        raise _Invalid("occurred_at", "timestamp_without_offset",
                       "occurred_at needs a UTC offset (e.g. 'Z' or '+02:00')")
    if when > latest:
        raise _Invalid("occurred_at", "timestamp_in_future",
                       f"occurred_at is more than {int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes in the future")
    if when < earliest:
        raise _Invalid("occurred_at", "timestamp_too_old",
                       f"occurred_at is older than the retention window of {retention_days()} days")
    return when.astimezone(dt.UTC)


# --------------------------------------------------------------------------- batch


@dataclass
class _Context:
    environment_id: int
    features: dict[str, int]
    versions: dict[int, set[str]]
    prices: PriceBook
    earliest: dt.datetime
    latest: dt.datetime
    received_at: dt.datetime


def _context(*, environment_id: int, events: list) -> _Context:
    keys = {e["feature"] for e in events
            if isinstance(e, dict) and isinstance(e.get("feature"), str) and "\x00" not in e["feature"]}
    features = dict(Feature.objects.filter(key__in=keys).values_list("key", "id")) if keys else {}
    versions: dict[int, set[str]] = {fid: set() for fid in features.values()}
    if features:
        for fid, version in PromptVersion.objects.filter(feature_id__in=features.values()).values_list(
                "feature_id", "version"):
            versions[fid].add(version)
    now = timezone.now()
    return _Context(environment_id=environment_id, features=features, versions=versions,
                    prices=PriceBook.load(), earliest=now - dt.timedelta(days=retention_days()),
                    latest=now + FUTURE_TOLERANCE, received_at=now)


# (field, max length, required, default) and (field, required, rounding) for the plain checks
_STRINGS = (("event_id", 100, True, ""), ("feature", 63, True, ""), ("prompt_version", 64, False, ""),
            ("arm", 8, False, "stable"), ("model", 100, True, ""), ("outcome", 16, False, Outcome.SUCCESS.value),
            ("error_type", 100, False, ""), ("user_key", 128, False, ""), ("request_id", 100, False, ""))
_COUNTS = (("latency_ms", True, True), ("input_tokens", False, False), ("cached_tokens", False, False),
           ("output_tokens", False, False))
_COLUMNS = [f for f in CallEvent._meta.concrete_fields if not f.primary_key]
_ATTNAMES = [f.attname for f in _COLUMNS]


def _event(raw: Any, ctx: _Context, reasons: list[dict]) -> tuple | None:
    """One validated, priced event as a row of `_COLUMNS` values, or None with `reasons`
    filled in. The common case (right types, in range) takes the inline fast path; anything
    else goes through the checks that name the problem."""
    if not isinstance(raw, dict):
        reasons.append({"field": None, "code": "invalid_type", "message": "each event must be a JSON object"})
        return None
    get = raw.get
    values: dict[str, Any] = {}
    for name, max_length, required, default in _STRINGS:
        value = get(name)
        if type(value) is str and 0 < len(value) <= max_length and "\x00" not in value:
            values[name] = value
            continue
        try:
            values[name] = _str(raw, name, max_length, required=required) or default
        except _Invalid as exc:
            reasons.append(exc.reason)
    for name, required, rounding in _COUNTS:
        value = get(name)
        if type(value) is int and 0 <= value <= INT_MAX:
            values[name] = value
            continue
        try:
            values[name] = _count(raw, name, required=required, rounding=rounding)
        except _Invalid as exc:
            reasons.append(exc.reason)
    value = get("cache_hit")
    if type(value) is bool:
        values["cache_hit"] = value
    else:
        try:
            values["cache_hit"] = _bool(raw, "cache_hit")
        except _Invalid as exc:
            reasons.append(exc.reason)
    try:
        values["cost_usd"] = _cost(raw)
    except _Invalid as exc:
        reasons.append(exc.reason)
    try:
        values["occurred_at"] = _when(raw, ctx.earliest, ctx.latest)
    except _Invalid as exc:
        reasons.append(exc.reason)
    if values.get("arm", "stable") not in ARMS:
        reasons.append({"field": "arm", "code": "invalid_choice", "message": "arm must be 'stable' or 'canary'"})
    if values.get("outcome", "success") not in OUTCOMES:
        reasons.append({"field": "outcome", "code": "invalid_choice",
                        "message": f"outcome must be one of {', '.join(sorted(OUTCOMES))}"})
    feature_id = ctx.features.get(values.get("feature") or "")
    if values.get("feature") and feature_id is None:
        reasons.append({"field": "feature", "code": "unknown_feature",
                        "message": f"no feature with key '{values['feature']}'"})
    if values.get("cached_tokens", 0) > values.get("input_tokens", INT_MAX):
        reasons.append({"field": "cached_tokens", "code": "cached_exceeds_input",
                        "message": "cached_tokens cannot exceed input_tokens (cached tokens are part of the input)"})
    if reasons:
        return None

    cost = values["cost_usd"]
    if cost is not None:
        source = "reported"
    else:
        cost = ctx.prices.cost(values["model"], values["input_tokens"], values["cached_tokens"],
                               values["output_tokens"], values["occurred_at"])
        source = "computed" if cost is not None else "unpriced"
    version = values["prompt_version"]
    values.update(
        environment_id=ctx.environment_id, feature_id=feature_id, cost_usd=cost, cost_source=source,
        unknown_version=bool(version) and version not in ctx.versions[feature_id],
        received_at=ctx.received_at, rolled_up=False,
    )
    return tuple([values[name] for name in _ATTNAMES])


_EVENT_ID = _ATTNAMES.index("event_id")


def _insert_new(rows: list[tuple]) -> dict[str, int]:
    """Insert-or-ignore on the unique event_id; returns {event_id: id} of the rows this
    statement inserted (not those that already existed)."""
    if not rows:
        return {}
    quote = connection.ops.quote_name
    table = quote(CallEvent._meta.db_table)
    columns = ", ".join(quote(f.column) for f in _COLUMNS)
    conflict = f"ON CONFLICT ({quote('event_id')}) DO NOTHING RETURNING {quote('id')}, {quote('event_id')}"
    if connection.vendor == "postgresql":
        # One binary array parameter per column, unnested into rows: a short statement whatever
        # the batch size. A VALUES list of 20,000 placeholders, or text-quoted arrays, cost more
        # to build than the insert itself, hence psycopg's own server-side-binding cursor on
        # Django's connection (same connection, same transaction).
        import psycopg

        connection.ensure_connection()
        casts = ", ".join(f"%b::{f.db_type(connection)}[]" for f in _COLUMNS)
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({casts}) {conflict}",
                           [list(column) for column in zip(*rows, strict=True)])
            return {event_id: pk for pk, event_id in cursor.fetchall()}
    inserted: dict[str, int] = {}
    row_sql = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    per_statement = max(1, 30_000 // len(_COLUMNS))  # SQLite (>= 3.32) allows 32766 parameters
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            params: list[Any] = []
            for row in chunk:
                params.extend(f.get_db_prep_save(v, connection) for f, v in zip(_COLUMNS, row, strict=True))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} {conflict}",
                           params)
            inserted.update((event_id, pk) for pk, event_id in cursor.fetchall())
    return inserted


_last_enqueue = 0.0


def _rollup_enqueue() -> None:
    """Enqueue one rollup after commit, at most once a second per process: a busy ingest
    would otherwise enqueue hundreds of rollups that find nothing to do."""
    global _last_enqueue
    now = time.monotonic()
    if now - _last_enqueue < ROLLUP_ENQUEUE_EVERY_SECONDS:
        return
    _last_enqueue = now
    from apps.metrics.tasks import metrics_rollup

    metrics_rollup.delay_on_commit()


def call_events_ingest(*, environment_id: int, events: list) -> IngestResult:
    """Validate and store a batch of call events for one environment (from the SDK key).

    Valid events are committed even when others in the batch are rejected. Returns which
    event_ids were accepted (new), duplicates (already stored, or repeated in the batch) and
    rejected (with reasons per event, by index)."""
    if not isinstance(events, list):
        raise ValidationFailed("'events' must be a list of event objects", code="invalid_batch")
    if not events:
        raise ValidationFailed("'events' is empty: send at least one event", code="empty_batch")
    if len(events) > MAX_BATCH:
        raise BatchTooLarge(f"a batch holds at most {MAX_BATCH} events; this one has {len(events)}",
                            details={"max_events": MAX_BATCH, "events": len(events)})
    ctx = _context(environment_id=environment_id, events=events)
    result = IngestResult()
    valid: list[tuple] = []
    in_batch: set[str] = set()
    repeated: list[str] = []
    for index, raw in enumerate(events):
        reasons: list[dict] = []
        row = _event(raw, ctx, reasons)
        if row is None:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            result.rejected.append({"index": index, "event_id": event_id if isinstance(event_id, str) else None,
                                    "reasons": reasons})
            continue
        if row[_EVENT_ID] in in_batch:
            repeated.append(row[_EVENT_ID])
            continue
        in_batch.add(row[_EVENT_ID])
        valid.append(row)
    # Sorted, so two batches sharing event_ids lock their index entries in the same order and
    # cannot deadlock each other on Postgres.
    valid.sort(key=lambda r: r[_EVENT_ID])
    with transaction.atomic(durable=True):
        inserted = _insert_new(valid)
        for row in valid:
            pk = inserted.get(row[_EVENT_ID])
            if pk is None:
                result.duplicates.append(row[_EVENT_ID])
                continue
            event = CallEvent(pk, *row)  # positional: Django's fast path, fields in _COLUMNS order
            event._state.adding = False
            result.new_events.append(event)
            result.accepted.append(event.event_id)
            if event.unknown_version:
                result.flagged.append({"event_id": event.event_id, "flags": ["unknown_version"]})
        if result.new_events:
            budget_events_settle(events=result.new_events)
            _rollup_enqueue()
    result.duplicates.extend(repeated)
    if result.new_events or result.rejected:
        logger.info("call_events.ingested accepted=%d duplicate=%d rejected=%d", len(result.accepted),
                    len(result.duplicates), len(result.rejected))
    return result
