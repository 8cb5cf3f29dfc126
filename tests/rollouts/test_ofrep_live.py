"""OFREP against a real HTTP server, driven by the real OpenFeature SDK and its OFREP provider
(what any product service would run), plus raw `requests` for the wire-level contract:
status codes, OFREP's error shape, the bulk endpoint's ETag."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from apps.core.services import sdk_key_create
from apps.rollouts import services as rollouts
from shipway.bucketing import bucket

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FEATURE = "ticket-summarizer"
CODE_DEFAULT = {"prompt_version": "code-default", "model": "none"}
_domains = itertools.count()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ofrep_evaluate.py"


@pytest.fixture
def client_for(live_server):
    """client_for(secret) -> an OpenFeature client with its own OFREP provider (its own
    domain), so no test sees another test's provider; all are shut down afterwards."""
    def make(secret: str):
        domain = f"ofrep-live-{next(_domains)}"
        api.set_provider(
            OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {secret}"},
                          timeout=10),
            domain,
        )
        return api.get_client(domain)

    yield make
    api.clear_providers()


@pytest.fixture
def ofrep(live_server, sdk_key):
    """ofrep(path, body=..., data=..., headers=...) -> a raw requests.Response."""
    def post(path: str = f"/ofrep/v1/evaluate/flags/{FEATURE}", *, body=None, data=None, key=None,
             headers=None):
        all_headers = {"Authorization": f"Bearer {key or sdk_key}"} | (headers or {})
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
            return requests.post(live_server.url + path, data=data, headers=all_headers, timeout=10)
        return requests.post(live_server.url + path, json=body, headers=all_headers, timeout=10)

    return post


@pytest.fixture
def canary(release, envs, personas):
    """ticket-summarizer in production: r2 stable 1.0.0, canary 1.1.0 at 5 %."""
    rollouts.canary_start(feature=release.feature, environment=envs["production"], version="1.1.0",
                          percent="5", actor=personas["engineer"])
    return release


def _keys(salt: str, basis_points: int, *, inside: bool, count: int) -> list[str]:
    """The first `count` keys user-0, user-1, ... that the bucketing contract puts inside
    (or outside) the canary."""
    found = []
    for i in range(100_000):
        key = f"user-{i}"
        if (bucket(salt, key) < basis_points) == inside:
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError("scanned 100000 keys without finding enough")


def _assert_ofrep_error(response, status: int, code: str, key: str | None = FEATURE) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    expected_keys = {"errorCode", "errorDetails"} | ({"key"} if key is not None else set())
    assert set(body) == expected_keys, body
    assert body["errorCode"] == code
    assert isinstance(body["errorDetails"], str) and body["errorDetails"]
    if key is not None:
        assert body["key"] == key
    return body


# --- the SDK sees what the contract says ------------------------------------------------------

def test_stable_feature__sdk_gets_the_prompt_config(client_for, release, sdk_key):
    details = client_for(sdk_key).get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert details.error_code is None, details.error_message
    assert details.reason == Reason.STATIC
    assert details.variant == "stable"
    value = details.value
    assert value["prompt_version"] == "1.0.0"
    assert value["template"] == "Summarise: {{ ticket }}"
    assert "messages" not in value  # a text prompt carries template, a chat prompt messages
    assert value["model"] == "gpt-4o-mini"
    assert value["params"] == {} and value["fallback_models"] == []
    assert value["arm"] == "stable"
    assert set(value) == {"prompt_version", "template", "model", "params", "fallback_models", "arm"}
    assert details.flag_metadata.get("revision", 0) >= 1


def test_canary_5_percent__split_exactly_as_bucketing_predicts(client_for, canary, sdk_key):
    client = client_for(sdk_key)
    inside = _keys(FEATURE, 500, inside=True, count=3)
    outside = _keys(FEATURE, 500, inside=False, count=3)
    for key in inside + outside + ["user-42"]:
        expected = "canary" if bucket(FEATURE, key) < 500 else "stable"
        details = client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext(key))
        assert details.error_code is None, (key, details.error_message)
        assert details.reason == Reason.SPLIT, key
        assert details.variant == expected, key
        assert details.value["arm"] == expected
        assert details.value["prompt_version"] == ("1.1.0" if expected == "canary" else "1.0.0"), key


def test_canary__same_key_is_sticky(client_for, canary, sdk_key):
    client = client_for(sdk_key)
    key = _keys(FEATURE, 500, inside=True, count=1)[0]
    variants = {client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext(key)).variant
                for _ in range(5)}
    assert variants == {"canary"}


