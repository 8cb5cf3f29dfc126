"""Reads over the per-minute rollups (never the raw events) and the price table.

    rollup_totals(feature=f, environment=e, since=t0, until=t1)
        -> [{"prompt_version": "1.2.0", "arm": "stable", "calls": 120, "errors": 3, ...}, ...]
    rollup_series(feature=f, environment=e, since=t0, until=t1, bucket="hour")
        -> the same rows with "t" (bucket start, aware UTC), ordered by t

`feature` / `environment` are model instances or ids; `environment=None` means every
environment. The window is `since <= minute < until`. `group_by` names CallRollup key columns
(`prompt_version`, `arm`, `model`, `environment_id`, `feature_id`); `()` gives one row.
Each row carries: calls, errors (error + timeout outcomes), blocked (guardrail),
budget_blocked, cache_hits, input_tokens, cached_tokens, output_tokens, tokens (input +
output), cost_usd (Decimal), latency_avg_ms, p50_ms / p95_ms / p99_ms (from the merged
histograms; None without calls), error_rate, cache_hit_rate, cost_per_call_usd and
`histogram` (the merged bucket counts, to merge further)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from apps.metrics import histogram
from apps.metrics.models import CallRollup, ModelPrice

GROUP_COLUMNS = frozenset({"prompt_version", "arm", "model", "environment_id", "feature_id"})
BUCKETS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
_SUMMED = ("calls", "errors", "blocked", "budget_blocked", "cache_hits", "input_tokens", "cached_tokens",
           "output_tokens", "latency_sum_ms")


def _id(obj) -> int | None:
    return obj if obj is None or isinstance(obj, int) else obj.pk


def _rows(*, feature, environment, since: dt.datetime, until: dt.datetime, columns: Iterable[str]):
    qs = CallRollup.objects.filter(feature_id=_id(feature), minute__gte=since, minute__lt=until)
    if environment is not None:
        qs = qs.filter(environment_id=_id(environment))
    return qs.values_list("minute", *columns, *_SUMMED, "cost_usd", "latency_histogram")


def _check(group_by: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(group_by) - GROUP_COLUMNS
    if unknown:
        raise ValueError(f"cannot group rollups by {sorted(unknown)}; choose from {sorted(GROUP_COLUMNS)}")
    return tuple(group_by)


class _Acc:
    __slots__ = ("sums", "cost", "hists")

    def __init__(self) -> None:
        self.sums = dict.fromkeys(_SUMMED, 0)
        self.cost = Decimal(0)
        self.hists: list[list[int]] = []

    def add(self, values: tuple, cost, hist) -> None:
        for name, value in zip(_SUMMED, values, strict=True):
            self.sums[name] += value
        self.cost += Decimal(cost)
        if hist:
            self.hists.append(hist)

    def row(self) -> dict[str, Any]:
        s = self.sums
        merged = histogram.merge(self.hists)
        calls = s["calls"]
        return {
            "calls": calls, "errors": s["errors"], "blocked": s["blocked"], "budget_blocked": s["budget_blocked"],
            "cache_hits": s["cache_hits"], "input_tokens": s["input_tokens"], "cached_tokens": s["cached_tokens"],
            "output_tokens": s["output_tokens"], "tokens": s["input_tokens"] + s["output_tokens"],
            "cost_usd": self.cost,
            "latency_avg_ms": s["latency_sum_ms"] / calls if calls else None,
            "p50_ms": histogram.percentile(merged, 0.50),
            "p95_ms": histogram.percentile(merged, 0.95),
            "p99_ms": histogram.percentile(merged, 0.99),
            "error_rate": s["errors"] / calls if calls else None,
            "cache_hit_rate": s["cache_hits"] / calls if calls else None,
            "cost_per_call_usd": self.cost / calls if calls else None,
            "histogram": merged,
        }


def rollup_totals(*, feature, environment, since: dt.datetime, until: dt.datetime,
                  group_by: tuple[str, ...] = ("prompt_version", "arm")) -> list[dict[str, Any]]:
    """Totals over [since, until) per `group_by` group, ordered by the group values."""
    group_by = _check(group_by)
    groups: dict[tuple, _Acc] = {}
    n = len(group_by)
    for _minute, *rest in _rows(feature=feature, environment=environment, since=since, until=until,
                                columns=group_by):
        key = tuple(rest[:n])
        groups.setdefault(key, _Acc()).add(rest[n:n + len(_SUMMED)], rest[-2], rest[-1])
    return [dict(zip(group_by, key, strict=True)) | groups[key].row() for key in sorted(groups)]


def _bucket_start(minute: dt.datetime, bucket: str) -> dt.datetime:
    minute = minute.astimezone(dt.UTC)
    if bucket == "minute":
        return minute
    if bucket == "hour":
        return minute.replace(minute=0)
    return minute.replace(hour=0, minute=0)


def rollup_series(*, feature, environment, since: dt.datetime, until: dt.datetime, bucket: str = "hour",
                  group_by: tuple[str, ...] = ("prompt_version", "arm")) -> list[dict[str, Any]]:
    """One row per (bucket start `t`, group) over [since, until), ordered by t then group.
    `bucket` is "minute", "hour" or "day" (UTC). Buckets without calls are absent."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {sorted(BUCKETS)}")
    group_by = _check(group_by)
    groups: dict[tuple, _Acc] = {}
    n = len(group_by)
    for minute, *rest in _rows(feature=feature, environment=environment, since=since, until=until,
                               columns=group_by):
        key = (_bucket_start(minute, bucket), *rest[:n])
        groups.setdefault(key, _Acc()).add(rest[n:n + len(_SUMMED)], rest[-2], rest[-1])
    return [{"t": key[0]} | dict(zip(group_by, key[1:], strict=True)) | groups[key].row()
            for key in sorted(groups)]


def model_price_list() -> list[ModelPrice]:
    """Every price row, by model, newest first."""
    return list(ModelPrice.objects.order_by("model", "-effective_from"))
