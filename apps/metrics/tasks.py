"""Celery tasks of the metrics app. Each is thin: it takes ids, calls one service and owns
only its retry policy."""
import requests
from celery import shared_task

from apps.metrics.alerts import WebhookFailed, alert_notification_send


@shared_task(
    autoretry_for=(requests.RequestException, WebhookFailed),
    retry_backoff=True,  # 1 s, 2 s, 4 s, ... with jitter
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=6,
    acks_late=True,
)
def alert_notify(alert_id: int, event: str = "opened") -> bool:
    """Deliver one alert notification ("opened" or "resolved") to its webhook."""
    return alert_notification_send(alert_id=alert_id, event=event)


@shared_task(acks_late=True)
def budget_reservations_expire() -> dict:
    """Beat, every minute: release expired budget reservations, end exhaustion of months
    that are over, resolve budget alerts of ended periods."""
    from apps.metrics.budgets import budget_reservations_expire as expire

    return expire()


@shared_task(acks_late=True)
def metrics_rollup() -> int:
    """Beat, every minute, and enqueued after each ingest commit: fold pending call events
    into the per-minute rollups. Idempotent and safe to run in several workers at once."""
    from apps.metrics.rollups import rollup_all_pending

    return rollup_all_pending()


@shared_task(acks_late=True)
def metrics_events_purge() -> int:
    """Beat, daily: delete raw call events past SHIPWAY_EVENT_RETENTION_DAYS (rollups kept)."""
    from apps.metrics.rollups import call_events_purge

    return call_events_purge()


@shared_task(acks_late=True)
def slo_evaluate() -> int:
    """Beat, every minute: open SLO alerts on breaches, resolve them on recovery. Returns
    how many alerts opened or resolved; running twice in a minute does nothing new."""
    from apps.metrics.slo import slo_evaluate_locked

    return len(slo_evaluate_locked())
