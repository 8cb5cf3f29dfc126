"""The feature pages share one tab bar (templates/_feature_tabs.html), and the demo seed gives
the demo features SLOs and impact metrics with two weeks of reported values."""
import re
from datetime import UTC, datetime
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from apps.core.models import AuditEvent
from apps.metrics.demo import DEMO_IMPACT, demo_impact_seed
from apps.metrics.impact import impact_week_report
from apps.metrics.models import MetricDefinition, MetricValue
from apps.prompts.models import Feature

TABS = {"releases": "/features/ticket-summarizer/", "dashboard": "/features/ticket-summarizer/dashboard",
        "budget": "/features/ticket-summarizer/budget", "impact": "/features/ticket-summarizer/impact"}
LABELS = {"releases": "Releases &amp; versions", "dashboard": "Dashboard", "budget": "Budget", "impact": "Impact"}


@pytest.mark.parametrize("active", list(TABS))
def test_feature_pages__same_four_tabs__current_one_marked(client, personas, feature, envs, active):
    client.force_login(personas["reviewer"])
    response = client.get(TABS[active])
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('<nav class="tabs" aria-label="Feature sections">') == 1
    nav = html.split('<nav class="tabs" aria-label="Feature sections">', 1)[1].split("</nav>", 1)[0]
    for name, url in TABS.items():
        marked = ' aria-current="page"' if name == active else ""
        query = r'(\?[^"]*)?' if name == "dashboard" else ""  # the dashboard tab keeps its range
        assert re.search(f'href="{re.escape(url)}{query}"{marked}>{LABELS[name]}</a>', nav), (name, nav)
    assert nav.count("aria-current") == 1


def test_dashboard_tab__keeps_the_range_on_its_own_link(client, personas, feature, envs):
    client.force_login(personas["reviewer"])
    html = client.get(TABS["dashboard"] + "?range=24h&env=staging").content.decode()
    assert 'href="/features/ticket-summarizer/dashboard?' in html.split('aria-label="Feature sections"', 1)[1]


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # Thursday of 2026-W49


@time_machine.travel(NOW, tick=False)
def test_seed_demo__slos_and_impact_metrics__idempotent(db):
    call_command("seed_demo", stdout=StringIO())
    summarizer = Feature.objects.get(key="ticket-summarizer")
    assert (summarizer.slo_p95_latency_ms, str(summarizer.slo_error_rate)) == (3000, "0.0500")
    assert not Feature.objects.filter(key__in=DEMO_IMPACT, slo_p95_latency_ms__isnull=True).exists()
    keys = dict(summarizer.metric_definitions.values_list("key", "kind"))
    assert keys == {"agent_accepted_rate": "primary", "p95_latency_ms": "secondary", "error_rate": "guardrail"}
    assert AuditEvent.objects.filter(action="metric_definition.created").count() == MetricDefinition.objects.count()
    values = MetricValue.objects.count()
    assert values == 3 * 14 * 4  # three reported metrics, every 6 hours for 14 days

    report = impact_week_report(feature=summarizer, environment=summarizer.metric_definitions.get(
        key="agent_accepted_rate").values.first().environment, monday=datetime(2026, 11, 30).date())
    primary = next(r for r in report.rows if r.definition.key == "agent_accepted_rate")
    guardrail = next(r for r in report.rows if r.definition.key == "error_rate")
    assert primary.value is not None and primary.previous is not None and primary.meets_target
    assert guardrail.meets_target  # demo traffic stays under its SLO-level guardrail

    # Again: nothing new, and an SLO someone changed stays.
    Feature.objects.filter(pk=summarizer.pk).update(slo_p95_latency_ms=4000)
    assert demo_impact_seed() == {"slos": 0, "definitions": 0, "values": 0}
    call_command("seed_demo", stdout=StringIO())
    assert MetricValue.objects.count() == values
    assert Feature.objects.get(pk=summarizer.pk).slo_p95_latency_ms == 4000
