"""Per-minute rollups: sums, outcomes, percentiles from merged histograms, idempotency, the
selectors others read, and retention of raw events."""
import datetime as dt
import random
import statistics
from decimal import Decimal

import pytest
import time_machine

from apps.metrics import histogram
from apps.metrics.ingest import call_events_ingest
from apps.metrics.models import CallEvent, CallRollup
from apps.metrics.rollups import call_events_purge, rollup_all_pending, rollup_pending
from apps.metrics.selectors import rollup_series, rollup_totals
from apps.metrics.tasks import metrics_events_purge, metrics_rollup

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 3, 10, 11, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _frozen_time(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)
    with time_machine.travel(NOW, tick=False):
        yield


def _ingest(env, events: list[dict]) -> None:
    result = call_events_ingest(environment_id=env.pk, events=events)
    assert not result.rejected, result.rejected


def _ev(i, *, at: dt.datetime, **kw) -> dict:
    return {"event_id": f"r-{i}", "feature": "ticket-summarizer", "prompt_version": "1.0.0", "arm": "stable",
            "model": "gpt-4o", "latency_ms": 100, "input_tokens": 2006, "cached_tokens": 1920,
            "output_tokens": 300, "occurred_at": at.isoformat()} | kw


def test_rollup__sums_and_outcomes_per_minute_and_key(feature, envs):
    env = envs["production"]
    _ingest(env, [
        _ev(1, at=T0 + dt.timedelta(seconds=5)),
        _ev(2, at=T0 + dt.timedelta(seconds=59), outcome="error", latency_ms=300, cache_hit=True),
        _ev(3, at=T0 + dt.timedelta(seconds=30), outcome="timeout", cost_usd="0.5"),
        _ev(4, at=T0 + dt.timedelta(seconds=31), outcome="blocked"),
        _ev(5, at=T0 + dt.timedelta(seconds=32), outcome="budget_blocked"),
        _ev(6, at=T0 + dt.timedelta(minutes=1), arm="canary", prompt_version="1.1.0"),  # next minute, other key
        _ev(7, at=T0 + dt.timedelta(seconds=10), model="gpt-4o-mini", input_tokens=10, cached_tokens=0,
            output_tokens=5),
    ])
    assert rollup_pending() == 7
    rows = {(r.minute, r.arm, r.model): r for r in CallRollup.objects.all()}
    assert len(rows) == 3
    main = rows[(T0, "stable", "gpt-4o")]
    assert (main.calls, main.errors, main.blocked, main.budget_blocked, main.cache_hits) == (5, 2, 1, 1, 1)
    assert (main.input_tokens, main.cached_tokens, main.output_tokens) == (5 * 2006, 5 * 1920, 5 * 300)
    assert main.latency_sum_ms == 4 * 100 + 300
    assert main.cost_usd == 4 * Decimal("0.005615") + Decimal("0.5")
    assert sum(main.latency_histogram) == 5
    canary = rows[(T0 + dt.timedelta(minutes=1), "canary", "gpt-4o")]
    assert canary.prompt_version == "1.1.0" and canary.calls == 1
    assert not CallEvent.objects.filter(rolled_up=False).exists()


def test_rollup__idempotent(feature, envs):
    _ingest(envs["production"], [_ev(i, at=T0) for i in range(10)])
    assert rollup_pending() == 10
    before = list(CallRollup.objects.values())
    assert rollup_pending() == 0
    assert metrics_rollup() == 0  # the task too
    assert list(CallRollup.objects.values()) == before


def test_rollup__late_event__added_to_existing_minute(feature, envs):
    env = envs["production"]
    _ingest(env, [_ev(1, at=T0, latency_ms=10)])
    rollup_pending()
    _ingest(env, [_ev(2, at=T0 + dt.timedelta(seconds=20), latency_ms=30)])
    assert rollup_pending() == 1
    row = CallRollup.objects.get()
    assert row.calls == 2 and row.latency_sum_ms == 40 and sum(row.latency_histogram) == 2


def test_rollup__limit__oldest_first_then_rest(feature, envs):
    _ingest(envs["production"], [_ev(i, at=T0 + dt.timedelta(minutes=i % 7)) for i in range(25)])
    assert rollup_pending(limit=10) == 10
    assert CallEvent.objects.filter(rolled_up=False).count() == 15
    assert rollup_all_pending(limit=10) == 15
    assert sum(CallRollup.objects.values_list("calls", flat=True)) == 25


def test_rollup__percentiles_from_merged_histograms_match_exact(feature, envs):
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(6, 0.6)) for _ in range(2000)]
    events = [_ev(i, at=T0 + dt.timedelta(minutes=i % 30, seconds=i % 60), latency_ms=ms)
              for i, ms in enumerate(latencies)]
    for start in range(0, len(events), 1000):
        _ingest(envs["production"], events[start:start + 1000])
    rollup_all_pending(limit=700)
    assert CallRollup.objects.count() == 30  # 30 minutes, merged across rows below
    (total,) = rollup_totals(feature=feature, environment=envs["production"], since=T0, until=NOW, group_by=())
    assert total["calls"] == 2000
    exact = statistics.quantiles(latencies, n=100, method="inclusive")
    for q, key in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms")):
        assert total[key] == pytest.approx(exact[q - 1], rel=0.06), key
    assert total["latency_avg_ms"] == pytest.approx(sum(latencies) / 2000)


