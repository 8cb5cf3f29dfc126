"""The Python SDK's call reporting (`ShipwayClient.report_call` / `CallReporter`) against the real
`POST /api/v1/events` on a live server: batches, the answer shape the SDK counts, costs computed
from the price table."""
import datetime as dt
import logging

import pytest

from apps.core.services import sdk_key_create
from apps.metrics.models import CallEvent
from apps.metrics.pricing import PriceBook
from apps.metrics.tasks import metrics_rollup
from shipway import CallReporter, ShipwayClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FEATURE = "ticket-summarizer"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)


@pytest.fixture
def secret(release, envs):
    _, secret = sdk_key_create(environment=envs["production"], name="service",
                               scopes=["config:read", "events:write"])
    return secret


def test_report_call__1200_calls__all_stored_with_fields_and_costs(live_server, secret):
    client = ShipwayClient(live_server.url, secret, poll=False, timeout=10)
    evaluation = client.evaluate(FEATURE, {"targetingKey": "user-1"})
    assert evaluation.value["prompt_version"] == "1.0.0"
    ids = {}
    for i in range(1200):
        fallback = i % 10 == 0
        event_id = client.report_call(
            FEATURE, evaluation, latency_ms=100 + i, input_tokens=1000 + i, cached_tokens=i % 500,
            output_tokens=50 + i % 7, model="gpt-4o" if fallback else None,
            outcome="fallback" if fallback else "success", user_key=f"u{i % 30}", request_id=f"req-{i}",
        )
        ids[event_id] = i
    client.close()
    stats = client.reporter.stats
    assert stats == {"recorded": 1200, "sent": 1200, "duplicates": 0, "rejected": 0, "dropped": 0,
                     "retries": 0, "invalid": 0}

    events = list(CallEvent.objects.select_related("feature", "environment"))
    assert len(events) == 1200 and set(ids) == {e.event_id for e in events}
    prices = PriceBook.load()
    for event in events:
        i = ids[event.event_id]
        fallback = i % 10 == 0
        assert (event.feature.key, event.environment.key) == (FEATURE, "production")
        assert (event.prompt_version, event.arm, event.unknown_version) == ("1.0.0", "stable", False)
        assert event.model == ("gpt-4o" if fallback else "gpt-4o-mini")
        assert event.outcome == ("fallback" if fallback else "success")
        assert (event.latency_ms, event.input_tokens, event.cached_tokens, event.output_tokens) == (
            100 + i, 1000 + i, i % 500, 50 + i % 7)
        assert (event.user_key, event.request_id) == (f"u{i % 30}", f"req-{i}")
        assert abs(event.occurred_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
        assert event.cost_source == "computed"
        assert event.cost_usd == prices.cost(event.model, event.input_tokens, event.cached_tokens,
                                             event.output_tokens, event.occurred_at) > 0


def test_reporter__rejected_and_duplicate_answers_counted(live_server, secret, caplog):
    reporter = CallReporter(live_server.url, secret, flush_interval=60, timeout=10)
    reporter.record(feature="no-such-feature", model="gpt-4o", latency_ms=5)
    with caplog.at_level(logging.WARNING, logger="shipway"):
        assert reporter.flush(timeout=10) is True  # 400 all_events_rejected: not retried
    assert reporter.stats["rejected"] == 1 and reporter.stats["retries"] == 0
    assert "unknown_feature" in caplog.text and secret not in caplog.text

    # A batch whose answer was lost is sent again: the server stores it once.
    event_id = reporter.record(feature=FEATURE, model="gpt-4o-mini", latency_ms=5, prompt_version="1.0.0",
                               input_tokens=10, output_tokens=2)
    batch = list(reporter._buffer)
    reporter.flush(timeout=10)
    reporter._post(batch)
    reporter.close()
    assert CallEvent.objects.filter(event_id=event_id).count() == 1
    assert (reporter.stats["sent"], reporter.stats["duplicates"]) == (2, 1)


def test_budget_blocked__reported_with_no_cost(live_server, secret):
    client = ShipwayClient(live_server.url, secret, poll=False, timeout=10)
    evaluation = client.evaluate(FEATURE, {"targetingKey": "user-1"})
    client.report_call(FEATURE, evaluation, latency_ms=0, outcome="budget_blocked", error_type="exhausted")
    client.close()
    event = CallEvent.objects.get()
    assert (event.outcome, event.error_type, event.input_tokens) == ("budget_blocked", "exhausted", 0)
    assert event.cost_usd == 0
