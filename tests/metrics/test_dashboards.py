"""Dashboards: time ranges, series from hand-made rollup rows (percentiles from merged
histograms, error rate, split by version and arm, UTC bucket boundaries), the pages, the CSV
export, bounded query counts, bad input, login; and the demo telemetry seed."""
import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.errors import ValidationFailed
from apps.core.models import Environment
from apps.metrics import dashboards, histogram
from apps.metrics.budgets import budget_set
from apps.metrics.demo import demo_telemetry_seed
from apps.metrics.models import BudgetUsage, CallEvent, CallRollup
from apps.metrics.rollups import rollup_hours_add
from apps.prompts.models import Feature
from apps.prompts.services import prompt_version_create

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def hist(*pairs: tuple[int, int]) -> list[int]:
    h = histogram.empty()
    for latency, count in pairs:
        histogram.add(h, latency, count)
    return h


def rollup(feature, environment, minute, *, version="1.0.0", arm="stable", calls=10, errors=0, latencies=None,
           cost="0.01", cache_hits=0, input_tokens=100, output_tokens=50, model="gpt-4o-mini"):
    latencies = latencies or [(200, calls)]
    row = CallRollup.objects.create(
        minute=minute, environment=environment, feature=feature, prompt_version=version, arm=arm, model=model,
        calls=calls, errors=errors, cache_hits=cache_hits, input_tokens=input_tokens, output_tokens=output_tokens,
        cost_usd=Decimal(cost), latency_sum_ms=sum(lat * n for lat, n in latencies), latency_histogram=hist(*latencies))
    rollup_hours_add(minute_rows=[row])  # and into its hour row, as rollup_pending does: long ranges read those
    return row


# --- time ranges -------------------------------------------------------------------------------

def test_time_range__presets__end_with_the_current_bucket():
    r24 = dashboards.time_range_parse(range_key="24h", now=NOW)
    assert (r24.start, r24.end, r24.bucket) == (datetime(2026, 3, 9, 13, tzinfo=UTC),
                                                datetime(2026, 3, 10, 13, tzinfo=UTC), "hour")
    assert len(r24.bucket_starts) == 24
    r7 = dashboards.time_range_parse(range_key="7d", now=NOW)
    assert (r7.start, r7.end, r7.bucket) == (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), "day")
    assert len(dashboards.time_range_parse(range_key="30d", now=NOW).bucket_starts) == 30
    assert dashboards.time_range_parse(now=NOW) == r7  # the default


def test_time_range__custom__dates_include_the_last_day_and_short_spans_are_hourly():
    two_days = dashboards.time_range_parse(range_key="custom", from_text="2026-03-01", to_text="2026-03-02")
    assert (two_days.start, two_days.end, two_days.bucket) == (datetime(2026, 3, 1, tzinfo=UTC),
                                                               datetime(2026, 3, 3, tzinfo=UTC), "hour")
    longer = dashboards.time_range_parse(range_key="custom", from_text="2026-02-01", to_text="2026-02-28")
    assert longer.bucket == "day" and len(longer.bucket_starts) == 28
    timed = dashboards.time_range_parse(range_key="custom", from_text="2026-03-01T10:30", to_text="2026-03-01T14:00")
    assert (timed.start, timed.end) == (datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 14, tzinfo=UTC))
    assert timed.query() == {"range": "custom", "from": "2026-03-01T10:30", "to": "2026-03-01T14:00"}


@pytest.mark.parametrize(("params", "message"), [
    ({"range_key": "custom", "from_text": "2026-03-05", "to_text": "2026-03-01"}, "must be before"),
    ({"range_key": "90y"}, "Unknown range '90y'"),
    ({"range_key": "custom", "from_text": "2026-03-05"}, "needs both"),
    ({"range_key": "custom", "from_text": "yesterday", "to_text": "2026-03-01"}, "'from' must be a date"),
    ({"range_key": "custom", "from_text": "2026-02-30", "to_text": "2026-03-01"}, "'from' must be a date"),
    ({"range_key": "custom", "from_text": "2020-01-01", "to_text": "2026-03-01"}, "at most 400 days"),
    ({"range_key": "custom", "from_text": "9999-12-30", "to_text": "9999-12-31"}, "between 1970 and 9998"),
    ({"range_key": "custom", "from_text": "0001-01-01", "to_text": "0001-01-02"}, "between 1970 and 9998"),
    ({"range_key": "custom", "from_text": "0001-01-01T00:00", "to_text": "9999-12-31T23:59"}, "between"),
])
def test_time_range__bad_input__is_a_clear_validation_error(params, message):
    with pytest.raises(ValidationFailed, match=message):
        dashboards.time_range_parse(now=NOW, **params)