def test_rollback__next_evaluation_serves_the_previous_stable(client_for, release, sdk_key, envs, personas):
    client = client_for(sdk_key)
    rollouts.release_set_stable(feature=release.feature, environment=envs["production"], version="1.1.0",
                                actor=personas["engineer"])
    before = client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert before.value["prompt_version"] == "1.1.0"

    result = rollouts.release_rollback(feature=release.feature, environment=envs["production"],
                                       actor=personas["oncall"], expected_revision=2)
    assert result.marked.version == "1.1.0"

    after = client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert after.error_code is None
    assert (after.variant, after.reason) == ("stable", Reason.STATIC)
    assert after.value["prompt_version"] == "1.0.0"
    assert after.flag_metadata["revision"] > before.flag_metadata["revision"]


def test_rollback_of_a_canary__canary_users_get_stable_again(client_for, canary, sdk_key, envs, personas):
    client = client_for(sdk_key)
    key = _keys(FEATURE, 500, inside=True, count=1)[0]
    assert client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext(key)).variant == "canary"
    rollouts.release_rollback(feature=canary.feature, environment=envs["production"], actor=personas["oncall"])
    details = client.get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext(key))
    assert (details.variant, details.reason) == ("stable", Reason.STATIC)
    assert details.value["prompt_version"] == "1.0.0"


def test_kill_switch_off__disabled_and_the_code_default(client_for, release, sdk_key, envs, personas, ofrep):
    rollouts.release_set_enabled(feature=release.feature, environment=envs["production"], enabled=False,
                                 actor=personas["oncall"])
    details = client_for(sdk_key).get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert details.error_code is None
    assert details.reason == Reason.DISABLED
    assert details.variant == "off"
    assert details.value == CODE_DEFAULT

    raw = ofrep(body={"context": {"targetingKey": "user-42"}})
    assert raw.status_code == 200
    assert raw.json()["reason"] == "DISABLED" and raw.json()["variant"] == "off"
    assert "value" not in raw.json()


def test_unknown_feature__flag_not_found(client_for, release, sdk_key, ofrep):
    details = client_for(sdk_key).get_object_details("no-such-feature", CODE_DEFAULT, EvaluationContext("user-42"))
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.reason == Reason.ERROR
    assert details.value == CODE_DEFAULT
    _assert_ofrep_error(ofrep("/ofrep/v1/evaluate/flags/no-such-feature", body={"context": {}}), 404,
                        "FLAG_NOT_FOUND", key="no-such-feature")


def test_split_without_targeting_key__targeting_key_missing(client_for, canary, sdk_key, ofrep):
    details = client_for(sdk_key).get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext())
    assert details.error_code == ErrorCode.TARGETING_KEY_MISSING
    assert details.value == CODE_DEFAULT
    # An empty targeting key is the same as none (DESIGN: "absent or empty: the same").
    details = client_for(sdk_key).get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext(""))
    assert details.error_code == ErrorCode.TARGETING_KEY_MISSING
    _assert_ofrep_error(ofrep(body={"context": {"plan": "pro"}}), 400, "TARGETING_KEY_MISSING")


def test_targeting_key_that_is_not_a_string__sdk_sees_invalid_context(client_for, release, sdk_key):
    # The provider copies attributes over the context, so an attribute named targetingKey wins.
    details = client_for(sdk_key).get_object_details(
        FEATURE, CODE_DEFAULT, EvaluationContext(attributes={"targetingKey": 42}))
    assert details.error_code == ErrorCode.INVALID_CONTEXT
    assert details.value == CODE_DEFAULT


@pytest.mark.parametrize("case", ["unknown_flag", "targeting_key_missing", "invalid_context"])
def test_404_and_400__client_sees_the_specific_code_never_general(client_for, canary, sdk_key, case):
    flag, context, expected = {
        "unknown_flag": ("nope", EvaluationContext("user-42"), ErrorCode.FLAG_NOT_FOUND),
        "targeting_key_missing": (FEATURE, EvaluationContext(), ErrorCode.TARGETING_KEY_MISSING),
        "invalid_context": (FEATURE, EvaluationContext(attributes={"targetingKey": 7}), ErrorCode.INVALID_CONTEXT),
    }[case]
    details = client_for(sdk_key).get_object_details(flag, CODE_DEFAULT, context)
    assert details.error_code != ErrorCode.GENERAL
    assert details.error_code == expected
    assert details.error_message


# --- credentials ---------------------------------------------------------------------------

def test_wrong_sdk_key__401_and_the_client_falls_back(client_for, release, ofrep):
    response = ofrep(body={"context": {"targetingKey": "user-42"}}, key="sw_sdk_wrong")
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert response.json()["errorCode"] == "GENERAL"

    details = client_for("sw_sdk_wrong").get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert details.value == CODE_DEFAULT
    assert details.reason == Reason.ERROR
    assert details.error_code is not None  # the provider maps 401 to GENERAL ("unauthorized")


