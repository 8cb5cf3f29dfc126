"""Hourly rollups: each CallRollupHour row is the sum of its minute rows (counters, cost and
histograms, so percentiles agree), kept by rollup_pending in the same transaction and
idempotent; readers switch to hour rows beyond 48 hours on whole hours (a 30-day dashboard
reads them); the demo seed writes consistent hour rows; the backfill migration; and two
rollup workers at once on Postgres."""
import datetime as dt
import io
import random
from collections import defaultdict

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from apps.metrics import dashboards, histogram
from apps.metrics.demo import demo_telemetry_seed
from apps.metrics.ingest import call_events_ingest
from apps.metrics.models import CallEvent, CallRollup, CallRollupHour
from apps.metrics.rollups import rollup_all_pending, rollup_hours_add, rollup_pending
from apps.metrics.selectors import rollup_series, rollup_source, rollup_totals
from apps.metrics.tasks import metrics_rollup
from tests.conftest import ON_POSTGRES, race, skip_or_fail

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
DAY0 = dt.datetime(2026, 3, 7, tzinfo=dt.UTC)
MEASURES = ("calls", "errors", "blocked", "budget_blocked", "cache_hits", "input_tokens", "cached_tokens",
            "output_tokens", "latency_sum_ms", "cost_usd")


@pytest.fixture(autouse=True)
def _no_enqueue(monkeypatch):
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)


def _ev(i: int, *, at: dt.datetime, rng: random.Random, prefix: str = "h") -> dict:
    roll = rng.random()
    outcome = "error" if roll < 0.05 else "timeout" if roll < 0.08 else "blocked" if roll < 0.1 else "success"
    return {"event_id": f"{prefix}-{i}", "feature": "ticket-summarizer",
            "prompt_version": rng.choice(["1.0.0", "1.1.0"]), "arm": rng.choice(["stable", "canary"]),
            "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
            "latency_ms": int(rng.lognormvariate(6, 0.7)), "input_tokens": 1000, "cached_tokens": rng.choice([0, 500]),
            "output_tokens": rng.randint(1, 400), "cache_hit": rng.random() < 0.3, "outcome": outcome,
            "occurred_at": at.isoformat()}


def _ingest(env, events: list[dict]) -> None:
    for start in range(0, len(events), 1000):
        result = call_events_ingest(environment_id=env.pk, events=events[start:start + 1000])
        assert not result.rejected, result.rejected[:3]


def _spread_events(env, n: int, *, seed: int = 1) -> list[dict]:
    """n events over three days (DAY0 .. DAY0 + 3 days), at random seconds."""
    rng = random.Random(seed)
    events = [_ev(i, at=DAY0 + dt.timedelta(seconds=rng.randrange(3 * 86400)), rng=rng, prefix=f"h{seed}")
              for i in range(n)]
    _ingest(env, events)
    return events


def _minute_sums_per_hour() -> dict[tuple, dict]:
    out: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(MEASURES, 0) | {"hist": histogram.empty()})
    for row in CallRollup.objects.all():
        key = (row.minute.replace(minute=0), row.environment_id, row.feature_id, row.prompt_version, row.arm,
               row.model)
        sums = out[key]
        for name in MEASURES:
            sums[name] += getattr(row, name)
        sums["hist"] = histogram.merge([sums["hist"], row.latency_histogram])
    return dict(out)


def _hour_rows() -> dict[tuple, dict]:
    return {(r.hour, r.environment_id, r.feature_id, r.prompt_version, r.arm, r.model):
            {name: getattr(r, name) for name in MEASURES} | {"hist": histogram.merge([r.latency_histogram])}
            for r in CallRollupHour.objects.all()}


def _assert_hours_equal_minutes() -> None:
    minutes, hours = _minute_sums_per_hour(), _hour_rows()
    assert hours.keys() == minutes.keys()
    for key, sums in minutes.items():
        assert hours[key] == sums, key


# --- maintained by rollup_pending ---------------------------------------------------------------

