"""GET /api/v1/config: the snapshot, its ETag and 304, and who may read it."""
import json

import pytest
from django.test import Client

from apps.core.services import sdk_key_create
from apps.rollouts import services as rollouts


def _get(client: Client, key: str | None, **headers):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.get("/api/v1/config", **headers)


def test_config__serves_the_environment_snapshot(client, release, sdk_key):
    response = _get(client, sdk_key)
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["environment"] == "production"
    assert body["poll_interval_seconds"] >= 1
    feature = body["features"]["ticket-summarizer"]
    assert feature["enabled"] is True
    assert feature["salt"] == "ticket-summarizer"
    assert feature["stable"]["prompt_version"] == "1.0.0"
    assert feature["stable"]["template"] == "Summarise: {{ ticket }}"
    assert feature["canary"] is None
    assert body["flags"] == {} and isinstance(body["segments"], dict)


def test_config__etag_then_304_with_no_body(client, release, sdk_key):
    first = _get(client, sdk_key)
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    second = _get(client, sdk_key, HTTP_IF_NONE_MATCH=etag)
    assert second.status_code == 304
    assert second.content == b""
    assert second["ETag"] == etag


def test_config__etag_changes_when_served_content_changes(client, release, sdk_key, envs, personas):
    before = _get(client, sdk_key)
    rollouts.canary_start(feature=release.feature, environment=envs["production"], version="1.1.0",
                          percent="5", actor=personas["engineer"])
    after = _get(client, sdk_key, HTTP_IF_NONE_MATCH=before["ETag"])
    assert after.status_code == 200
    assert after["ETag"] != before["ETag"]
    body = json.loads(after.content)
    assert body["revision"] == json.loads(before.content)["revision"] + 1
    assert body["features"]["ticket-summarizer"]["canary"]["basis_points"] == 500


def test_config__poll_is_constant_queries_whatever_the_feature_count(
    client, release, sdk_key, envs, personas, django_assert_max_num_queries
):
    from apps.prompts.services import feature_create, prompt_version_create

    for i in range(15):
        f = feature_create(key=f"f-{i}", name=f"F{i}")
        prompt_version_create(feature=f, version="1.0.0", model="m", template="x")
        rollouts.release_create(feature=f, environment=envs["production"], stable_version="1.0.0")
    _get(client, sdk_key)  # the first use of a key also records last_used_at
    with django_assert_max_num_queries(1):
        ok = _get(client, sdk_key)
    assert len(json.loads(ok.content)["features"]) == 16
    with django_assert_max_num_queries(1):
        assert _get(client, sdk_key, HTTP_IF_NONE_MATCH=ok["ETag"]).status_code == 304


@pytest.mark.parametrize("header", ['W/{etag}', '"other", {etag}', 'W/"other" , W/{etag}', '*'])
def test_config__if_none_match_weak_comparison_and_lists__304(client, release, sdk_key, header):
    etag = _get(client, sdk_key)["ETag"]
    response = _get(client, sdk_key, HTTP_IF_NONE_MATCH=header.format(etag=etag))
    assert response.status_code == 304
    assert response.content == b"" and "Content-Type" not in response.headers
    assert response["ETag"] == etag


def test_config__stale_if_none_match__serves_the_current_body(client, release, sdk_key, envs, personas):
    before = _get(client, sdk_key)
    rollouts.release_set_enabled(feature=release.feature, environment=envs["production"], enabled=False,
                             actor=personas["oncall"])
    after = _get(client, sdk_key, HTTP_IF_NONE_MATCH=f'W/"stale", {before["ETag"]}')
    assert after.status_code == 200
    assert json.loads(after.content)["features"]["ticket-summarizer"]["enabled"] is False


def test_config__no_release_yet__empty_config_without_etag(client, envs):
    _, secret = sdk_key_create(environment=envs["staging"], name="s", scopes=["config:read"])
    response = _get(client, secret, HTTP_IF_NONE_MATCH='"anything"')
    assert response.status_code == 200
    assert json.loads(response.content) | {"poll_interval_seconds": 5} == {
        "environment": "staging", "revision": 0, "poll_interval_seconds": 5, "features": {}, "flags": {},
        "segments": {}}


