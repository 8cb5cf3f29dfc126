"""Django settings. Short on purpose: integrations live in their own modules
(`celery_settings`, `api_settings`) and everything is read through `controlplane.env`."""
from django.core.exceptions import ImproperlyConfigured

from controlplane.env import BASE_DIR, VAR_DIR, env, secret

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off. "
            "For local use run `make run`, which sets DEBUG=1."
        )
    SECRET_KEY = "insecure-dev-only-key"  # noqa: S105 - DEBUG only, never served in production

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = False

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "apps.core",
    "apps.prompts",
    "apps.metrics",
    "apps.reviews",
    "apps.rollouts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.core.middleware.ShipwayErrorMiddleware",
    "apps.core.middleware.RejectNulMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.shipway",
            ],
        },
    }
]

VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'shipway.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web server and the Celery worker share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
# Persistent connections for both engines: opening one (and, on SQLite, the WAL pragma) per
# request would cost more than a config poll itself.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

SHIPWAY_POLL_INTERVAL_SECONDS = env.int("SHIPWAY_POLL_INTERVAL_SECONDS", default=5)
# A JSON body may be as large as POST /api/v1/events allows (1000 events of ~4 KB); Django's
# default (2.5 MB) answered bigger, valid batches with an HTML 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
# apps/metrics: raw call events older than this are deleted (rollups are kept)
SHIPWAY_EVENT_RETENTION_DAYS = env.int("SHIPWAY_EVENT_RETENTION_DAYS", default=30)
# SLO alerts: the window each evaluation looks at, and the fewest calls it takes to judge
SHIPWAY_SLO_WINDOW_MINUTES = env.int("SHIPWAY_SLO_WINDOW_MINUTES", default=15)
SHIPWAY_SLO_MIN_CALLS = env.int("SHIPWAY_SLO_MIN_CALLS", default=20)
# Alerts: the default webhook (Slack-compatible JSON) and the base URL their links point to
SHIPWAY_ALERT_WEBHOOK_URL = env.str("SHIPWAY_ALERT_WEBHOOK_URL", default="")
SHIPWAY_BASE_URL = env.str("SHIPWAY_BASE_URL", default="")
# Alert webhooks to loopback / private / link-local addresses are refused unless this is set.
SHIPWAY_WEBHOOK_ALLOW_PRIVATE = env.bool("SHIPWAY_WEBHOOK_ALLOW_PRIVATE", default=False)

from controlplane.api_settings import *  # noqa: E402,F403
from controlplane.celery_settings import *  # noqa: E402,F403