@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_hour_rows__are_the_sum_of_minute_rows_after_ingest_and_rollup(feature, envs):
    events = _spread_events(envs["production"], 3000)
    _spread_events(envs["staging"], 200, seed=2)
    rollup_all_pending(limit=700)  # batches cut across hours: hour rows get several additions
    assert CallRollupHour.objects.filter(hour__gte=DAY0, hour__lt=DAY0 + dt.timedelta(days=3)).count() > 200
    assert all(h.hour.minute == 0 and h.hour.second == 0 for h in CallRollupHour.objects.all())
    _assert_hours_equal_minutes()
    assert sum(CallRollupHour.objects.values_list("calls", flat=True)) == 3200

    # Percentiles (and everything else) read from hour rows equal the per-minute read of the same data.
    env = envs["production"]
    since, until = DAY0, DAY0 + dt.timedelta(days=3)
    assert rollup_source(since=since, until=until) == (CallRollupHour, "hour")
    hourly = rollup_totals(feature=feature, environment=env, since=since, until=until)
    per_minute = rollup_totals(feature=feature, environment=env, since=since - dt.timedelta(minutes=1),
                               until=until)  # not on a whole hour: per-minute rows
    assert hourly == per_minute and sum(r["calls"] for r in hourly) == len(events)
    assert all(r["p95_ms"] is not None and r["p50_ms"] < r["p95_ms"] <= r["p99_ms"] for r in hourly)
    daily_h = rollup_series(feature=feature, environment=env, since=since, until=until, bucket="day", group_by=())
    daily_m = rollup_series(feature=feature, environment=env, since=since - dt.timedelta(minutes=1), until=until,
                            bucket="day", group_by=())
    assert [r["t"] for r in daily_h] == [DAY0 + dt.timedelta(days=d) for d in range(3)]
    assert daily_h == daily_m


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_hour_rows__idempotent_and_late_events_added(feature, envs):
    env = envs["production"]
    _spread_events(env, 300)
    rollup_pending()
    before = list(CallRollupHour.objects.order_by("id").values())
    assert rollup_pending() == 0
    assert metrics_rollup() == 0
    assert list(CallRollupHour.objects.order_by("id").values()) == before
    # A late event for an hour that already has a row: added to that row, nothing duplicated.
    late = DAY0 + dt.timedelta(hours=5, minutes=59, seconds=59)
    _ingest(env, [_ev(9999, at=late, rng=random.Random(3))])
    assert rollup_pending() == 1
    assert CallRollupHour.objects.count() in (len(before), len(before) + 1)
    assert sum(CallRollupHour.objects.values_list("calls", flat=True)) == 301
    _assert_hours_equal_minutes()


@pytest.mark.django_db
def test_rollup_hours_add__directly_written_minute_rows(feature, envs):
    env = envs["production"]
    rows = [CallRollup.objects.create(minute=DAY0 + dt.timedelta(minutes=m), environment=env, feature=feature,
                                      prompt_version="1.0.0", arm="stable", model="gpt-4o", calls=2, errors=1,
                                      latency_sum_ms=300, cost_usd="0.25",
                                      latency_histogram=histogram.add(histogram.empty(), 100 + m, 2))
            for m in (0, 30, 59, 60, 61)]
    assert rollup_hours_add(minute_rows=rows[:3]) == 1
    assert rollup_hours_add(minute_rows=rows[3:]) == 1
    assert rollup_hours_add(minute_rows=[]) == 0
    _assert_hours_equal_minutes()
    first = CallRollupHour.objects.get(hour=DAY0)
    assert (first.calls, first.errors, str(first.cost_usd)) == (6, 3, "0.7500000000")


# --- readers ------------------------------------------------------------------------------------

def test_rollup_source__hour_rows_beyond_48_hours_on_whole_hours():
    t = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert rollup_source(since=t, until=t + dt.timedelta(hours=48)) == (CallRollup, "minute")  # not longer
    assert rollup_source(since=t, until=t + dt.timedelta(hours=49)) == (CallRollupHour, "hour")
    assert rollup_source(since=t, until=t + dt.timedelta(days=30), bucket="day") == (CallRollupHour, "hour")
    assert rollup_source(since=t, until=t + dt.timedelta(days=30), bucket="minute") == (CallRollup, "minute")
    assert rollup_source(since=t + dt.timedelta(minutes=1), until=t + dt.timedelta(days=3)) == (CallRollup, "minute")
    assert rollup_source(since=t, until=t + dt.timedelta(days=3, seconds=1)) == (CallRollup, "minute")


