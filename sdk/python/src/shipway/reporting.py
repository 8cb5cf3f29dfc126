"""``CallReporter``: reports LLM calls to Shipway (``POST {base_url}/api/v1/events``).

``record()`` only appends an event to a bounded in-memory buffer: it never blocks on
the network and never raises into the caller's request path. A background daemon
thread sends the buffer in batches, every ``flush_interval`` seconds or as soon as
``batch_size`` events are waiting. When the buffer is full the OLDEST event is dropped
(and counted): recent telemetry is worth more than old, and memory stays bounded.

Delivery is at-least-once. Every event carries an ``event_id`` made here, at record
time, and Shipway stores an event_id once (``ON CONFLICT (event_id) DO NOTHING``), so
re-sending a batch whose outcome is unknown (a timeout, a dropped connection, a 5xx
after the commit) is safe: the server answers the stored events as ``duplicate``.
Network errors, 408, 429 and 5xx keep the batch and retry it with exponential backoff
(capped; ``Retry-After`` honoured). Any other 4xx means the server will never take
these events: they are counted as ``rejected`` and dropped, and the server's reason is
logged (never the SDK key).

Usable on its own, or through ``ShipwayClient.report_call``.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import email.utils
import logging
import math
import random
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Self

import requests

logger = logging.getLogger("shipway")

OUTCOMES = frozenset(
    {"success", "error", "timeout", "blocked", "budget_blocked", "fallback"}
)
MAX_BATCH = 1000  # the server's limit per request
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 2.0
DEFAULT_MAX_BUFFER = 10_000
DEFAULT_MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 300.0
EXIT_FLUSH_TIMEOUT = 2.0
_BASE_BACKOFF = 0.5
_STAT_KEYS = (
    "recorded",
    "sent",
    "duplicates",
    "rejected",
    "dropped",
    "retries",
    "invalid",
)


class _Retry(Exception):
    """The batch was not (known to be) stored: keep it and send it again later."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


_open_reporters: weakref.WeakSet[CallReporter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # The sender is a daemon thread: without this, a short-lived script that never calls
    # close() would lose its last events. Bounded, so exit is never held up for long.
    for reporter in list(_open_reporters):
        try:
            reporter.flush(timeout=EXIT_FLUSH_TIMEOUT)
        except Exception:  # never fail an interpreter exit
            logger.exception("shipway: could not flush call events at exit")


def _timestamp(value: dt.datetime | str | None) -> str:
    if value is None:
        return dt.datetime.now(dt.UTC).isoformat()
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)  # a naive time is taken as UTC
    return value.isoformat()


