"""The real URLconf plus `/bench/bare`: a plain Django view returning constant bytes, the
same length as the config body (BENCH_BARE_BYTES), through the same middleware and server.
It is the ceiling the config poll is compared with."""
from django.http import HttpResponse
from django.urls import include, path

from controlplane.env import env
from controlplane.urls import handler404, handler500  # noqa: F401 - the real error handlers

_SIZE = max(env.int("BENCH_BARE_BYTES", default=4096), 16)
BARE_BODY = b'{"pad":"' + b"x" * (_SIZE - 10) + b'"}'


def bare(request):
    return HttpResponse(BARE_BODY, content_type="application/json")


# Last, so resolving it walks the whole real URLconf first: no head start over the config API.
urlpatterns = [
    path("", include("controlplane.urls")),
    path("bench/bare", bare, name="bench-bare"),
]