def _sql(call) -> str:
    with CaptureQueriesContext(connection) as ctx:
        result = call()
    return result, " ".join(q["sql"] for q in ctx.captured_queries)


@pytest.mark.django_db
def test_dashboards__30_days_read_hour_rows_24_hours_minute_rows(feature, envs):
    prod = envs["production"]
    now = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
    # A minute row without its hour row (only possible by hand): proves which table is read.
    CallRollup.objects.create(minute=now - dt.timedelta(hours=1), environment=prod, feature=feature,
                              prompt_version="1.0.0", arm="stable", model="gpt-4o", calls=7,
                              latency_histogram=histogram.add(histogram.empty(), 100, 7))
    r30, r24 = (dashboards.time_range_parse(range_key=k, now=now) for k in ("30d", "24h"))
    dash30, sql30 = _sql(lambda: dashboards.feature_dashboard(feature=feature, environment=prod, time_range=r30))
    dash24, sql24 = _sql(lambda: dashboards.feature_dashboard(feature=feature, environment=prod, time_range=r24))
    assert '"metrics_callrolluphour"' in sql30 and '"metrics_callrollup"' not in sql30
    assert '"metrics_callrollup"' in sql24 and '"metrics_callrolluphour"' not in sql24
    assert (dash30.total.calls, dash24.total.calls) == (0, 7)
    rollup_hours_add(minute_rows=CallRollup.objects.all())
    dash30 = dashboards.feature_dashboard(feature=feature, environment=prod, time_range=r30)
    assert dash30.total.calls == 7 and dash30.total.p50_ms == dash24.total.p50_ms
    cells, sql = _sql(lambda: dashboards.overview_figures(features=[feature], environments=[prod], time_range=r30))
    assert '"metrics_callrolluphour"' in sql and cells[(feature.id, prod.id)].total.calls == 7


# --- demo ---------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_demo_seed__hour_rows_are_the_sum_of_its_minute_rows():
    with time_machine.travel(NOW, tick=False):
        call_command("seed_demo", stdout=io.StringIO())
        assert CallRollupHour.objects.count() > 500
        _assert_hours_equal_minutes()
        # Minute rows deleted by hand, then seeded again: hour rows rebuilt, not doubled.
        CallRollup.objects.all().delete()
        CallEvent.objects.all().delete()
        demo_telemetry_seed()
        _assert_hours_equal_minutes()


# --- the backfill migration ---------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_migration__backfills_hour_rows_from_existing_minute_rows(feature, envs):
    env = envs["production"]
    executor = MigrationExecutor(connection)
    executor.migrate([("metrics", "0002_budget_units_exhaustion")])
    old = executor.loader.project_state([("metrics", "0002_budget_units_exhaustion")]).apps
    minute_model = old.get_model("metrics", "CallRollup")
    for m in (0, 59, 60, 125):
        minute_model.objects.create(minute=DAY0 + dt.timedelta(minutes=m), environment_id=env.pk,
                                    feature_id=feature.pk, prompt_version="1.0.0", arm="stable", model="gpt-4o",
                                    calls=m + 1, cost_usd="0.1", latency_sum_ms=10,
                                    latency_histogram=histogram.add(histogram.empty(), 50 + m))
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert CallRollupHour.objects.count() == 3
    _assert_hours_equal_minutes()


# --- two workers at once (Postgres) -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_hour_rows__two_workers_at_once__every_event_counted_once(feature, envs):
    if not ON_POSTGRES:
        skip_or_fail("needs concurrent connections and row locks: set DATABASE_URL=postgres://...")
    with time_machine.travel(NOW, tick=True):
        _spread_events(envs["production"], 4000)
    a, b = race(lambda: rollup_all_pending(limit=300), lambda: rollup_all_pending(limit=300))
    assert not isinstance(a, Exception), a
    assert not isinstance(b, Exception), b
    assert a + b == 4000
    assert sum(CallRollupHour.objects.values_list("calls", flat=True)) == 4000
    _assert_hours_equal_minutes()