def test_config__over_the_rate__429_with_retry_after(client, release, sdk_key, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"config": "3/min", "ofrep": "3/min"}}
    statuses = [_get(client, sdk_key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = _get(client, sdk_key)
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert json.loads(limited.content)["error"]["code"] == "throttled"
    # Another key has its own allowance.
    _, other = sdk_key_create(environment=release.environment, name="other", scopes=["config:read"])
    assert _get(client, other).status_code == 200


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, "not_authenticated"),
        ("Bearer", 401, "not_authenticated"),
        ("Bearer sw_sdk_wrong", 401, "authentication_failed"),
        ("Basic dXNlcjpwdw==", 401, "not_authenticated"),
    ],
)
def test_config__missing_or_wrong_key__401_json(client, release, auth, status, code):
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    response = client.get("/api/v1/config", **headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"] == "Bearer"


def test_config__key_of_another_environment_sees_only_its_own(client, release, envs):
    _, staging_key = sdk_key_create(environment=envs["staging"], name="s", scopes=["config:read"])
    body = json.loads(_get(client, staging_key).content)
    assert body["environment"] == "staging"
    assert "ticket-summarizer" not in body["features"]


def test_config__key_without_config_scope__403(client, release, envs):
    _, key = sdk_key_create(environment=envs["production"], name="events", scopes=["events:write"])
    response = _get(client, key)
    assert response.status_code == 403
    assert "config:read" in response.json()["error"]["message"]


def test_config__personal_token_is_not_an_sdk_key(release, api_for):
    response = api_for("oncall").get("/api/v1/config")
    assert response.status_code == 401
    assert "SDK key" in response.json()["error"]["message"]


def test_config__revoked_key__401(client, release, envs):
    from django.utils import timezone

    key, secret = sdk_key_create(environment=envs["production"], name="r", scopes=["config:read"])
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    assert _get(client, secret).status_code == 401


def test_config__wrong_method__405_json(client, sdk_key):
    response = client.post("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {sdk_key}")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_ofrep__over_the_rate__429_in_ofrep_shape_with_retry_after(client, release, sdk_key, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"config": "3/min", "ofrep": "2/min"}}
    url = "/ofrep/v1/evaluate/flags/ticket-summarizer"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {sdk_key}"}
    body = json.dumps({"context": {"targetingKey": "user-1"}})
    statuses = [client.post(url, body, content_type="application/json", **headers).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.post(url, body, content_type="application/json", **headers)
    assert int(limited["Retry-After"]) >= 1
    assert json.loads(limited.content) == {"key": "ticket-summarizer", "errorCode": "GENERAL",
                                           "errorDetails": "Too many requests"}


@pytest.mark.parametrize("url", ["/ofrep/v1/evaluate/flags/ticket-summarizer", "/ofrep/v1/evaluate/flags"])
@pytest.mark.parametrize("raw", [
    '{"context": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}",
    '{"context": {"targetingKey": "\\ud800"}}',
    '{"context": {"targetingKey": "u", "plan": "x\\udfff"}}',
    '{"context": {"targetingKey": "u", "\\ud800": 1}}',
    '{"context": {"targetingKey": "u", "n": 1e400}}',
])
def test_ofrep__bad_body__400_parse_error_not_500(client, release, sdk_key, url, raw):
    response = client.post(url, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {sdk_key}")
    assert response.status_code == 400, response.content
    assert response.json()["errorCode"] == "PARSE_ERROR"


@pytest.mark.parametrize("url", ["/ofrep/v1/evaluate/flags/ticket-summarizer", "/ofrep/v1/evaluate/flags"])
def test_ofrep__wrong_method_and_huge_body__ofrep_error_shape(client, release, sdk_key, settings, url):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {sdk_key}"}
    wrong = client.get(url, **auth)
    assert wrong.status_code == 405 and wrong.json()["errorCode"] == "GENERAL" and "POST" in wrong["Allow"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    big = client.post(url, '{"context": {"targetingKey": "' + "u" * 200 + '"}}', content_type="application/json",
                      **auth)
    assert big.status_code == 413 and big.json()["errorCode"] == "GENERAL"
