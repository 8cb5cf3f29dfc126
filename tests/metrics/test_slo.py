"""SLO alerts: breaches open one alert per (feature, environment, metric) episode, recovery
resolves it, a new breach opens a new one; too little traffic changes nothing; the beat task;
the /alerts/ page with filters and pagination."""
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from apps.metrics import histogram, tasks
from apps.metrics.alerts import alert_open
from apps.metrics.models import Alert, CallRollup
from apps.metrics.slo import slo_evaluate, slo_evaluate_locked

NOW = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)
MINUTE0 = NOW.replace(second=0)


def make_rollup(*, feature, environment, minute, arm="stable", version="1.0.0", model="gpt-4o-mini", calls=10,
                errors=0, latency_ms=800, cost="0.01"):
    return CallRollup.objects.create(
        minute=minute, environment=environment, feature=feature, prompt_version=version, arm=arm, model=model,
        calls=calls, errors=errors, cost_usd=Decimal(cost), latency_sum_ms=latency_ms * calls,
        latency_histogram=histogram.add(histogram.empty(), latency_ms, calls),
    )


def traffic(feature, environment, *, end=MINUTE0, minutes=15, calls=10, errors=0, latency_ms=800):
    for i in range(1, minutes + 1):
        make_rollup(feature=feature, environment=environment, minute=end - timedelta(minutes=i), calls=calls,
                    errors=errors, latency_ms=latency_ms)


@pytest.fixture
def slo_feature(feature):
    feature.slo_error_rate = Decimal("0.05")
    feature.slo_p95_latency_ms = 2000
    feature.save(update_fields=["slo_error_rate", "slo_p95_latency_ms"])
    return feature


def test_slo_evaluate__error_rate_breach__opens_one_alert_with_figures(slo_feature, envs,
                                                                       django_capture_on_commit_callbacks):
    prod = envs["production"]
    traffic(slo_feature, prod, calls=10, errors=1)  # 10 % > 5 %
    with django_capture_on_commit_callbacks() as callbacks:
        actions = slo_evaluate(now=NOW)
    assert [(a.action, a.metric) for a in actions] == [("opened", "error_rate")]
    alert = Alert.objects.get()
    assert alert.kind == "slo" and alert.feature == slo_feature and alert.environment == prod
    assert alert.dedupe_key == "slo:ticket-summarizer:production:error_rate:20261203T1200"
    assert alert.title == "ticket-summarizer: error rate 10.00 % breaches its SLO of 5.00 % in production"
    assert alert.figures["value"] == 0.1 and alert.figures["slo"] == 0.05
    assert alert.figures["calls"] == 150 and alert.figures["errors"] == 15
    assert alert.figures["window_minutes"] == 15
    assert len(callbacks) == 1  # the webhook notification, after commit

    # Evaluating again (next minute, still breached) opens nothing new.
    assert slo_evaluate(now=NOW + timedelta(minutes=1)) == []
    assert Alert.objects.count() == 1


def test_slo_evaluate__recovery_resolves__a_later_breach_opens_a_new_alert(slo_feature, envs):
    prod = envs["production"]
    traffic(slo_feature, prod, calls=10, errors=1)
    slo_evaluate(now=NOW)
    first = Alert.objects.get()

    later = MINUTE0 + timedelta(minutes=30)
    traffic(slo_feature, prod, end=later, calls=10, errors=0)
    actions = slo_evaluate(now=later)
    assert [(a.action, a.metric) for a in actions] == [("resolved", "error_rate")]
    first.refresh_from_db()
    assert first.resolved_at is not None
    assert first.figures["resolved"]["value"] == 0.0

    again = later + timedelta(minutes=30)
    traffic(slo_feature, prod, end=again, calls=10, errors=5)
    actions = slo_evaluate(now=again)
    assert [a.action for a in actions] == ["opened"]
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1
    assert Alert.objects.count() == 2


