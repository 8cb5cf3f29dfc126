"""Settings for the test suite: the real settings with a throwaway secret and a fast
password hasher. DATABASE_URL / CELERY_BROKER_URL still choose Postgres and Redis."""
import os

os.environ.setdefault("SECRET_KEY", "test-only-not-a-secret")

from controlplane.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Static files come from the finders in tests; there is no collectstatic output.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