# --- series ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_feature_dashboard__splits_by_version_and_arm_with_merged_percentiles(feature, envs):
    prod, staging = envs["production"], envs["staging"]
    day1, day2 = datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    rollup(feature, prod, day1 + timedelta(hours=9), calls=100, errors=2, latencies=[(100, 90), (1000, 10)],
           cost="0.50", cache_hits=25)
    rollup(feature, prod, day1 + timedelta(hours=23, minutes=59), calls=100, errors=0, latencies=[(300, 100)],
           cost="0.25")
    rollup(feature, prod, day2, version="1.1.0", arm="canary", calls=10, errors=5, latencies=[(2000, 10)], cost="0.10")
    rollup(feature, prod, day2, calls=50, latencies=[(150, 50)], model="gpt-4o")  # second model: same series
    rollup(feature, staging, day2, calls=999)  # other environment
    rollup(feature, prod, datetime(2026, 3, 11, tzinfo=UTC), calls=999)  # at the (exclusive) end
    rollup(feature, prod, datetime(2026, 3, 3, 23, 59, tzinfo=UTC), calls=999)  # before the start

    time_range = dashboards.time_range_parse(range_key="7d", now=NOW)
    dash = dashboards.feature_dashboard(feature=feature, environment=prod, time_range=time_range)

    assert [s.name for s in dash.series] == ["v1.0.0 stable", "v1.1.0 canary"]
    stable, canary = dash.series
    i1, i2 = dash.bucket_starts.index(day1), dash.bucket_starts.index(day2)
    # 23:59 UTC on day 1 stays in day 1; 00:00 on day 2 starts day 2.
    assert stable.buckets[i1].calls == 200 and stable.buckets[i2].calls == 50
    assert stable.buckets[i1].error_rate == pytest.approx(2 / 200)
    assert stable.buckets[i1].cache_hit_rate == pytest.approx(25 / 200)
    assert stable.buckets[i1].cost_usd == Decimal("0.75")
    merged = histogram.merge([hist((100, 90), (1000, 10)), hist((300, 100))])
    assert stable.buckets[i1].p95_ms == pytest.approx(histogram.percentile(merged, 0.95))
    assert stable.buckets[i1].p50_ms == pytest.approx(histogram.percentile(merged, 0.50))
    assert 280 < stable.buckets[i1].p95_ms < 1100
    assert canary.buckets[i2].calls == 10 and canary.buckets[i2].error_rate == 0.5
    assert canary.buckets[i1].calls == 0 and canary.buckets[i1].p95_ms is None  # a gap, not a zero
    assert (dash.total.calls, dash.total.errors) == (260, 7)
    assert dash.total.cost_usd == Decimal("0.86")
    assert dash.per_bucket[i2].calls == 60

    chart = dashboards.dashboard_chart_data(dash)
    assert chart["labels"][i1] == "Sun 08 Mar"
    assert chart["series"][1]["error_rate"][i2] == 0.5 and chart["series"][1]["p95_ms"][i1] is None
    assert chart["series"][0]["cost_usd"][i1] == 0.75


@pytest.mark.django_db
def test_feature_dashboard__hourly_buckets_are_utc_hours(feature, envs):
    prod = envs["production"]
    rollup(feature, prod, datetime(2026, 3, 10, 10, 59, tzinfo=UTC), calls=3)
    rollup(feature, prod, datetime(2026, 3, 10, 11, 0, tzinfo=UTC), calls=4)
    time_range = dashboards.time_range_parse(range_key="24h", now=NOW)
    dash = dashboards.feature_dashboard(feature=feature, environment=prod, time_range=time_range)
    by_start = dict(zip(dash.bucket_starts, dash.per_bucket, strict=True))
    assert by_start[datetime(2026, 3, 10, 10, tzinfo=UTC)].calls == 3
    assert by_start[datetime(2026, 3, 10, 11, tzinfo=UTC)].calls == 4


