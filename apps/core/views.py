"""Health endpoints for load balancers and orchestrators."""
import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

logger = logging.getLogger(__name__)


@never_cache
def healthz(request):
    """The process is up (liveness): no dependency is touched."""
    return JsonResponse({"status": "ok"})


def _broker_ok() -> tuple[bool, str]:
    from controlplane.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "embedded (filesystem)" if settings.EMBEDDED_BROKER else "reachable"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readyz.broker_unreachable %s", type(exc).__name__)
        return False, f"unreachable: {type(exc).__name__}"


@never_cache
def readyz(request):
    """Database and broker reachable (readiness)."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"unreachable: {type(exc).__name__}"
    broker_ok, checks["broker"] = _broker_ok()
    ok = checks["database"] == "ok" and broker_ok
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