def test_slo_evaluate__p95_breach(slo_feature, envs):
    traffic(slo_feature, envs["production"], latency_ms=3000)
    actions = slo_evaluate(now=NOW)
    assert [(a.action, a.metric) for a in actions] == [("opened", "p95_latency_ms")]
    alert = Alert.objects.get()
    assert alert.figures["metric"] == "p95_latency_ms" and alert.figures["value"] > 2000
    assert "p95 latency" in alert.title and "SLO of 2000 ms" in alert.title


def test_slo_evaluate__within_slo__nothing(slo_feature, envs):
    traffic(slo_feature, envs["production"], calls=100, errors=2, latency_ms=900)
    assert slo_evaluate(now=NOW) == []
    assert not Alert.objects.exists()


def test_slo_evaluate__too_few_calls__no_alert__and_an_open_alert_stays_open(slo_feature, envs):
    prod = envs["production"]
    make_rollup(feature=slo_feature, environment=prod, minute=MINUTE0 - timedelta(minutes=1), calls=19, errors=19)
    assert slo_evaluate(now=NOW) == []

    traffic(slo_feature, prod, end=MINUTE0 + timedelta(minutes=60), calls=10, errors=5)
    slo_evaluate(now=NOW + timedelta(minutes=60))
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1
    # An hour later there is almost no traffic: too little to call it recovered.
    make_rollup(feature=slo_feature, environment=prod, minute=MINUTE0 + timedelta(minutes=119), calls=5)
    assert slo_evaluate(now=NOW + timedelta(minutes=120)) == []
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1


def test_slo_evaluate__window_and_min_calls_come_from_settings(slo_feature, envs, settings):
    settings.SHIPWAY_SLO_WINDOW_MINUTES = 5
    settings.SHIPWAY_SLO_MIN_CALLS = 100
    traffic(slo_feature, envs["production"], minutes=15, calls=10, errors=5)
    assert slo_evaluate(now=NOW) == []  # 50 calls in 5 minutes < 100
    settings.SHIPWAY_SLO_MIN_CALLS = 50
    actions = slo_evaluate(now=NOW)
    assert len(actions) == 1 and Alert.objects.get().figures["calls"] == 50


def test_slo_evaluate__per_environment(slo_feature, envs):
    traffic(slo_feature, envs["production"], calls=10, errors=0)
    traffic(slo_feature, envs["staging"], calls=10, errors=3)
    actions = slo_evaluate(now=NOW)
    assert [(a.environment, a.metric) for a in actions] == [("staging", "error_rate")]


def test_slo_evaluate__feature_without_slo__ignored(feature, envs):
    traffic(feature, envs["production"], calls=10, errors=10, latency_ms=30000)
    assert slo_evaluate(now=NOW) == []


def test_slo_evaluate__slo_removed__open_alert_resolves(slo_feature, envs):
    traffic(slo_feature, envs["production"], calls=10, errors=5)
    slo_evaluate(now=NOW)
    slo_feature.slo_error_rate = None
    slo_feature.save(update_fields=["slo_error_rate"])
    actions = slo_evaluate(now=NOW + timedelta(minutes=1))
    assert [(a.action, a.metric) for a in actions] == [("resolved", "error_rate")]
    assert Alert.objects.get().figures["resolved"]["note"] == "SLO removed"


def test_slo_evaluate__budget_alerts_untouched(slo_feature, envs):
    alert_open(kind="budget", feature=slo_feature, dedupe_key="budget:x:80", title="80 %", figures={"pct": 80})
    traffic(slo_feature, envs["production"], calls=10, errors=0)
    assert slo_evaluate(now=NOW) == []
    assert Alert.objects.get().resolved_at is None


def test_slo_evaluate__current_minute_is_not_read(slo_feature, envs):
    make_rollup(feature=slo_feature, environment=envs["production"], minute=MINUTE0, calls=100, errors=100)
    assert slo_evaluate(now=NOW) == []