def _versions(feature, personas, n):
    for i in range(n):
        prompt_version_create(feature=feature, version=f"3.{i}.0", model="gpt-4o-mini", template="Hi {{ x }}",
                              actor=personas["engineer"])


@pytest.mark.django_db
def test_feature_dashboard__two_queries_whatever_the_range_and_versions(feature, envs, personas,
                                                                        django_assert_num_queries):
    prod = envs["production"]
    _versions(feature, personas, 6)
    for day in range(30):
        for i in range(6):
            rollup(feature, prod, datetime(2026, 2, 9, tzinfo=UTC) + timedelta(days=day, minutes=i),
                   version=f"3.{i}.0", arm="canary" if i % 2 else "stable")
    for key in ("24h", "30d"):
        time_range = dashboards.time_range_parse(range_key=key, now=NOW)
        with django_assert_num_queries(2):
            dashboards.feature_dashboard(feature=feature, environment=prod, time_range=time_range)


# --- pages -------------------------------------------------------------------------------------

def _page_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(ctx.captured_queries)


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_pages__query_count_does_not_grow_with_data(client, feature, envs, personas):
    client.force_login(personas["oncall"])
    prod = envs["production"]
    rollup(feature, prod, NOW - timedelta(hours=2))
    url = "/features/ticket-summarizer/dashboard?env=production&range=30d"
    few = _page_queries(client, url)
    overview_few = _page_queries(client, "/dashboards/?range=30d")
    _versions(feature, personas, 5)
    for day in range(25):
        for i in range(5):
            rollup(feature, prod, NOW - timedelta(days=day, minutes=i), version=f"3.{i}.0", arm="canary")
            rollup(feature, envs["staging"], NOW - timedelta(days=day, minutes=i), version=f"3.{i}.0")
    assert _page_queries(client, url) == few
    assert _page_queries(client, "/dashboards/?range=30d") == overview_few


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_feature_dashboard_page__shows_figures_and_embeds_chart_data(client, feature, envs, personas):
    rollup(feature, envs["production"], NOW - timedelta(hours=1), calls=40, errors=4, cost="1.25")
    client.force_login(personas["reviewer"])
    response = client.get("/features/ticket-summarizer/dashboard?env=production&range=24h")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="dashboard-data"' in html and "chart.umd.js" in html
    assert "10.00 %" in html  # error rate, also in the no-JS tables
    assert "$1.25" in html
    assert 'canvas id="chart-p95_ms"' in html
    assert "/features/ticket-summarizer/dashboard.csv?env=production&amp;range=24h" in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_feature_dashboard_page__bad_range__400_with_the_reason_and_the_default_range(client, feature, envs,
                                                                                     personas):
    client.force_login(personas["pm"])
    response = client.get("/features/ticket-summarizer/dashboard?range=custom&from=2026-03-05&to=2026-03-01")
    assert response.status_code == 400
    html = response.content.decode()
    assert "&#x27;from&#x27; (2026-03-05) must be before &#x27;to&#x27; (2026-03-01)" in html
    assert "Showing last 7 days instead" in html
    response = client.get("/features/ticket-summarizer/dashboard?range=forever&env=moon")
    assert response.status_code == 400
    assert "Unknown range" in response.content.decode() and "Unknown environment" in response.content.decode()
    assert client.get("/features/no-such-feature/dashboard").status_code == 404
    for url in ("/features/ticket-summarizer/dashboard", "/features/ticket-summarizer/dashboard.csv", "/dashboards/"):
        # Dates at datetime's limits overflowed when the end was rounded up (was a 500).
        assert client.get(url + "?range=custom&from=0001-01-01&to=9999-12-31").status_code == 400


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_feature_dashboard_page__no_data__says_so(client, feature, envs, personas):
    client.force_login(personas["pm"])
    response = client.get("/features/ticket-summarizer/dashboard")
    assert response.status_code == 200
    assert "No calls in production" in response.content.decode()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_csv_export__one_row_per_bucket_version_and_arm(client, feature, envs, personas):
    prod = envs["production"]
    rollup(feature, prod, datetime(2026, 3, 9, 8, tzinfo=UTC), calls=10, errors=1, cost="0.0123456789")
    rollup(feature, prod, datetime(2026, 3, 9, 9, tzinfo=UTC), calls=30, latencies=[(500, 30)])
    rollup(feature, prod, datetime(2026, 3, 9, 9, tzinfo=UTC), version="1.1.0", arm="canary", calls=5)
    client.force_login(personas["engineer"])
    response = client.get("/features/ticket-summarizer/dashboard.csv?env=production&range=7d")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert list(rows[0]) == list(dashboards.CSV_COLUMNS)
    assert [(r["bucket_start_utc"], r["prompt_version"], r["arm"], r["calls"]) for r in rows] == [
        ("2026-03-09T00:00:00Z", "1.0.0", "stable", "40"), ("2026-03-09T00:00:00Z", "1.1.0", "canary", "5")]
    assert rows[0]["errors"] == "1" and rows[0]["error_rate"] == "0.025000"
    assert rows[0]["cost_usd"] == "0.0223456789"
    assert rows[0]["environment"] == "production" and rows[0]["feature"] == "ticket-summarizer"
    assert float(rows[0]["p95_latency_ms"]) > 450


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_csv_export__text_from_services_never_becomes_a_formula(client, feature, envs, personas):
    """Prompt versions are accepted even when unknown, so any events:write key chooses them."""
    prod = envs["production"]
    for version in ('=HYPERLINK("https://evil.example","x")', "+1+1", "-2", "@SUM(A1)", "\tx", "1.0.0"):
        rollup(feature, prod, datetime(2026, 3, 9, 8, tzinfo=UTC), version=version, calls=1)
    client.force_login(personas["engineer"])
    response = client.get("/features/ticket-summarizer/dashboard.csv?env=production&range=7d")
    versions = sorted(r["prompt_version"] for r in csv.DictReader(io.StringIO(
        b"".join(response.streaming_content).decode())))
    assert versions == sorted(["'=HYPERLINK(\"https://evil.example\",\"x\")", "'+1+1", "'-2", "'@SUM(A1)", "'\tx",
                               "1.0.0"])