def test_selectors__totals_by_version_and_arm(feature, envs):
    env = envs["production"]
    _ingest(env, [
        _ev(1, at=T0, outcome="error"), _ev(2, at=T0), _ev(3, at=T0 + dt.timedelta(minutes=5), cache_hit=True),
        _ev(4, at=T0, arm="canary", prompt_version="1.1.0", latency_ms=900),
        _ev(5, at=T0 - dt.timedelta(minutes=1)),  # before the window
    ])
    _ingest(envs["staging"], [_ev(6, at=T0)])  # another environment
    rollup_pending()
    rows = rollup_totals(feature=feature, environment=env, since=T0, until=NOW)
    assert [(r["prompt_version"], r["arm"], r["calls"]) for r in rows] == [("1.0.0", "stable", 3),
                                                                           ("1.1.0", "canary", 1)]
    stable = rows[0]
    assert stable["errors"] == 1 and stable["error_rate"] == pytest.approx(1 / 3)
    assert stable["cache_hits"] == 1 and stable["tokens"] == 3 * (2006 + 300)
    assert stable["cost_usd"] == 3 * Decimal("0.005615")
    assert stable["cost_per_call_usd"] == Decimal("0.005615")
    assert rows[1]["p50_ms"] == pytest.approx(900, rel=0.1)
    everywhere = rollup_totals(feature=feature.pk, environment=None, since=T0, until=NOW, group_by=())
    assert everywhere[0]["calls"] == 5
    assert rollup_totals(feature=feature, environment=env, since=NOW, until=NOW + dt.timedelta(hours=1)) == []


def test_selectors__series_buckets(feature, envs):
    env = envs["production"]
    _ingest(env, [_ev(1, at=T0), _ev(2, at=T0 + dt.timedelta(minutes=59)),
                  _ev(3, at=T0 - dt.timedelta(minutes=1)), _ev(4, at=T0 + dt.timedelta(minutes=3), arm="canary")])
    rollup_pending()
    hourly = rollup_series(feature=feature, environment=env, since=T0 - dt.timedelta(hours=1), until=NOW,
                           bucket="hour", group_by=("arm",))
    assert [(r["t"], r["arm"], r["calls"]) for r in hourly] == [
        (T0 - dt.timedelta(hours=1), "stable", 1), (T0, "canary", 1), (T0, "stable", 2)]
    per_minute = rollup_series(feature=feature, environment=env, since=T0, until=NOW, bucket="minute", group_by=())
    assert [r["calls"] for r in per_minute] == [1, 1, 1]
    daily = rollup_series(feature=feature, environment=env, since=T0 - dt.timedelta(days=1), until=NOW,
                          bucket="day", group_by=())
    assert daily[0]["t"] == dt.datetime(2026, 3, 10, tzinfo=dt.UTC) and daily[0]["calls"] == 4
    with pytest.raises(ValueError):
        rollup_series(feature=feature, environment=env, since=T0, until=NOW, bucket="week")
    with pytest.raises(ValueError):
        rollup_totals(feature=feature, environment=env, since=T0, until=NOW, group_by=("user_key",))


def test_selectors__histogram_helpers_agree():
    h = histogram.empty()
    for ms in (10, 20, 30, 40, 1000):
        histogram.add(h, ms)
    assert histogram.percentile(h, 0.5) == pytest.approx(30, rel=0.1)


# --------------------------------------------------------------------------- retention


def test_purge__deletes_old_raw_events_keeps_rollups(feature, envs):
    env = envs["production"]
    _ingest(env, [_ev(1, at=NOW - dt.timedelta(days=29)), _ev(2, at=NOW - dt.timedelta(hours=1))])
    rollup_pending()
    _ingest(env, [_ev(3, at=NOW - dt.timedelta(days=29, hours=12))])  # old but not rolled up yet
    with time_machine.travel(NOW + dt.timedelta(days=1, hours=1), tick=False):
        assert call_events_purge() == 1
        assert set(CallEvent.objects.values_list("event_id", flat=True)) == {"r-2", "r-3"}
        rollup_pending()
        assert metrics_events_purge() == 1  # the daily task, once rolled up
    assert set(CallEvent.objects.values_list("event_id", flat=True)) == {"r-2"}
    assert sum(CallRollup.objects.values_list("calls", flat=True)) == 3


def test_purge__explicit_days(feature, envs):
    _ingest(envs["production"], [_ev(1, at=NOW - dt.timedelta(days=3)), _ev(2, at=NOW - dt.timedelta(hours=1))])
    rollup_pending()
    assert call_events_purge(older_than_days=2) == 1
    assert call_events_purge(older_than_days=2) == 0
