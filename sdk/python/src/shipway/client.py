"""``ShipwayClient``: polls the environment's config and evaluates features locally.

The client keeps the last known-good config in memory (and optionally on disk) and keeps
serving it whenever Shipway is unreachable or answers badly (DESIGN invariant 5). It
never logs the SDK key. ``report_call`` reports LLM calls through a ``CallReporter``
(``shipway.reporting``), started on first use.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Self

import requests

from .budget import BudgetExceeded, BudgetInfo, budget_info, check_tokens
from .cache import load_cache, save_cache
from .evaluation import (
    ERROR,
    FLAG_NOT_FOUND,
    PROVIDER_NOT_READY,
    Evaluation,
    evaluate_feature,
    evaluate_flag,
)
from .prompts import PreparedPrompt, prepare_prompt
from .reporting import CallReporter

logger = logging.getLogger("shipway")

DEFAULT_POLL_INTERVAL = 5.0
MIN_POLL_INTERVAL = 1.0
GENERAL = "GENERAL"
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError)


class ShipwayAuthError(RuntimeError):
    """Shipway refused the SDK key and the client has no config to fall back on."""


class ShipwayClient:
    """Fetches ``GET {base_url}/api/v1/config``; answers evaluations from it locally."""

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        timeout: float = 5.0,
        poll: bool = True,
        cache_path: str | None = None,
        reporting: Mapping[str, Any] | None = None,
    ) -> None:
        """``reporting``: keyword arguments for the ``CallReporter`` (``batch_size``,
        ``flush_interval``, ``max_buffer``, ``max_backoff``, ``timeout``)."""
        self._base_url = base_url
        self._url = base_url.rstrip("/") + "/api/v1/config"
        self._reporting = dict(reporting or {})
        self._reporter: CallReporter | None = None
        self._reporter_lock = threading.Lock()
        self._sdk_key = sdk_key
        self._timeout = timeout
        self._cache_path = cache_path
        self._config: dict[str, Any] | None = None
        self._etag: str | None = None
        self._refreshed_once = False
        # requests.Session is not thread-safe; refreshes from the poller and callers
        # serialise.
        self._refresh_lock = threading.Lock()
        self._session = requests.Session()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._budget_violations: dict[str, int] = {}
        if cache_path:
            cached = load_cache(cache_path)
            if cached is not None:
                self._config, self._etag = cached
        self.refresh()
        if poll:
            self._thread = threading.Thread(
                target=self._poll_loop, name="shipway-config-poller", daemon=True
            )
            self._thread.start()

    def __repr__(self) -> str:
        return f"ShipwayClient({self._url!r}, revision={self.revision!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def config(self) -> dict[str, Any] | None:
        """A copy of the last known-good config, or ``None`` before the first one."""
        config = self._config
        return copy.deepcopy(config) if config is not None else None

    @property
    def revision(self) -> int | None:
        config = self._config
        return config.get("revision") if config is not None else None

    @property
    def poll_interval(self) -> float:
        config = self._config or {}
        try:
            interval = float(config.get("poll_interval_seconds", DEFAULT_POLL_INTERVAL))
        except (TypeError, ValueError):
            interval = DEFAULT_POLL_INTERVAL
        return max(MIN_POLL_INTERVAL, interval)

    def _redact(self, text: str) -> str:
        return text.replace(self._sdk_key, "***") if self._sdk_key else text

    def _warn(self, message: str, *args: object) -> None:
        # Formatted here so the redaction sees the final text; logged as one argument
        # so a '%' in a URL or error cannot break the logging call.
        text = self._redact(message % args)
        logger.warning(
            "%s; serving the last known-good config (revision %s)", text, self.revision
        )

    def refresh(self) -> bool:
        """Fetch the config now. True when the client holds the server's current config.

        Raises ``ShipwayAuthError`` only when the very first refresh is refused and no
        config (not even a cached one) is known: a misconfigured key should fail loudly
        at start-up, but never take a running service down.
        """
        with self._refresh_lock:
            first = not self._refreshed_once
            self._refreshed_once = True
            headers = {
                "Authorization": f"Bearer {self._sdk_key}",
                "Accept": "application/json",
            }
            if self._etag:
                headers["If-None-Match"] = self._etag
            try:
                response = self._session.get(
                    self._url, headers=headers, timeout=self._timeout
                )
            except requests.RequestException as exc:
                self._warn("shipway: config fetch from %s failed: %s", self._url, exc)
                return False
            if response.status_code == 304:
                return self._config is not None
            if response.status_code in (401, 403):
                if first and self._config is None:
                    raise ShipwayAuthError(
                        f"Shipway refused the SDK key ({response.status_code}) "
                        f"at {self._url}"
                    )
                self._warn(
                    "shipway: SDK key refused (%s) by %s",
                    response.status_code,
                    self._url,
                )
                return False
            if response.status_code != 200:
                self._warn("shipway: config fetch got HTTP %s", response.status_code)
                return False
            try:
                config = response.json()
            except ValueError:
                self._warn("shipway: config response is not valid JSON")
                return False
            if not isinstance(config, dict) or not isinstance(
                config.get("features", {}), dict
            ):
                self._warn("shipway: config response has an unexpected shape")
                return False
            self._store(config, response.headers.get("ETag"))
            return True

    def _store(self, config: dict[str, Any], etag: str | None) -> None:
        # One reference swap: evaluations in other threads see the old or the new
        # config.
        self._config = config
        self._etag = etag
        if self._cache_path:
            try:
                save_cache(self._cache_path, config, etag)
            except OSError as exc:
                logger.warning(
                    "shipway: could not write config cache %s: %s",
                    self._cache_path,
                    exc,
                )

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any one bad answer
                logger.exception("shipway: config poll failed")

    def close(self) -> None:
        """Flush and stop the call reporter, stop polling, release the HTTP session.

        Safe to call twice."""
        with self._reporter_lock:
            reporter = self._reporter
        if reporter is not None:
            reporter.close()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1)
        with self._refresh_lock:
            self._session.close()

    def _lookup(
        self, config: Mapping | None, section: str, key: str
    ) -> tuple[Mapping | None, Evaluation | None]:
        if config is None:
            return None, Evaluation(
                None,
                ERROR,
                "off",
                PROVIDER_NOT_READY,
                "no config fetched or cached yet",
            )
        entry = (config.get(section) or {}).get(key)
        if entry is None:
            return None, Evaluation(
                None, ERROR, "off", FLAG_NOT_FOUND, f"unknown key {key!r}"
            )
        return entry, None

    def evaluate(self, feature_key: str, context: Mapping) -> Evaluation:
        """Evaluate a feature for ``context``; never raises for a bad config."""
        config = self._config  # one snapshot, even if the poller swaps it meanwhile
        feature, failure = self._lookup(config, "features", feature_key)
        if failure is not None:
            return failure
        if not feature.get("salt"):
            # The salt defaults to the feature key (DESIGN, "Sticky bucketing").
            feature = {**feature, "salt": feature_key}
        segments = config.get("segments") or {}
        try:
            return evaluate_feature(feature, context, segments)
        # A malformed snapshot must not break the caller's request.
        except _MALFORMED as exc:
            return Evaluation(None, ERROR, "off", GENERAL, f"evaluation failed: {exc}")

    def evaluate_flag(self, flag_key: str, context: Mapping) -> Evaluation:
        """Evaluate a plain flag for ``context``; never raises for a bad config."""
        config = self._config
        flag, failure = self._lookup(config, "flags", flag_key)
        if failure is not None:
            return failure
        segments = config.get("segments") or {}
        try:
            return evaluate_flag(flag, context, segments)
        # A malformed snapshot must not break the caller's request.
        except _MALFORMED as exc:
            return Evaluation(None, ERROR, "off", GENERAL, f"evaluation failed: {exc}")

    def budget(self, feature_key: str) -> BudgetInfo:
        """The feature's budget as served: per-request token cap and ``exhausted``."""
        config = self._config
        feature = (config.get("features") or {}).get(feature_key) if config else None
        return budget_info(feature)

    def check_request_tokens(
        self,
        feature_key: str,
        tokens: int,
        evaluation: Evaluation | None = None,
        *,
        user_key: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Refuse a request before the LLM call.

        Raises ``BudgetExceeded`` when ``tokens`` is over the feature's per-request cap
        or its monthly budget is exhausted; each refusal is counted in
        ``stats["budget_violations"]``. Without a config nothing is refused (a service
        never stops because Shipway is unreachable). Given the ``evaluation`` that
        served the request, a refusal is also reported as a call with outcome
        ``budget_blocked`` (no tokens, no latency, ``error_type`` the reason).
        """
        try:
            check_tokens(feature_key, self.budget(feature_key), tokens)
        except BudgetExceeded as exc:
            with self._stats_lock:
                count = self._budget_violations.get(feature_key, 0) + 1
                self._budget_violations[feature_key] = count
            logger.warning("shipway: request refused by budget: %s", exc)
            if evaluation is not None:
                self.report_call(
                    feature_key,
                    evaluation,
                    latency_ms=0,
                    outcome="budget_blocked",
                    error_type=exc.reason,
                    user_key=user_key,
                    request_id=request_id,
                )
            raise

    @property
    def reporter(self) -> CallReporter:
        """The ``CallReporter`` behind ``report_call`` (made on first use)."""
        with self._reporter_lock:
            if self._reporter is None:
                options = {"timeout": self._timeout} | self._reporting
                self._reporter = CallReporter(self._base_url, self._sdk_key, **options)
                if self._stop.is_set():  # closed client: events are counted as dropped
                    self._reporter.close(timeout=0)
            return self._reporter

    def report_call(
        self,
        feature: str,
        evaluation: Evaluation | str | None = None,
        *,
        latency_ms: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        outcome: str = "success",
        model: str | None = None,
        prompt_version: str | None = None,
        arm: str | None = None,
        cost_usd: Decimal | float | str | None = None,
        cache_hit: bool = False,
        error_type: str | None = None,
        user_key: str | None = None,
        request_id: str | None = None,
        occurred_at: dt.datetime | str | None = None,
    ) -> str | None:
        """Report one LLM call (buffered, sent in the background); returns its event_id.

        ``evaluation`` is the ``Evaluation`` that served the call (its prompt version,
        arm and model are used unless given explicitly) or a prompt version string.
        ``model`` is the model actually called (e.g. a fallback model). Never raises;
        ``None`` when the event could not be recorded (no model known).
        """
        served: Mapping[str, Any] = {}
        if isinstance(evaluation, Evaluation):
            if isinstance(evaluation.value, Mapping):
                served = evaluation.value
            arm = arm or evaluation.arm
        elif isinstance(evaluation, str):
            prompt_version = prompt_version or evaluation
        return self.reporter.record(
            feature=feature,
            model=model or served.get("model"),
            latency_ms=latency_ms,
            prompt_version=prompt_version or served.get("prompt_version"),
            arm=arm,
            input_tokens=input_tokens,
            cached_tokens=cached_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            cache_hit=cache_hit,
            outcome=outcome,
            error_type=error_type,
            user_key=user_key,
            request_id=request_id,
            occurred_at=occurred_at,
        )

    @property
    def stats(self) -> dict[str, Any]:
        """Counters kept by this client: ``budget_violations`` per feature key."""
        with self._stats_lock:
            return {"budget_violations": dict(self._budget_violations)}

    def prompt(
        self, feature_key: str, context: Mapping, variables: Mapping[str, object]
    ) -> PreparedPrompt:
        """Evaluate ``feature_key`` and render the served prompt with ``variables``."""
        return prepare_prompt(self.evaluate(feature_key, context), variables)
