"""Reads over the rollups (never the raw events) and the price table.

    rollup_totals(feature=f, environment=e, since=t0, until=t1)
        -> [{"prompt_version": "1.2.0", "arm": "stable", "calls": 120, "errors": 3, ...}, ...]
    rollup_series(feature=f, environment=e, since=t0, until=t1, bucket="hour")
        -> the same rows with "t" (bucket start, aware UTC), ordered by t

`feature` / `environment` are model instances or ids, or lists of them; `environment=None`
means every environment. The window is `since <= t < until`. `group_by` names rollup key
columns (`prompt_version`, `arm`, `model`, `environment_id`, `feature_id`); `()` gives one row.
Each row carries: calls, errors (error + timeout outcomes), blocked (guardrail),
budget_blocked, cache_hits, input_tokens, cached_tokens, output_tokens, tokens (input +
output), cost_usd (Decimal), latency_sum_ms, latency_avg_ms, p50_ms / p95_ms / p99_ms (from the
merged histograms; None without calls), error_rate, cache_hit_rate, cost_per_call_usd and
`histogram` (the merged bucket counts, to merge further).

Which rows are read (`rollup_source`): the per-hour rows (CallRollupHour) when the window is
longer than 48 hours and starts and ends on whole UTC hours, since each hour row is exactly the
sum of its minute rows; the per-minute rows (CallRollup) otherwise and for per-minute buckets.
Two queries whatever the window: the counters summed in the database per bucket x group, and
the latency histograms of the same rows, merged here because percentiles do not add up."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from operator import add
from typing import Any

from django.db.models import Sum
from django.db.models.functions import Trunc

from apps.metrics import histogram
from apps.metrics.models import CallRollup, CallRollupHour, ModelPrice

GROUP_COLUMNS = frozenset({"prompt_version", "arm", "model", "environment_id", "feature_id"})
BUCKETS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
HOURLY_BEYOND = dt.timedelta(hours=48)  # windows longer than this read the hour rows (when hour-aligned)
_SUMMED = ("calls", "errors", "blocked", "budget_blocked", "cache_hits", "input_tokens", "cached_tokens",
           "output_tokens", "latency_sum_ms")
_SUMS = {name: Sum(name) for name in (*_SUMMED, "cost_usd")}
_COST_PLACES = Decimal("1e-10")


def _ids(obj) -> list[int] | int | None:
    if obj is None or isinstance(obj, int):
        return obj
    if isinstance(obj, list | tuple | set | frozenset):
        return [o if isinstance(o, int) else o.pk for o in obj]
    return obj.pk


def _on_hour(t: dt.datetime) -> bool:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) == t


def rollup_source(*, since: dt.datetime, until: dt.datetime,
                  bucket: str | None = None) -> tuple[type[CallRollup] | type[CallRollupHour], str]:
    """(model, time column) a read of [since, until) uses: CallRollupHour ("hour") when the
    window is longer than 48 hours, both ends are whole UTC hours and the buckets are not
    minutes; CallRollup ("minute") otherwise."""
    if bucket != "minute" and until - since > HOURLY_BEYOND and _on_hour(since) and _on_hour(until):
        return CallRollupHour, "hour"
    return CallRollup, "minute"


def _check(group_by: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(group_by) - GROUP_COLUMNS
    if unknown:
        raise ValueError(f"cannot group rollups by {sorted(unknown)}; choose from {sorted(GROUP_COLUMNS)}")
    return tuple(group_by)


class _Acc:
    __slots__ = ("sums", "cost", "hist")

    def __init__(self, row: dict) -> None:
        self.sums = {name: row[name] or 0 for name in _SUMMED}
        # The column's 10 places: exact on Postgres; drops SQLite's floating-point sum noise.
        self.cost = Decimal(row["cost_usd"] or 0).quantize(_COST_PLACES)
        self.hist = histogram.empty()

    def add_histogram(self, h: list[int]) -> None:
        if len(h) == histogram.SIZE:
            self.hist = list(map(add, self.hist, h))  # C speed: the hot loop of a long window
            return
        for i, n in enumerate(h[:histogram.SIZE]):
            if n:
                self.hist[i] += n

    def row(self) -> dict[str, Any]:
        s = self.sums
        merged = self.hist
        calls = s["calls"]
        return {
            "calls": calls, "errors": s["errors"], "blocked": s["blocked"], "budget_blocked": s["budget_blocked"],
            "cache_hits": s["cache_hits"], "input_tokens": s["input_tokens"], "cached_tokens": s["cached_tokens"],
            "output_tokens": s["output_tokens"], "tokens": s["input_tokens"] + s["output_tokens"],
            "cost_usd": self.cost, "latency_sum_ms": s["latency_sum_ms"],
            "latency_avg_ms": s["latency_sum_ms"] / calls if calls else None,
            "p50_ms": histogram.percentile(merged, 0.50),
            "p95_ms": histogram.percentile(merged, 0.95),
            "p99_ms": histogram.percentile(merged, 0.99),
            "error_rate": s["errors"] / calls if calls else None,
            "cache_hit_rate": s["cache_hits"] / calls if calls else None,
            "cost_per_call_usd": self.cost / calls if calls else None,
            "histogram": merged,
        }


def _aggregate(*, feature, environment, since: dt.datetime, until: dt.datetime, bucket: str | None,
               group_by: tuple[str, ...]) -> dict[tuple, _Acc]:
    """(bucket start when bucketed, *group values) -> sums, in two queries."""
    model, column = rollup_source(since=since, until=until, bucket=bucket)
    filters: dict[str, Any] = {f"{column}__gte": since, f"{column}__lt": until}
    for name, value in (("feature_id", _ids(feature)), ("environment_id", _ids(environment))):
        if isinstance(value, list):
            filters[f"{name}__in"] = value
        elif value is not None or name == "feature_id":
            filters[name] = value
    qs = model.objects.filter(**filters)
    columns = group_by
    if bucket is not None:
        qs = qs.annotate(t=Trunc(column, bucket, tzinfo=dt.UTC))
        columns = ("t", *group_by)

    def key_of(values) -> tuple:
        if bucket is None:
            return tuple(values)
        return (values[0].astimezone(dt.UTC), *values[1:])

    groups: dict[tuple, _Acc] = {}
    if columns:
        for row in qs.values(*columns).annotate(**_SUMS).order_by():
            groups[key_of([row[c] for c in columns])] = _Acc(row)
    else:
        row = qs.aggregate(**_SUMS)
        if row["calls"]:
            groups[()] = _Acc(row)
    for *values, h in qs.values_list(*columns, "latency_histogram").order_by().iterator(chunk_size=2000):
        acc = groups.get(key_of(values))
        if acc is not None and h:
            acc.add_histogram(h)
    return groups


def rollup_totals(*, feature, environment, since: dt.datetime, until: dt.datetime,
                  group_by: tuple[str, ...] = ("prompt_version", "arm")) -> list[dict[str, Any]]:
    """Totals over [since, until) per `group_by` group, ordered by the group values."""
    group_by = _check(group_by)
    groups = _aggregate(feature=feature, environment=environment, since=since, until=until, bucket=None,
                        group_by=group_by)
    return [dict(zip(group_by, key, strict=True)) | groups[key].row() for key in sorted(groups)]


def rollup_series(*, feature, environment, since: dt.datetime, until: dt.datetime, bucket: str = "hour",
                  group_by: tuple[str, ...] = ("prompt_version", "arm")) -> list[dict[str, Any]]:
    """One row per (bucket start `t`, group) over [since, until), ordered by t then group.
    `bucket` is "minute", "hour" or "day" (UTC). Buckets without calls are absent."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {sorted(BUCKETS)}")
    group_by = _check(group_by)
    groups = _aggregate(feature=feature, environment=environment, since=since, until=until, bucket=bucket,
                        group_by=group_by)
    return [{"t": key[0]} | dict(zip(group_by, key[1:], strict=True)) | groups[key].row()
            for key in sorted(groups)]


def model_price_list() -> list[ModelPrice]:
    """Every price row, by model, newest first."""
    return list(ModelPrice.objects.order_by("model", "-effective_from"))
