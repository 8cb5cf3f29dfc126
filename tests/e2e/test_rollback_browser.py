"""The README's 60-second tour in a real browser: on-call logs in, rolls back the
refund-drafter canary in production from the overview, and services polling the config
see the previous stable version at once."""
import re
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from apps.core.models import Environment
from apps.core.services import sdk_key_create

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.django_db(transaction=True)]

PASSWORD = "shipway-demo"


def test_oncall_rolls_back_a_canary_from_the_overview(live_server, page, screenshot):
    call_command("seed_demo", stdout=StringIO())
    url = live_server.url

    page.goto(f"{url}/")
    assert "/login/" in page.url
    page.fill("#id_username", "oncall")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")

    row = page.locator("table.striped tbody tr", has=page.get_by_role("link", name="refund-drafter", exact=True))
    assert "canary v1.1.0" in row.inner_text() and "5 %" in row.inner_text()
    screenshot("overview")

    row.get_by_role("link", name="Roll back production").click()
    page.wait_for_url(re.compile(r"/features/refund-drafter/production/rollback$"))
    what_next = page.locator("#what-next")
    assert "production: v1.0.0 to 100 % instead of v1.1.0 at 5 %" in what_next.inner_text()
    page.fill("#id_reason", "refund amounts wrong in the canary")
    screenshot("confirm")

    page.get_by_role("button", name="Roll back v1.1.0").click()
    page.wait_for_url(re.compile(r"/features/refund-drafter/(#env-production)?$"))
    flash = page.locator(".flash-success")
    assert re.search(r"production: rolled back v1\.1\.0 - revision 4 by oncall", flash.inner_text())
    card = page.locator("#env-production")
    card_text = card.inner_text()
    assert "Revision 4" in card_text and "oncall" in card_text
    assert "release.rolled_back" in card_text
    assert "canary" not in card.locator(".serving").inner_text()
    assert "v1.0.0" in card.locator(".serving").inner_text()
    screenshot("feature")
    card.locator("summary", has_text="History").click()
    marks = card.get_by_text(re.compile(r"Off the air here"))
    assert re.search(r"v1\.1\.0 rolled.?back", marks.inner_text())
    assert card.locator("tr.current").inner_text().startswith("4")
    screenshot("rollback")

    _, secret = sdk_key_create(environment=Environment.objects.get(key="production"), name="e2e",
                               scopes=["config:read"])
    response = requests.get(f"{url}/api/v1/config", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert response.status_code == 200
    refund = response.json()["features"]["refund-drafter"]
    assert refund["stable"]["prompt_version"] == "1.0.0"
    assert refund["canary"] is None
    assert refund["release_revision"] == 4
