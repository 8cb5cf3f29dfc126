"""Celery settings. With CELERY_BROKER_URL unset Shipway runs in embedded mode: a real
worker and beat on kombu's filesystem transport under var/, never eager mode."""
from controlplane.env import VAR_DIR, env

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
EMBEDDED_BROKER = not CELERY_BROKER_URL
if EMBEDDED_BROKER:
    _queue_dir = VAR_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_queue_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        # Broadcast (control) exchanges: kombu's default is ./control, wherever the process runs.
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {
    "metrics-rollup": {"task": "apps.metrics.tasks.metrics_rollup", "schedule": 60.0},
    "metrics-events-purge": {"task": "apps.metrics.tasks.metrics_events_purge", "schedule": 24 * 3600.0},
    "budget-reservations-expire": {"task": "apps.metrics.tasks.budget_reservations_expire", "schedule": 60.0},
    "slo-evaluate": {"task": "apps.metrics.tasks.slo_evaluate", "schedule": 60.0},
}