def test_slo_evaluate__query_count_does_not_grow_with_features(slo_feature, envs, django_assert_max_num_queries):
    from apps.prompts.services import feature_create

    for i in range(5):
        f = feature_create(key=f"f-{i}", name=f"F{i}")
        f.slo_error_rate = Decimal("0.5")
        f.save(update_fields=["slo_error_rate"])
        traffic(f, envs["production"], calls=10, errors=0)
    # 5 reads + the savepoint pair of the atomic block (+ the advisory lock on Postgres)
    with django_assert_max_num_queries(8):
        assert slo_evaluate_locked(now=NOW) == []


def test_slo_task__runs_the_evaluation_and_is_scheduled_every_minute(slo_feature, envs, time_machine):
    time_machine.move_to(NOW)
    traffic(slo_feature, envs["production"], calls=10, errors=5)
    assert tasks.slo_evaluate() == 1
    assert tasks.slo_evaluate() == 0
    entry = settings.CELERY_BEAT_SCHEDULE["slo-evaluate"]
    assert entry == {"task": "apps.metrics.tasks.slo_evaluate", "schedule": 60.0}


# --- the alerts page --------------------------------------------------------------------------

@pytest.fixture
def some_alerts(slo_feature, envs):
    from apps.prompts.services import feature_create

    other = feature_create(key="other-feature", name="Other")
    for i in range(30):
        alert_open(kind="budget", feature=other, dedupe_key=f"budget:other:{i}", title=f"budget alert {i}",
                   figures={"threshold_pct": 80, "spent": "0.80"})
    traffic(slo_feature, envs["production"], calls=10, errors=5)
    slo_evaluate(now=NOW)
    traffic(slo_feature, envs["staging"], calls=10, errors=5, latency_ms=5000)
    slo_evaluate(now=NOW)
    later = MINUTE0 + timedelta(minutes=30)
    traffic(slo_feature, envs["staging"], end=later, calls=10, errors=0)
    slo_evaluate(now=later)


def table(response) -> str:
    """The alerts table only (base.html may show an open-alerts banner too)."""
    html = response.content.decode()
    return html[html.index('<table class="striped">'):]


def test_alerts_page__needs_login(client, db):
    response = client.get("/alerts/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_alerts_page__lists_open_and_resolved_with_figures(client, personas, some_alerts):
    client.force_login(personas["oncall"])
    html = table(client.get("/alerts/?kind=slo"))
    assert "error rate 50.00 % breaches its SLO of 5.00 % in production" in html
    assert "p95 latency" in html and "resolved" in html and "at resolution:" in html
    assert "budget alert" not in html
    assert 'href="/alerts/"' in client.get("/").content.decode()  # nav link


def test_alerts_page__filters(client, personas, some_alerts):
    client.force_login(personas["reviewer"])
    html = table(client.get("/alerts/?kind=slo&state=resolved"))
    assert "in staging" in html and "in production" not in html
    html = table(client.get("/alerts/?state=open&feature=ticket-summarizer"))
    assert "in production" in html and "in staging" not in html and "budget alert" not in html
    html = table(client.get("/alerts/?kind=bogus&state=bogus&feature=nope"))
    assert "No alerts match." in html


def test_alerts_page__paginates_with_filters_kept(client, personas, some_alerts, django_assert_max_num_queries):
    client.force_login(personas["pm"])
    with django_assert_max_num_queries(10):
        html = client.get("/alerts/?kind=budget").content.decode()
    assert "Page 1 of 2 (30 in all)" in html
    assert "?kind=budget&amp;feature=&amp;state=&page=2" in html or "?kind=budget&feature=&state=&page=2" in html
    html = client.get("/alerts/?kind=budget&page=2").content.decode()
    assert "Page 2 of 2" in html and "budget alert 0" in html


def test_alerts_page__post_not_allowed(client, personas):
    client.force_login(personas["admin"])
    assert client.post("/alerts/").status_code == 405
