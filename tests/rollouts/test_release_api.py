"""Release API: personas x allowed / forbidden / wrong method, expected_revision, bad bodies."""
import pytest

from apps.rollouts import services as rollouts

BASE = "/api/v1/features/ticket-summarizer/environments/production"


@pytest.fixture
def canary(release, envs, personas):
    rollouts.canary_start(feature=release.feature, environment=envs["production"], version="1.1.0",
                          percent="5", actor=personas["engineer"])
    return release


def test_rollback_api__oncall_rolls_back_the_canary(canary, api_for):
    response = api_for("oncall").post(f"{BASE}/rollback", {"expected_revision": 2, "reason": "p95"},
                                      format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rolled_back"] == "1.1.0"
    assert body["revision"]["revision"] == 3
    assert body["revision"]["canary"] is None and body["revision"]["stable"] == "1.0.0"
    assert body["revision"]["created_by"] == "oncall"


def test_rollback_api__reviewer_is_forbidden(canary, api_for):
    response = api_for("reviewer").post(f"{BASE}/rollback", {"expected_revision": 2}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_rollback_api__wrong_method(canary, api_for):
    assert api_for("oncall").get(f"{BASE}/rollback").status_code == 405


def test_rollback_api__no_credentials__401(canary, client):
    response = client.post(f"{BASE}/rollback", {"expected_revision": 2}, content_type="application/json")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_rollback_api__sdk_key_is_not_a_personal_token(canary, client, sdk_key):
    response = client.post(f"{BASE}/rollback", {"expected_revision": 2}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {sdk_key}")
    assert response.status_code == 401


def test_rollback_api__stale_expected_revision__409(canary, api_for):
    oncall = api_for("oncall")
    assert oncall.post(f"{BASE}/rollback", {"expected_revision": 2}, format="json").status_code == 200
    second = oncall.post(f"{BASE}/rollback", {"expected_revision": 2}, format="json")
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "stale_revision"
    assert error["details"]["current_revision"] == 3


def test_rollback_api__nothing_earlier__409(release, api_for):
    response = api_for("oncall").post(f"{BASE}/rollback", {"expected_revision": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "nothing_to_roll_back_to"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("{not json", "application/json"), ("[]", "application/json"), ('{"expected_revision": "x"}',
                                                                      "application/json"),
     ("{}", "application/json"), ("expected_revision=2", "text/plain")],
)
def test_rollback_api__bad_body__4xx_json_and_nothing_written(canary, api_for, body, content_type):
    response = api_for("oncall").generic("POST", f"{BASE}/rollback", body, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert set(response.json()["error"]) == {"code", "message", "details"}
    canary.refresh_from_db()
    assert canary.current_revision.number == 2


@pytest.mark.parametrize("percent", ["100.5", "-1", "33.333", 33.333, True, None])
def test_canary_percent_api__bad_percent__400(canary, api_for, percent):
    response = api_for("engineer").post(f"{BASE}/canary/percent", {"expected_revision": 2, "percent": percent},
                                        format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_percent", "validation_failed")


def test_canary_percent_api__two_decimals_exact(canary, api_for):
    response = api_for("engineer").post(f"{BASE}/canary/percent", {"expected_revision": 2, "percent": "0.57"},
                                        format="json")
    assert response.status_code == 200
    assert response.json()["revision"]["canary_basis_points"] == 57


@pytest.mark.parametrize(("url", "code"), [
    ("/api/v1/features/nope/environments/production/rollback", "feature_not_found"),
    ("/api/v1/features/ticket-summarizer/environments/mars/rollback", "environment_not_found"),
])
def test_unknown_feature_or_environment__404(canary, api_for, url, code):
    response = api_for("oncall").post(url, {"expected_revision": 2}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == code


def test_kill_switch_api__and_release_detail(canary, api_for):
    oncall = api_for("oncall")
    response = oncall.post(f"{BASE}/kill-switch", {"expected_revision": 2, "enabled": False}, format="json")
    assert response.status_code == 200
    detail = oncall.get(f"{BASE}/release").json()
    assert detail["current"]["enabled"] is False
    assert [h["revision"] for h in detail["history"]] == [3, 2, 1]


def test_restore_api(canary, api_for):
    response = api_for("oncall").post(f"{BASE}/restore", {"expected_revision": 2, "revision": 1}, format="json")
    assert response.status_code == 200
    assert response.json()["revision"]["canary"] is None


def test_canary_promote_and_abort_api(canary, api_for):
    eng = api_for("engineer")
    assert eng.post(f"{BASE}/canary/promote", {"expected_revision": 2}, format="json").status_code == 200
    response = eng.post(f"{BASE}/canary/abort", {"expected_revision": 3}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_canary"
