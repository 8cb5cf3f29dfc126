"""The alerting channel shared by budget alerts and SLO alerts: open an alert once per
`dedupe_key`, resolve it, list the open ones, and deliver opened/resolved notifications to a
webhook (Slack-compatible JSON) from the Celery task `apps.metrics.tasks.alert_notify`.

A dedupe key identifies one episode: while an alert with that key exists, opening it again
does nothing. Resolving an alert frees its key (the stored key gets a `~r<id>` suffix) so the
next breach of the same SLO opens a new alert; budget keys carry their period and threshold,
so they fire once per period whatever happens."""
import hashlib
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from apps.core.models import Environment
from apps.metrics.models import Alert, Budget
from apps.prompts.models import Feature

logger = logging.getLogger(__name__)

DEDUPE_KEY_MAX = 200
WEBHOOK_TIMEOUT_SECONDS = 10


class WebhookFailed(Exception):
    """The webhook answered with a non-2xx status; the task retries it with backoff."""


def dedupe_key_fit(key: str) -> str:
    """Keys longer than the column (a long hashed user key, say) keep a readable prefix and
    end with a digest of the whole key, so they stay unique."""
    if len(key) <= DEDUPE_KEY_MAX - 24:  # room for the `~r<id>` suffix written on resolve
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"{key[:DEDUPE_KEY_MAX - 24 - 33]}#{digest}"


def _notify_on_commit(alert_id: int, event: str) -> None:
    from apps.metrics.tasks import alert_notify  # tasks import this module

    alert_notify.delay_on_commit(alert_id, event)


def alert_open(
    *,
    kind: str,
    feature: Feature,
    environment: Environment | None = None,
    dedupe_key: str,
    title: str,
    figures: dict,
) -> Alert | None:
    """Open an alert unless one with `dedupe_key` exists (then None). The notification is
    enqueued when the surrounding transaction commits."""
    dedupe_key = dedupe_key_fit(dedupe_key)
    if Alert.objects.filter(dedupe_key=dedupe_key).exists():
        return None
    try:
        # Race: two callers crossing the same threshold at once. The unique dedupe_key lets
        # exactly one insert win; the savepoint keeps the caller's transaction usable.
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind, feature=feature, environment=environment, dedupe_key=dedupe_key,
                title=title[:300], figures=figures,
            )
    except IntegrityError:
        return None
    logger.info("alert.opened", extra={"alert_id": alert.id, "kind": kind, "feature": feature.key})
    _notify_on_commit(alert.id, "opened")
    return alert


def alert_resolve(*, dedupe_key: str, figures: dict | None = None) -> bool:
    """Resolve the open alert with `dedupe_key`; False if there is none. `figures`, when
    given, are kept under `figures["resolved"]` beside the figures it opened with."""
    dedupe_key = dedupe_key_fit(dedupe_key)
    with transaction.atomic():
        # Row lock: a concurrent resolve of the same alert must not notify twice.
        alert = Alert.objects.select_for_update().filter(dedupe_key=dedupe_key, resolved_at__isnull=True).first()
        if alert is None:
            return False
        alert.resolved_at = timezone.now()
        if figures is not None:
            alert.figures = {**alert.figures, "resolved": figures}
        alert.dedupe_key = f"{dedupe_key}~r{alert.id}"  # frees the key for the next episode
        alert.save(update_fields=["resolved_at", "figures", "dedupe_key"])
    logger.info("alert.resolved", extra={"alert_id": alert.id})
    _notify_on_commit(alert.id, "resolved")
    return True


def alerts_open(*, feature: Feature | None = None, environment: Environment | None = None) -> QuerySet[Alert]:
    """Open alerts (not resolved), newest first, with feature and environment joined."""
    qs = Alert.objects.filter(resolved_at__isnull=True).select_related("feature", "environment")
    if feature is not None:
        qs = qs.filter(feature=feature)
    if environment is not None:
        qs = qs.filter(environment=environment)
    return qs.order_by("-opened_at", "-id")


def _webhook_url_for(alert: Alert) -> str:
    url = Budget.objects.filter(feature_id=alert.feature_id).values_list("webhook_url", flat=True).first()
    return url or getattr(settings, "SHIPWAY_ALERT_WEBHOOK_URL", "") or ""


def alert_payload(alert: Alert, event: str) -> dict[str, Any]:
    """Slack reads `text`; other receivers read the structured fields."""
    where = f" in {alert.environment.key}" if alert.environment_id else ""
    verb = "RESOLVED" if event == "resolved" else "ALERT"
    base = getattr(settings, "SHIPWAY_BASE_URL", "").rstrip("/")
    link = f"{base}/features/{alert.feature.key}/" if base else f"/features/{alert.feature.key}/"
    return {
        "text": f"[{verb}] {alert.title} ({alert.feature.key}{where}) {link}",
        "event": event,
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "feature": alert.feature.key,
            "environment": alert.environment.key if alert.environment_id else None,
            "title": alert.title,
            "figures": alert.figures,
            "opened_at": alert.opened_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "url": link,
        },
    }


def webhook_target_refusal(url: str) -> str | None:
    """Why `url` may not be called, or None. Webhook URLs are typed by people with budget
    rights, so without SHIPWAY_WEBHOOK_ALLOW_PRIVATE a URL whose host is (or resolves to) a
    loopback, private, link-local or otherwise non-public address is refused: the server
    must not become a way to reach internal services. (A name that resolves differently
    between this check and the request is not covered.)"""
    if getattr(settings, "SHIPWAY_WEBHOOK_ALLOW_PRIVATE", False):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443,
                                                                type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return None  # unresolvable now: let the request fail and be retried
    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            return f"{parts.hostname} is a non-public address ({address}); set SHIPWAY_WEBHOOK_ALLOW_PRIVATE to allow"
    return None


def alert_notification_send(*, alert_id: int, event: str) -> bool:
    """POST one notification. Raises (requests exceptions or WebhookFailed) so the task can
    retry; True when delivered or when there is nowhere to deliver it."""
    alert = Alert.objects.select_related("feature", "environment").filter(pk=alert_id).first()
    if alert is None:
        return False  # deleted with its feature meanwhile: nothing to say
    Alert.objects.filter(pk=alert.pk).update(notify_attempts=F("notify_attempts") + 1)
    url = _webhook_url_for(alert)
    if url:
        # The URL itself is a secret (Slack embeds the token in it): log the host only.
        host = urlsplit(url).hostname or "?"
        refusal = webhook_target_refusal(url)
        if refusal:
            logger.warning("alert.notify_refused", extra={"alert_id": alert.id, "host": host, "reason": refusal})
            return False  # not retried: the URL will not become acceptable by waiting
        # No redirects: a public URL answering 307 to an internal address would get the POST
        # after the address check (a 3xx counts as a failure, like any non-2xx).
        response = requests.post(url, json=alert_payload(alert, event), timeout=WEBHOOK_TIMEOUT_SECONDS,
                                 allow_redirects=False)
        if not 200 <= response.status_code < 300:
            logger.warning("alert.notify_failed", extra={"alert_id": alert.id, "host": host,
                                                         "status": response.status_code})
            raise WebhookFailed(f"webhook at {host} answered {response.status_code}")
        logger.info("alert.notified", extra={"alert_id": alert.id, "host": host, "event": event})
    Alert.objects.filter(pk=alert.pk).update(notified_at=timezone.now())
    return True
