"""SLO alerts: every minute, per feature x environment, compare the last window's error rate
and p95 latency with the feature's SLOs (`Feature.slo_error_rate`, `slo_p95_latency_ms`); open
an alert on a breach and resolve it by itself when the metric recovers.

One alert per (feature, environment, metric) episode. Its dedupe key is
`slo:<feature>:<environment>:<metric>:<minute it opened>`, so a later breach after recovery is
a new alert (keys are unique forever); the open one is found by kind, feature, environment
and `figures["metric"]`. A window with fewer than the minimum calls changes nothing: an
open alert stays open until there is enough traffic to say the metric recovered.

Settings: SHIPWAY_SLO_WINDOW_MINUTES (default 15), SHIPWAY_SLO_MIN_CALLS (default 20)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from apps.core.models import Environment
from apps.metrics import histogram
from apps.metrics.alerts import alert_open, alert_resolve
from apps.metrics.models import Alert, CallRollup
from apps.prompts.models import Feature

logger = logging.getLogger(__name__)

METRIC_ERROR_RATE = "error_rate"
METRIC_P95 = "p95_latency_ms"


def slo_window_minutes() -> int:
    return int(getattr(settings, "SHIPWAY_SLO_WINDOW_MINUTES", 15))


def slo_min_calls() -> int:
    return int(getattr(settings, "SHIPWAY_SLO_MIN_CALLS", 20))


@dataclass
class SloAction:
    """What one evaluation did, for logs and tests."""

    action: str  # opened | resolved
    feature: str
    environment: str
    metric: str
    value: float | None
    alert_id: int | None = None


@dataclass
class _Window:
    calls: int = 0
    errors: int = 0
    hist: list[int] | None = None


def _slo_of(feature: Feature, metric: str) -> Decimal | int | None:
    return feature.slo_error_rate if metric == METRIC_ERROR_RATE else feature.slo_p95_latency_ms


def _observed(window: _Window, metric: str) -> float | None:
    if metric == METRIC_ERROR_RATE:
        return window.errors / window.calls if window.calls else None
    return histogram.percentile(window.hist or [], 0.95)


def _describe(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.2f} %" if metric == METRIC_ERROR_RATE else f"{value:.0f} ms"


def slo_evaluate(*, now: datetime | None = None) -> list[SloAction]:
    """Evaluate every feature with an SLO in every environment that had traffic (or has an
    open SLO alert). Idempotent: a second run in the same minute does nothing new."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)  # complete minutes only
    window_minutes, min_calls = slo_window_minutes(), slo_min_calls()
    start = end - timedelta(minutes=window_minutes)

    features = {f.id: f for f in Feature.objects.filter(
        Q(slo_error_rate__isnull=False) | Q(slo_p95_latency_ms__isnull=False))}
    open_alerts: dict[tuple[int, int, str], Alert] = {}
    for alert in Alert.objects.filter(kind=Alert.Kind.SLO, resolved_at__isnull=True, environment__isnull=False):
        open_alerts[(alert.feature_id, alert.environment_id, alert.figures.get("metric", ""))] = alert

    windows: dict[tuple[int, int], _Window] = {}
    rollups = CallRollup.objects.filter(feature_id__in=features, minute__gte=start, minute__lt=end)
    for row in rollups.values("feature_id", "environment_id").annotate(calls=Sum("calls"), errors=Sum("errors")):
        windows[(row["feature_id"], row["environment_id"])] = _Window(calls=row["calls"] or 0,
                                                                      errors=row["errors"] or 0)
    hists: dict[tuple[int, int], list[list[int]]] = {}
    latency_features = [fid for fid, f in features.items() if f.slo_p95_latency_ms is not None]
    for fid, eid, hist in (rollups.filter(feature_id__in=latency_features)
                           .values_list("feature_id", "environment_id", "latency_histogram").iterator()):
        hists.setdefault((fid, eid), []).append(hist or [])
    for pair, parts in hists.items():
        windows[pair].hist = histogram.merge(parts)

    pairs = set(windows) | {(fid, eid) for fid, eid, _ in open_alerts}
    environments = Environment.objects.in_bulk({eid for _, eid in pairs})
    actions: list[SloAction] = []
    for fid, eid in sorted(pairs):
        environment = environments.get(eid)
        if environment is None:
            continue
        feature = features.get(fid)
        window = windows.get((fid, eid), _Window())
        for metric in (METRIC_ERROR_RATE, METRIC_P95):
            open_alert = open_alerts.get((fid, eid, metric))
            slo = _slo_of(feature, metric) if feature else None
            if slo is None:
                if open_alert is not None:  # the SLO was removed: nothing left to breach
                    alert_resolve(dedupe_key=open_alert.dedupe_key, figures={"metric": metric, "note": "SLO removed"})
                    actions.append(SloAction("resolved", open_alert.feature.key, environment.key, metric, None,
                                             open_alert.id))
                continue
            if window.calls < min_calls:
                continue  # too little traffic to say breached or recovered
            value = _observed(window, metric)
            if value is None:
                continue
            figures = {
                "metric": metric, "value": round(value, 6), "slo": float(slo),
                "calls": window.calls, "errors": window.errors, "window_minutes": window_minutes,
                "window_start": start.isoformat(), "window_end": end.isoformat(),
            }
            breached = value > float(slo)
            if breached and open_alert is None:
                alert = alert_open(
                    kind=Alert.Kind.SLO, feature=feature, environment=environment,
                    dedupe_key=f"slo:{feature.key}:{environment.key}:{metric}:{end:%Y%m%dT%H%M}",
                    title=(f"{feature.key}: {metric.replace('_', ' ')} {_describe(metric, value)} breaches "
                           f"its SLO of {_describe(metric, float(slo))} in {environment.key}"),
                    figures=figures,
                )
                if alert is not None:
                    logger.info("slo.breached", extra={"feature": feature.key, "environment": environment.key,
                                                       "metric": metric})
                    actions.append(SloAction("opened", feature.key, environment.key, metric, value, alert.id))
            elif not breached and open_alert is not None:
                if alert_resolve(dedupe_key=open_alert.dedupe_key, figures=figures):
                    logger.info("slo.recovered", extra={"feature": feature.key, "environment": environment.key,
                                                        "metric": metric})
                    actions.append(SloAction("resolved", feature.key, environment.key, metric, value,
                                             open_alert.id))
    return actions


SLO_LOCK_ID = 0x5107_0001  # pg_advisory lock id of the SLO evaluation


def slo_evaluate_locked(*, now: datetime | None = None) -> list[SloAction]:
    """The beat task's entry point: one evaluation at a time. Race: two overlapping runs (a
    slow one and the next minute's) could both see no open alert and open two alerts for one
    breach; a transaction-scoped advisory lock serialises them on Postgres (SQLite serialises
    writers by itself)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SLO_LOCK_ID])
        return slo_evaluate(now=now)
