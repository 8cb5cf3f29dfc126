"""Per-credential rate limits for the polled endpoints, as a fixed-window counter.

DRF's SimpleRateThrottle keeps every request's timestamp in the cache and rewrites the whole
list on each request, so at thousands of polls a minute each poll pickles thousands of
floats. A counter per (scope, credential, window) costs one `add` and one `incr`."""
import time

from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'6000/min' -> (6000, 60). The unit's first letter counts, as in DRF."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class FixedWindowThrottle(BaseThrottle):
    """Allows `rate` requests per window for each credential (request.auth's pk, else the
    client address). `scope` names the rate in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]."""

    scope: str = ""

    def __init__(self) -> None:
        self.limit, self.period = parse_rate(api_settings.DEFAULT_THROTTLE_RATES[self.scope])
        self._wait = 0.0

    def allow_request(self, request, view) -> bool:
        key = getattr(request, "auth", None)
        ident = key.pk if getattr(key, "pk", None) is not None else self.get_ident(request)
        now = time.time()
        window = int(now // self.period)
        cache_key = f"throttle:{self.scope}:{ident}:{window}"
        # add() is a no-op when the key exists; incr() is atomic on Redis and memcached and
        # under the local-memory cache's lock, so concurrent requests never share a count.
        cache.add(cache_key, 0, timeout=self.period + 1)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # evicted between add and incr
            cache.set(cache_key, 1, timeout=self.period + 1)
            count = 1
        if count > self.limit:
            self._wait = (window + 1) * self.period - now
            return False
        return True

    def wait(self) -> float:
        return max(self._wait, 1.0)
