"""Budget API and page: the SDK-key check endpoint, the personal-token budget endpoint and the
UI form, each with allowed, forbidden and bad-input cases."""
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.core.services import sdk_key_create
from apps.metrics import budgets
from apps.metrics.models import Alert, Budget, BudgetReservation

pytestmark = pytest.mark.django_db

CHECK = "/api/v1/budgets/check"


@pytest.fixture
def service(envs):
    _, secret = sdk_key_create(environment=envs["production"], name="svc", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def capped(feature, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, max_tokens_per_request=1000, user_daily_cap="0.01",
                       feature_monthly_cap="10", time_zone="Asia/Tokyo")
    return feature


def test_budget_check_api__allows_then_denies(service, capped):
    body = {"feature": "ticket-summarizer", "user_key": "u1", "estimated_cost_usd": "0.006"}
    first = service.post(CHECK, body, format="json")
    assert first.status_code == 200, first.content
    data = first.json()
    assert data["allowed"] is True and data["reason"] == "ok"
    assert BudgetReservation.objects.filter(pk=data["reservation_id"]).exists()
    assert data["remaining"]["user_day"]["remaining"] == "0.0040000000"
    assert data["resets_at"].endswith("+09:00")
    second = service.post(CHECK, body, format="json").json()
    assert second == {**second, "allowed": False, "reason": "user_daily_cap", "reservation_id": None}
    assert second["resets_at"].endswith("T00:00:00+09:00")


def test_budget_check_api__over_token_cap__denied_with_reason(service, capped):
    data = service.post(CHECK, {"feature": "ticket-summarizer", "max_tokens": 1001}, format="json").json()
    assert (data["allowed"], data["reason"]) == (False, "max_tokens_per_request")


@pytest.mark.parametrize("body, field", [
    ({"feature": "ticket-summarizer", "estimated_cost_usd": "-1"}, "estimated_cost_usd"),
    ({"feature": "ticket-summarizer", "estimated_tokens": -5}, "estimated_tokens"),
    ({"feature": "ticket-summarizer", "max_tokens": "lots"}, "max_tokens"),
    ({"estimated_tokens": 5}, "feature"),
])
def test_budget_check_api__bad_input__400_error_shape(service, capped, body, field):
    response = service.post(CHECK, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_failed" and field in error["details"]
    assert BudgetReservation.objects.count() == 0


def test_budget_check_api__unknown_feature__404(service, capped):
    response = service.post(CHECK, {"feature": "nope"}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "feature_not_found"


def test_budget_check_api__credentials(capped, sdk_key, api_for):
    config_only = APIClient()
    config_only.credentials(HTTP_AUTHORIZATION=f"Bearer {sdk_key}")
    response = config_only.post(CHECK, {"feature": "ticket-summarizer"}, format="json")
    assert response.status_code == 403 and "events:write" in response.json()["error"]["message"]
    assert APIClient().post(CHECK, {"feature": "ticket-summarizer"}, format="json").status_code == 401
    assert api_for("admin").post(CHECK, {"feature": "ticket-summarizer"}, format="json").status_code == 401


def test_budget_check_api__wrong_method__405(service, capped):
    assert service.get(CHECK).status_code == 405


def test_budget_api__pm_sets_reviewer_forbidden(api_for, feature):
    url = "/api/v1/features/ticket-summarizer/budget"
    body = {"user_daily_cap": "1.00", "time_zone": "Asia/Tokyo", "feature_monthly_cap": "50"}
    ok = api_for("pm").put(url, body, format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["scopes"]["feature_month"]["resets_at"].endswith("+09:00")
    forbidden = api_for("reviewer").put(url, {"user_daily_cap": "9"}, format="json")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "permission_denied"
    assert Budget.objects.get(feature=feature).user_daily_cap == Decimal("1.00")
    status = api_for("reviewer").get(url + "?user_key=u1").json()  # anyone may read
    assert status["scopes"]["user_day"]["cap"] == "1.000000"
    assert api_for("pm").delete(url).status_code == 405


def test_budget_api__bad_time_zone__400(api_for, feature):
    response = api_for("pm").put("/api/v1/features/ticket-summarizer/budget", {"time_zone": "Nowhere/Land"},
                                 format="json")
    assert response.status_code == 400
    assert "time_zone" in response.json()["error"]["details"]


def test_budget_page__pm_saves_with_plain_form_post(client, personas, feature):
    client.force_login(personas["pm"])
    page = client.get("/features/ticket-summarizer/budget")
    assert page.status_code == 200 and b"No budget yet" in page.content
    response = client.post("/features/ticket-summarizer/budget", {
        "max_tokens_per_request": "2000", "user_daily_cap": "", "user_daily_unit": "usd",
        "feature_monthly_cap": "25", "feature_monthly_unit": "usd", "time_zone": "Europe/Berlin", "webhook_url": "",
    })
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert b"<progress" in page.content and b"+01:00" in page.content
    assert Budget.objects.get(feature=feature).feature_monthly_cap == 25


def test_budget_page__bad_input__inline_errors(client, personas, feature):
    client.force_login(personas["pm"])
    response = client.post("/features/ticket-summarizer/budget", {
        "user_daily_cap": "-3", "user_daily_unit": "usd", "feature_monthly_unit": "usd", "time_zone": "Mars/Base",
    })
    assert response.status_code == 400
    assert b"field-error" in response.content and b"Must be greater than zero" in response.content
    assert b"is not an IANA time zone name" in response.content
    assert not Budget.objects.exists()


def test_budget_page__reviewer_forbidden(client, personas, feature):
    client.force_login(personas["reviewer"])
    response = client.post("/features/ticket-summarizer/budget", {
        "user_daily_cap": "1", "user_daily_unit": "usd", "feature_monthly_unit": "usd", "time_zone": "UTC",
    })
    assert response.status_code == 403 and b"may not budget.manage" in response.content
    assert not Budget.objects.exists()


def test_alert_banner__shows_open_alerts_on_every_page(client, personas, feature):
    Alert.objects.create(kind="budget", feature=feature, dedupe_key="k1",
                         title="ticket-summarizer: monthly budget at 80 %")
    client.force_login(personas["reviewer"])
    page = client.get("/features/ticket-summarizer/budget")
    assert b"1 open alert" in page.content and b"monthly budget at 80 %" in page.content
    assert b'href="/features/ticket-summarizer/"' in page.content


def test_check_then_ingest__event_settles_its_reservation_once(service, capped):
    from django.utils import timezone

    from apps.metrics.models import BudgetUsage

    decision = service.post(CHECK, {"feature": "ticket-summarizer", "user_key": "u1", "estimated_cost_usd": "0.006"},
                            format="json").json()
    batch = {"events": [{
        "event_id": "evt-1", "feature": "ticket-summarizer", "prompt_version": "1.0.0", "model": "gpt-4o-mini",
        "latency_ms": 420, "input_tokens": 100, "output_tokens": 50, "cost_usd": "0.004", "user_key": "u1",
        "request_id": str(decision["reservation_id"]), "occurred_at": timezone.now().isoformat(),
    }]}
    for _ in range(2):  # re-sending the batch is harmless: the duplicate settles nothing
        response = service.post("/api/v1/events", batch, format="json")
        assert response.status_code in (200, 201, 207), response.content
    day = BudgetUsage.objects.get(scope="user_day", subject="u1")
    assert (day.spent, day.reserved) == (Decimal("0.004"), Decimal("0"))
    assert BudgetReservation.objects.get(pk=decision["reservation_id"]).settled_at is not None
    assert BudgetUsage.objects.get(scope="feature_month").spent == Decimal("0.004")


def test_budget_page__unknown_feature__404(client, personas):
    client.force_login(personas["pm"])
    assert client.get("/features/nope/budget").status_code == 404


def test_budget_page__anonymous__redirected_to_login(client, feature):
    response = client.get("/features/ticket-summarizer/budget")
    assert response.status_code == 302 and "/login/" in response["Location"]