def test_missing_key__401(live_server, release):
    response = requests.post(live_server.url + f"/ofrep/v1/evaluate/flags/{FEATURE}", json={}, timeout=10)
    assert response.status_code == 401


def test_key_of_another_environment__sees_that_environment_only(client_for, release, envs):
    _, staging_key = sdk_key_create(environment=envs["staging"], name="staging", scopes=["config:read"])
    details = client_for(staging_key).get_object_details(FEATURE, CODE_DEFAULT, EvaluationContext("user-42"))
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND


# --- bodies ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "code"), [
    ("{not json", "PARSE_ERROR"),
    ('{"context": {"targetingKey": "user-42"}', "PARSE_ERROR"),
    ("[1, 2]", "PARSE_ERROR"),
    ('{"context": [1, 2]}', "INVALID_CONTEXT"),
    ('{"context": "user-42"}', "INVALID_CONTEXT"),
    ('{"context": {"targetingKey": 42}}', "INVALID_CONTEXT"),
])
def test_bad_body__400_in_ofrep_shape(ofrep, release, data, code):
    _assert_ofrep_error(ofrep(data=data), 400, code)


@pytest.mark.parametrize(("data", "code"), [("{not json", "PARSE_ERROR"), ('{"context": 3}', "INVALID_CONTEXT")])
def test_bad_body__bulk__400_in_ofrep_shape(ofrep, release, data, code):
    _assert_ofrep_error(ofrep("/ofrep/v1/evaluate/flags", data=data), 400, code, key=None)


@pytest.mark.parametrize("data", ["{}", "", '{"context": null}', '{"other": 1}'])
def test_body_without_context__is_an_empty_context(ofrep, release, data):
    response = ofrep(data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["key"], body["reason"], body["variant"]) == (FEATURE, "STATIC", "stable")
    assert body["value"]["prompt_version"] == "1.0.0"


def test_body_without_context__on_a_split_is_targeting_key_missing(ofrep, canary):
    _assert_ofrep_error(ofrep(data="{}"), 400, "TARGETING_KEY_MISSING")


# --- bulk ------------------------------------------------------------------------------------------

BULK = "/ofrep/v1/evaluate/flags"


def test_bulk__flags_with_etag_and_304(ofrep, canary):
    context = {"context": {"targetingKey": "user-42"}}
    first = ofrep(BULK, body=context)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    flags = first.json()["flags"]
    assert [f["key"] for f in flags] == [FEATURE]
    expected = "canary" if bucket(FEATURE, "user-42") < 500 else "stable"
    assert flags[0]["reason"] == "SPLIT" and flags[0]["variant"] == expected
    assert flags[0]["value"]["arm"] == expected

    again = ofrep(BULK, body=context, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag

    other = ofrep(BULK, body={"context": {"targetingKey": "user-43"}}, headers={"If-None-Match": etag})
    assert other.status_code == 200
    assert other.headers["ETag"] != etag


def test_bulk__split_without_key__per_flag_error_not_a_failed_request(ofrep, canary):
    response = ofrep(BULK, body={})
    assert response.status_code == 200
    (flag,) = response.json()["flags"]
    assert flag["key"] == FEATURE and flag["errorCode"] == "TARGETING_KEY_MISSING"


def test_bulk__etag_changes_after_a_release_change(ofrep, release, envs, personas):
    context = {"context": {"targetingKey": "user-42"}}
    first = ofrep(BULK, body=context)
    etag = first.headers["ETag"]
    assert ofrep(BULK, body=context, headers={"If-None-Match": etag}).status_code == 304

    rollouts.release_set_stable(feature=release.feature, environment=envs["production"], version="1.1.0",
                                actor=personas["engineer"])
    after = ofrep(BULK, body=context, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["ETag"] != etag
    assert after.json()["flags"][0]["value"]["prompt_version"] == "1.1.0"


# --- the standalone example ----------------------------------------------------------------------

def _run_example(live_server, secret: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SHIPWAY_SDK_KEY"} | {"SHIPWAY_SDK_KEY": secret}
    return subprocess.run([sys.executable, str(EXAMPLE), "--url", live_server.url, *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_example_script__prints_variant_reason_version_model(live_server, release, sdk_key):
    done = _run_example(live_server, sdk_key, "--feature", FEATURE, "--targeting-key", "user-42")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert lines["variant"] == "stable"
    assert lines["reason"] == "STATIC"
    assert lines["prompt_version"] == "1.0.0"
    assert lines["model"] == "gpt-4o-mini"

    failed = _run_example(live_server, sdk_key, "--feature", "no-such-feature")
    assert failed.returncode != 0
    assert "FLAG_NOT_FOUND" in failed.stdout
