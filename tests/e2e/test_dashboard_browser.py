"""The demo dashboard in a real browser: after seed_demo, a PM opens refund-drafter from its
feature page's Dashboard tab and Chart.js (served from static/vendor) draws every chart with
data, the canary arm included."""
import re
from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_demo_feature_dashboard_draws_charts(live_server, page, screenshot):
    call_command("seed_demo", stdout=StringIO())
    url = live_server.url
    page.goto(f"{url}/login/")
    page.fill("#id_username", "pm")
    page.fill("#id_password", "shipway-demo")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/features/refund-drafter/")
    page.get_by_role("link", name="Dashboard", exact=True).click()
    page.wait_for_url(re.compile(r"/features/refund-drafter/dashboard"))
    page.wait_for_function("window.shipwayCharts && window.shipwayCharts.length === 7")
    drawn = page.evaluate("""() => window.shipwayCharts.map(c => ({
        id: c.canvas.id, width: c.width,
        labels: c.data.datasets.map(d => d.label),
        points: c.data.datasets.reduce((n, d) => n + d.data.filter(v => v !== null && v > 0).length, 0)}))""")
    assert all(c["width"] > 100 and c["points"] > 0 for c in drawn if c["id"] != "chart-error_rate"), drawn
    calls = next(c for c in drawn if c["id"] == "chart-calls")
    assert calls["labels"] == ["v1.0.0 stable", "v1.1.0 canary"]
    assert "Production" in page.locator("#dash-env option:checked").inner_text()
    screenshot("dashboard")

    page.select_option("#dash-range", "24h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"range=24h"))
    page.wait_for_function("window.shipwayCharts && window.shipwayCharts.length === 7")
    assert page.evaluate("window.shipwayCharts[0].data.labels.length") == 24