@pytest.mark.django_db
def test_csv_export__bad_input_is_a_400_with_the_reason(client, feature, envs, personas):
    client.force_login(personas["engineer"])
    response = client.get("/features/ticket-summarizer/dashboard.csv?range=13m")
    assert response.status_code == 400 and b"Unknown range '13m'" in response.content
    response = client.get("/features/ticket-summarizer/dashboard.csv?env=nope")
    assert response.status_code == 400 and b"Unknown environment 'nope'" in response.content


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_overview__every_feature_per_environment(client, feature, envs, personas):
    rollup(feature, envs["production"], NOW - timedelta(hours=3), calls=80, errors=8, cost="2.00")
    client.force_login(personas["nobody"])
    response = client.get("/dashboards/?range=24h")
    html = response.content.decode()
    assert response.status_code == 200
    assert "ticket-summarizer" in html and "10.00 %" in html and "$2.00" in html and "<polyline" in html
    only_staging = client.get("/dashboards/?env=staging").content.decode()
    assert "?env=production&amp;" not in only_staging and "?env=staging&amp;" in only_staging
    assert client.get("/dashboards/?env=mars").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/dashboards/", "/features/ticket-summarizer/dashboard",
                                 "/features/ticket-summarizer/dashboard.csv"])
def test_pages__require_login(client, feature, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.django_db
def test_pages__get_only(client, feature, personas):
    client.force_login(personas["admin"])
    assert client.post("/features/ticket-summarizer/dashboard").status_code == 405


# --- budgets -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_budget_gauges__month_and_top_user(feature):
    budget_set(actor=None, feature=feature, feature_monthly_cap="100", user_daily_cap="1.00")
    BudgetUsage.objects.create(feature=feature, scope=BudgetUsage.Scope.FEATURE_MONTH, subject="",
                               period_start=datetime(2026, 3, 1, tzinfo=UTC), unit="usd", spent=Decimal("81"),
                               reserved=Decimal("1"))
    for user, spent in (("u-small", "0.10"), ("u-big", "0.60")):
        BudgetUsage.objects.create(feature=feature, scope=BudgetUsage.Scope.USER_DAY, subject=user,
                                   period_start=datetime(2026, 3, 10, tzinfo=UTC), unit="usd", spent=Decimal(spent))
    month, user = dashboards.budget_gauges(feature=feature, now=NOW)
    assert (month.spent, month.reserved, month.percent, month.level) == (Decimal("81"), Decimal("1"), 82, "high")
    assert month.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert user.spent == Decimal("0.60") and user.percent == 60 and "u-big" in user.note


@pytest.mark.django_db
def test_budget_gauges__none_without_a_budget(feature):
    assert dashboards.budget_gauges(feature=feature, now=NOW) == []


# --- demo telemetry ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_seed_demo__writes_a_week_of_telemetry_once():
    call_command("seed_demo", stdout=io.StringIO())
    rollups = CallRollup.objects.count()
    assert rollups > 3000
    assert 100 <= CallEvent.objects.count() <= 400
    assert set(CallRollup.objects.values_list("environment__key", flat=True).distinct()) == {"staging", "production"}
    refund_canary = CallRollup.objects.filter(feature__key="refund-drafter", environment__key="production",
                                              arm="canary", prompt_version="1.1.0")
    assert refund_canary.exists()
    span = CallRollup.objects.order_by("minute").values_list("minute", flat=True)
    assert span.last() - span.first() > timedelta(days=6, hours=23)

    out = io.StringIO()
    call_command("seed_demo", stdout=out)  # idempotent
    assert CallRollup.objects.count() == rollups
    assert demo_telemetry_seed() == {"rollups": 0, "events": 0}


def _demo_rows() -> list[tuple]:
    return list(CallRollup.objects.order_by("minute", "feature_id", "environment_id", "prompt_version", "arm")
                .values_list("minute", "prompt_version", "arm", "calls", "errors", "cost_usd", "latency_histogram"))


@pytest.mark.django_db
def test_demo_telemetry__deterministic_and_realistic():
    with time_machine.travel(NOW, tick=False):
        call_command("seed_demo", stdout=io.StringIO())
        first = _demo_rows()
        CallRollup.objects.all().delete()
        CallEvent.objects.all().delete()
        demo_telemetry_seed()
        assert _demo_rows() == first
    time_range = dashboards.time_range_parse(range_key="7d", now=NOW)
    dash = dashboards.feature_dashboard(feature=Feature.objects.get(key="refund-drafter"),
                                        environment=Environment.objects.get(key="production"), time_range=time_range)
    canary = next(s for s in dash.series if s.arm == "canary")
    assert 0.005 < canary.total.calls / dash.total.calls < 0.05
    assert 0.002 < dash.total.error_rate < 0.03
    assert 1000 < dash.total.p50_ms < 2500 < dash.total.p95_ms < 6000
    assert dash.total.cost_usd > 0 and 0 < dash.total.cache_hit_rate < 0.5
    gauges = dashboards.budget_gauges(feature=dash.feature, now=NOW)
    assert gauges and gauges[0].spent > 0


def test_chart_library__is_vendored_with_its_licence():
    """Served by the app itself (no CDN); scripts/vendor_static reproduces it from npm."""
    from django.conf import settings

    folder = settings.BASE_DIR / "static" / "vendor" / "chartjs"
    assert (folder / "chart.umd.js").read_text()[:40].lstrip("/*!\n ").startswith("Chart.js v4")
    assert "MIT License" in (folder / "LICENSE.md").read_text()
    assert (settings.BASE_DIR / "scripts" / "vendor_static").stat().st_mode & 0o111