class CallReporter:
    """Buffers call events and sends them to Shipway from a background thread.

    ``stats``: ``recorded`` (accepted into the buffer), ``sent`` (stored by the server:
    acknowledged as new or duplicate), ``duplicates`` (the part of ``sent`` the server
    had already: a retry after an unknown outcome), ``rejected`` (refused by the
    server, not retried), ``dropped`` (pushed out of a full buffer, recorded after
    ``close()``, or undelivered at close), ``retries`` (failed sends that will be
    retried), ``invalid`` (not recorded: no feature or model).
    """

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        timeout: float = 10.0,
    ) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/events"
        self._sdk_key = sdk_key
        self._batch_size = max(1, min(int(batch_size), MAX_BATCH))
        self._flush_interval = max(0.01, float(flush_interval))
        self._max_buffer = max(1, int(max_buffer))
        self._max_backoff = max(0.0, float(max_backoff))
        self._timeout = timeout
        # _lock guards the buffer, the in-flight batch, the backoff state and the stats;
        # _wake tells the sender that there is something to do.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._inflight: list[dict[str, Any]] | None = (
            None  # a batch waiting to be retried
        )
        self._failures = 0
        self._retry_at = 0.0  # time.monotonic() before which no send is attempted
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        # One sender at a time (the thread or a caller's flush): requests.Session is not
        # thread-safe, and a batch must not be sent twice at once.
        self._send_lock = threading.Lock()
        self._session = requests.Session()
        self._thread: threading.Thread | None = None
        self._closed = False
        _open_reporters.add(self)

    def __repr__(self) -> str:
        return f"CallReporter({self._url!r}, waiting={self.pending})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ the caller's side

    def record(
        self,
        *,
        feature: str,
        model: str,
        latency_ms: float,
        prompt_version: str | None = None,
        arm: str | None = None,
        input_tokens: int = 0,
        cached_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | float | str | None = None,
        cache_hit: bool = False,
        outcome: str = "success",
        error_type: str | None = None,
        user_key: str | None = None,
        request_id: str | None = None,
        occurred_at: dt.datetime | str | None = None,
    ) -> str | None:
        """Buffer one call event; returns its ``event_id`` (``None`` when not recorded).

        Never blocks on the network and never raises. ``user_key`` should be a hash of
        the user, not a raw identifier. ``occurred_at`` defaults to now (UTC); a naive
        datetime is taken as UTC.
        """
        try:
            if not feature or not model or not isinstance(feature, str):
                with self._lock:
                    self._stats["invalid"] += 1
                logger.warning(
                    "shipway: call event not recorded: feature and model are required"
                )
                return None
            event: dict[str, Any] = {
                "event_id": uuid.uuid4().hex,
                "feature": feature,
                "prompt_version": prompt_version or "",
                "arm": arm or "stable",
                "model": str(model),
                "latency_ms": latency_ms,
                "input_tokens": input_tokens,
                "cached_tokens": cached_tokens,
                "output_tokens": output_tokens,
                "cache_hit": bool(cache_hit),
                "outcome": outcome,
                "occurred_at": _timestamp(occurred_at),
            }
            if cost_usd is not None:
                # A string keeps a Decimal exact on the wire (the server accepts both).
                event["cost_usd"] = str(cost_usd)
            for name, value in (
                ("error_type", error_type),
                ("user_key", user_key),
                ("request_id", request_id),
            ):
                if value:
                    event[name] = str(value)
            with self._lock:
                if self._closed:
                    self._stats["dropped"] += 1
                    return None
                if len(self._buffer) >= self._max_buffer:
                    self._buffer.popleft()
                    self._stats["dropped"] += 1
                self._buffer.append(event)
                self._stats["recorded"] += 1
                if len(self._buffer) >= self._batch_size:
                    self._wake.notify()
                start = self._thread is None
                if start:
                    self._thread = threading.Thread(
                        target=self._run, name="shipway-call-reporter", daemon=True
                    )
            if start:
                self._thread.start()
            return event["event_id"]
        except Exception:  # telemetry must never break the caller's request
            logger.exception("shipway: could not record a call event")
            return None

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    @property
    def pending(self) -> int:
        """Events not yet delivered: buffered plus a batch waiting for a retry."""
        with self._lock:
            return len(self._buffer) + len(self._inflight or ())

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything buffered now, from the calling thread (e.g. at shutdown).

        Retries within ``timeout`` seconds (honouring backoff and ``Retry-After``).
        True when nothing is left to send.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if not self._send_lock.acquire(timeout=max(0.0, remaining)):
                return self.pending == 0
            try:
                with self._lock:
                    wait = self._retry_at - time.monotonic()
                if wait <= 0:
                    while self._send_one():
                        if time.monotonic() >= deadline:
                            break
                    with self._lock:
                        wait = self._retry_at - time.monotonic()
            finally:
                self._send_lock.release()
            if self.pending == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(max(wait, 0.01), remaining))

    def close(self, timeout: float = 10.0) -> None:
        """Flush (within ``timeout``), then stop the sender thread. Safe to call twice.

        Events still undelivered after that are counted as ``dropped``.
        """
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        _open_reporters.discard(self)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1)
        with self._lock:
            left = len(self._buffer) + len(self._inflight or ())
            if left:
                self._stats["dropped"] += left
                self._buffer.clear()
                self._inflight = None
        if left:
            logger.warning(
                "shipway: %d call events could not be delivered before close", left
            )
        with self._send_lock:
            self._session.close()

    # ------------------------------------------------------------ the sender

    def _run(self) -> None:
        # Clock for the flush interval: the oldest waiting event has waited at most
        # about flush_interval seconds before a send is attempted.
        next_flush = time.monotonic() + self._flush_interval
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    if self._inflight is not None or self._buffer:
                        if self._inflight is not None:
                            ready_at = self._retry_at  # a batch awaits its retry
                        elif len(self._buffer) >= self._batch_size:
                            ready_at = max(now, self._retry_at)
                        else:
                            ready_at = max(next_flush, self._retry_at)
                        if now >= ready_at:
                            break
                        self._wake.wait(ready_at - now)
                    else:
                        next_flush = now + self._flush_interval
                        self._wake.wait(self._flush_interval)
                if self._closed:
                    return
            try:
                with self._send_lock:
                    # Send full batches back to back; a partial one ends this round.
                    while self._send_one(full_only=True):
                        pass
                    if time.monotonic() >= next_flush:
                        self._send_one()
                        next_flush = time.monotonic() + self._flush_interval
            except Exception:  # the sender must outlive any one bad answer
                logger.exception("shipway: call reporter failed to send")

    def _send_one(self, *, full_only: bool = False) -> bool:
        """Send one batch (the one awaiting a retry first). Caller holds _send_lock.

        True when a batch was sent and there may be more to send now.
        """
        with self._lock:
            if time.monotonic() < self._retry_at:
                return False
            batch = self._inflight
            if batch is None:
                if not self._buffer or (
                    full_only and len(self._buffer) < self._batch_size
                ):
                    return False
                count = min(self._batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(count)]
                self._inflight = batch
        try:
            self._post(batch)
        except _Retry as retry:
            with self._lock:
                self._stats["retries"] += 1
                self._failures += 1
                backoff = min(
                    self._max_backoff, _BASE_BACKOFF * 2 ** (self._failures - 1)
                )
                # Jitter spreads the retries of many service instances after an outage.
                delay = (
                    retry.delay
                    if retry.delay is not None
                    else backoff * random.uniform(0.5, 1.0)
                )
                self._retry_at = time.monotonic() + delay
            return False
        except Exception:
            # Not a network problem (e.g. a value that is not JSON): sending it again
            # would fail the same way, so the batch is dropped, not retried forever.
            logger.exception(
                "shipway: could not send %d call events; dropped", len(batch)
            )
            with self._lock:
                self._stats["rejected"] += len(batch)
        with self._lock:
            self._inflight = None
            self._failures = 0
            self._retry_at = 0.0
            return bool(self._buffer)

    def _redact(self, text: str) -> str:
        return text.replace(self._sdk_key, "***") if self._sdk_key else text

    def _post(self, batch: list[dict[str, Any]]) -> None:
        """POST one batch; update the stats, or raise ``_Retry`` to keep the batch."""
        headers = {
            "Authorization": f"Bearer {self._sdk_key}",
            "Accept": "application/json",
        }
        try:
            response = self._session.post(
                self._url,
                json={"events": batch},
                headers=headers,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            # The outcome is unknown (the server may have stored the batch): re-sending
            # is safe, the client-made event_ids make the server skip what it has.
            logger.warning(
                "shipway: sending %d call events to %s failed: %s; will retry",
                len(batch),
                self._url,
                self._redact(str(exc)),
            )
            raise _Retry(None) from None
        status = response.status_code
        if status in (408, 429) or status >= 500:
            delay = _retry_after(response.headers.get("Retry-After"))
            logger.warning(
                "shipway: events endpoint answered HTTP %s to %d call events; retrying",
                status,
                len(batch),
            )
            raise _Retry(delay)
        try:
            body = response.json()
        except ValueError:
            body = None
        if status < 300:
            counts = body.get("counts") if isinstance(body, dict) else None
            if not isinstance(
                counts, dict
            ):  # not Shipway's answer shape: count as sent
                counts = {"accepted": len(batch), "duplicate": 0, "rejected": 0}
            self._count(counts, body if isinstance(body, dict) else {})
            return
        # 4xx other than 429: these events will never be taken; drop them, say why.
        details = body.get("error") if isinstance(body, dict) else None
        details = details if isinstance(details, dict) else {}
        listing = details.get("details")
        if (
            status == 400
            and isinstance(listing, dict)
            and isinstance(listing.get("counts"), dict)
        ):
            self._count(listing["counts"], listing)  # all_events_rejected
            return
        with self._lock:
            self._stats["rejected"] += len(batch)
        logger.warning(
            "shipway: events endpoint refused %d call events (HTTP %s %s): %s",
            len(batch),
            status,
            self._redact(str(details.get("code") or "")),
            self._redact(str(details.get("message") or response.reason or "")),
        )

    def _count(self, counts: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        def number(name: str) -> int:
            value = counts.get(name)
            return value if isinstance(value, int) else 0

        with self._lock:
            # Delivered: stored now, or stored already by an earlier (unanswered) try.
            self._stats["sent"] += number("accepted") + number("duplicate")
            self._stats["duplicates"] += number("duplicate")
            self._stats["rejected"] += number("rejected")
        rejected = body.get("rejected")
        if number("rejected") and isinstance(rejected, list):
            first = rejected[0] if rejected and isinstance(rejected[0], Mapping) else {}
            logger.warning(
                "shipway: Shipway rejected %d call events, e.g. %s",
                number("rejected"),
                self._redact(str(first.get("reasons"))),
            )
