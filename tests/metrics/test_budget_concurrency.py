"""Concurrent budget checks on real Postgres: the row locks keep callers from overspending."""
from decimal import Decimal

import pytest

from apps.metrics import budgets
from apps.metrics.models import BudgetReservation, BudgetUsage, CallEvent
from tests.conftest import ON_POSTGRES, race, skip_or_fail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if not ON_POSTGRES:
        skip_or_fail("needs real row locks and concurrent connections: set DATABASE_URL=postgres://...")



def test_budget_check__eight_concurrent_reservations__at_most_two_admitted(feature, personas):
    """Worked case: $0.01 daily cap, 8 concurrent $0.005 reservations -> at most 2 admitted."""
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="0.01")

    def check():
        return budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.005"))

    results = race(*[check] * 8)
    assert not [r for r in results if isinstance(r, Exception)], results
    admitted = [r for r in results if r.allowed]
    assert len(admitted) == 2
    assert {r.reason for r in results if not r.allowed} == {"user_daily_cap"}
    row = BudgetUsage.objects.get(scope="user_day", subject="u1")
    assert row.reserved == Decimal("0.01")
    assert BudgetReservation.objects.count() == 2


def test_budget_check_and_settle__concurrently__counters_stay_exact(feature, envs, personas):
    """Checks and settlements of the same usage rows interleave without a lost update."""
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="100")
    decisions = [budgets.budget_check(feature=feature, user_key=f"u{i}", estimated_cost_usd=Decimal("0.5"))
                 for i in range(6)]
    events = [CallEvent.objects.create(event_id=f"c-{i}", environment=envs["production"], feature=feature,
                                       model="m", latency_ms=1, cost_usd=Decimal("0.25"), user_key=f"u{i}",
                                       request_id=str(d.reservation_id), occurred_at=budgets.timezone.now())
              for i, d in enumerate(decisions)]

    def settle(e):
        return lambda: budgets.budget_events_settle(events=[e])

    def check(i):
        return lambda: budgets.budget_check(feature=feature, user_key=f"v{i}", estimated_cost_usd=Decimal("1"))

    results = race(*[settle(e) for e in events], *[check(i) for i in range(6)])
    assert not [r for r in results if isinstance(r, Exception)], results
    month = BudgetUsage.objects.get(scope="feature_month")
    assert month.spent == Decimal("1.50")
    assert month.reserved == Decimal("6")  # the six $0.5 released, the six new $1 held


def test_two_batches__same_new_users_in_opposite_orders__no_deadlock(feature, envs, personas, monkeypatch):
    """Field report (review): two ingests creating the day's usage rows for the same new users
    in opposite orders deadlocked, and one answered 500."""
    import datetime as dt

    from django.utils import timezone

    from apps.metrics.ingest import call_events_ingest
    from apps.metrics.tasks import metrics_rollup

    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="100", feature_monthly_cap="1000")
    env_id = envs["production"].pk
    at = (timezone.now() - dt.timedelta(minutes=1)).isoformat()

    def batch(prefix, users):
        return [{"event_id": f"{prefix}-{i:04d}", "feature": "ticket-summarizer", "model": "gpt-4o",
                 "latency_ms": 10, "input_tokens": 100, "output_tokens": 10, "user_key": u, "occurred_at": at}
                for i, u in enumerate(users)]

    for round_ in range(5):
        users = [f"r{round_}-u{i}" for i in range(400)]
        first, second = batch(f"a{round_}", users), batch(f"b{round_}", users[::-1])
        results = race(lambda first=first: call_events_ingest(environment_id=env_id, events=first),
                       lambda second=second: call_events_ingest(environment_id=env_id, events=second))
        assert not [r for r in results if isinstance(r, Exception)], results
    assert BudgetUsage.objects.filter(scope=budgets.USER_DAY).count() == 5 * 400
