"""Ingest and rollups with real concurrency on Postgres: the same events sent by two clients
at once are stored and accepted once; two rollup workers never count an event twice."""
import datetime as dt

import pytest
from django.utils import timezone

from apps.metrics.ingest import call_events_ingest
from apps.metrics.models import CallEvent, CallRollup
from apps.metrics.rollups import rollup_all_pending
from apps.metrics.tasks import metrics_rollup
from tests.conftest import ON_POSTGRES, race, skip_or_fail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only(monkeypatch):
    if not ON_POSTGRES:
        skip_or_fail("needs concurrent connections and row locks: set DATABASE_URL=postgres://...")
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: None)



def _events(ids, minute_of=lambda i: i % 5):
    base = timezone.now().replace(second=0, microsecond=0) - dt.timedelta(minutes=10)
    return [{"event_id": f"c-{i}", "feature": "ticket-summarizer", "prompt_version": "1.0.0", "model": "gpt-4o",
             "latency_ms": 10 + i, "input_tokens": 100, "output_tokens": 10,
             "occurred_at": (base + dt.timedelta(minutes=minute_of(i))).isoformat()} for i in ids]


def test_ingest__same_events_from_two_clients_at_once__accepted_once(feature, envs):
    env_id = envs["production"].pk
    first, second = _events(range(0, 600)), _events(range(300, 900))  # 300 in common, other order
    second.reverse()
    for _ in range(3):
        CallEvent.objects.all().delete()
        a, b = race(lambda: call_events_ingest(environment_id=env_id, events=first),
                     lambda: call_events_ingest(environment_id=env_id, events=second))
        assert not isinstance(a, Exception), a
        assert not isinstance(b, Exception), b
        accepted = a.accepted + b.accepted
        assert len(accepted) == len(set(accepted)) == 900
        assert len(a.duplicates) + len(b.duplicates) == 300
        assert CallEvent.objects.count() == 900


def test_rollup__two_workers_at_once__every_event_counted_once(feature, envs):
    env_id = envs["production"].pk
    for start in range(0, 3000, 1000):
        call_events_ingest(environment_id=env_id, events=_events(range(start, start + 1000)))
    a, b = race(lambda: rollup_all_pending(limit=250), lambda: rollup_all_pending(limit=250))
    assert not isinstance(a, Exception), a
    assert not isinstance(b, Exception), b
    assert a + b == 3000
    assert not CallEvent.objects.filter(rolled_up=False).exists()
    assert sum(CallRollup.objects.values_list("calls", flat=True)) == 3000
    assert sum(sum(h) for h in CallRollup.objects.values_list("latency_histogram", flat=True)) == 3000
    assert sum(CallRollup.objects.values_list("latency_sum_ms", flat=True)) == sum(10 + i for i in range(3000))
    assert CallRollup.objects.count() == 5
