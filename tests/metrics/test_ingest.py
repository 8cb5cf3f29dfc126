"""`POST /api/v1/events`: batches of call events, duplicates, partial batches, bad input."""
import datetime as dt
import itertools
import json
from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from apps.core.services import sdk_key_create
from apps.metrics import ingest
from apps.metrics.models import CallEvent, ModelPrice
from apps.metrics.tasks import metrics_rollup

pytestmark = pytest.mark.django_db
URL = "/api/v1/events"
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count()


@pytest.fixture(autouse=True)
def _frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def rollups_enqueued(monkeypatch):
    """Record rollup enqueues instead of sending them to a broker."""
    calls = []
    monkeypatch.setattr(metrics_rollup, "delay_on_commit", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(ingest, "_last_enqueue", -1e9)
    return calls


def events_key_for(environment, scopes=("events:write",)) -> str:
    _, secret = sdk_key_create(environment=environment, name="events", scopes=list(scopes))
    return secret


@pytest.fixture
def events_api(feature, envs):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {events_key_for(envs['production'])}")
    return client


def ev(**overrides) -> dict:
    event = {
        "event_id": f"evt-{next(_ids)}", "feature": "ticket-summarizer", "prompt_version": "1.0.0",
        "arm": "stable", "model": "gpt-4o", "latency_ms": 812, "input_tokens": 2006, "cached_tokens": 1920,
        "output_tokens": 300, "cache_hit": False, "outcome": "success", "error_type": "",
        "user_key": "u-hash", "request_id": "req-1", "occurred_at": "2026-03-10T11:59:00Z",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def post(api, events, **kwargs):
    return api.post(URL, {"events": events}, format="json", **kwargs)


def reasons(response, index=0) -> set[str]:
    body = response.json()
    rejected = body["rejected"] if "rejected" in body else body["error"]["details"]["rejected"]
    return {r["code"] for r in next(r for r in rejected if r["index"] == index)["reasons"]}


# --------------------------------------------------------------------------- happy path


def test_ingest__one_event__stored_with_computed_cost(events_api, envs, rollups_enqueued):
    event = ev(event_id="e-1")
    response = post(events_api, [event])
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == ["e-1"]
    assert response.json()["counts"] == {"accepted": 1, "duplicate": 0, "rejected": 0}
    stored = CallEvent.objects.get(event_id="e-1")
    assert stored.environment == envs["production"]  # from the SDK key
    assert stored.cost_usd == Decimal("0.005615") and stored.cost_source == "computed"
    assert (stored.input_tokens, stored.cached_tokens, stored.output_tokens, stored.latency_ms) == (2006, 1920, 300,
                                                                                                   812)
    assert stored.occurred_at == dt.datetime(2026, 3, 10, 11, 59, tzinfo=dt.UTC)
    assert stored.user_key == "u-hash" and stored.request_id == "req-1" and stored.rolled_up is False
    assert stored.unknown_version is False
    assert len(rollups_enqueued) == 1


def test_ingest__reported_cost__kept(events_api):
    post(events_api, [ev(event_id="r", cost_usd=0.0123), ev(event_id="s", cost_usd="0.1000000001")])
    assert CallEvent.objects.get(event_id="r").cost_usd == Decimal("0.0123")
    assert CallEvent.objects.get(event_id="r").cost_source == "reported"
    assert CallEvent.objects.get(event_id="s").cost_usd == Decimal("0.1000000001")


def test_ingest__unpriced_model__cost_empty(events_api):
    post(events_api, [ev(event_id="u", model="home-grown-llm")])
    stored = CallEvent.objects.get(event_id="u")
    assert stored.cost_usd is None and stored.cost_source == "unpriced"


def test_ingest__price_changes__each_event_priced_at_its_date(events_api):
    ModelPrice.objects.create(model="m", input_per_million=1, cached_input_per_million=1, output_per_million=1,
                              effective_from=dt.date(2026, 3, 1))
    ModelPrice.objects.create(model="m", input_per_million=2, cached_input_per_million=2, output_per_million=2,
                              effective_from=dt.date(2026, 3, 10))
    post(events_api, [ev(event_id="old", model="m", input_tokens=1_000_000, cached_tokens=0, output_tokens=0,
                         occurred_at="2026-03-09T23:00:00+00:00"),
                      ev(event_id="new", model="m", input_tokens=1_000_000, cached_tokens=0, output_tokens=0,
                         occurred_at="2026-03-10T00:00:00+00:00")])
    assert CallEvent.objects.get(event_id="old").cost_usd == Decimal(1)
    assert CallEvent.objects.get(event_id="new").cost_usd == Decimal(2)


def test_ingest__defaults_for_optional_fields(events_api):
    minimal = {"event_id": "min", "feature": "ticket-summarizer", "model": "gpt-4o-mini", "latency_ms": 5,
               "occurred_at": "2026-03-10T11:00:00+02:00"}
    assert post(events_api, [minimal]).status_code == 200
    stored = CallEvent.objects.get(event_id="min")
    assert (stored.arm, stored.outcome, stored.prompt_version, stored.input_tokens, stored.cache_hit) == (
        "stable", "success", "", 0, False)
    assert stored.occurred_at == dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)


def test_ingest__unknown_prompt_version__accepted_and_flagged(events_api):
    response = post(events_api, [ev(event_id="v9", prompt_version="9.9.9"), ev(event_id="v1")])
    assert response.status_code == 200
    assert sorted(response.json()["accepted"]) == ["v1", "v9"]
    assert response.json()["flagged"] == [{"event_id": "v9", "flags": ["unknown_version"]}]
    assert CallEvent.objects.get(event_id="v9").unknown_version is True
    assert CallEvent.objects.get(event_id="v1").unknown_version is False


# --------------------------------------------------------------------------- duplicates and partial batches


def test_ingest__same_batch_twice__second_all_duplicates(events_api, rollups_enqueued):
    batch = [ev(event_id="d-1"), ev(event_id="d-2")]
    assert post(events_api, batch).json()["counts"]["accepted"] == 2
    ingest._last_enqueue = -1e9
    again = post(events_api, batch)
    assert again.status_code == 200
    assert again.json()["accepted"] == [] and sorted(again.json()["duplicate"]) == ["d-1", "d-2"]
    assert CallEvent.objects.count() == 2
    assert len(rollups_enqueued) == 1  # nothing new: no rollup


def test_ingest__duplicate_keeps_first_values(events_api):
    post(events_api, [ev(event_id="k", latency_ms=100)])
    post(events_api, [ev(event_id="k", latency_ms=999)])
    assert CallEvent.objects.get(event_id="k").latency_ms == 100


def test_ingest__repeated_inside_one_batch__stored_once(events_api):
    response = post(events_api, [ev(event_id="x"), ev(event_id="x", latency_ms=3)])
    assert response.json()["accepted"] == ["x"] and response.json()["duplicate"] == ["x"]
    assert CallEvent.objects.filter(event_id="x").count() == 1


def test_ingest__partial_batch__valid_events_committed(events_api):
    batch = [ev(event_id="ok-1"), ev(event_id="bad", input_tokens=-1), ev(event_id="ok-2"),
             ev(event_id="bad-2", feature="nope")]
    response = post(events_api, batch)
    assert response.status_code == 200
    body = response.json()
    assert sorted(body["accepted"]) == ["ok-1", "ok-2"]
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(1, "bad"), (3, "bad-2")]
    assert reasons(response, 1) == {"negative"} and reasons(response, 3) == {"unknown_feature"}
    assert set(CallEvent.objects.values_list("event_id", flat=True)) == {"ok-1", "ok-2"}


def test_ingest__budgets_settled_for_new_events_only(events_api, monkeypatch):
    seen = []
    monkeypatch.setattr(ingest, "budget_events_settle", lambda *, events: seen.append(
        sorted((e.event_id, e.pk is not None) for e in events)))
    post(events_api, [ev(event_id="b-1")])
    post(events_api, [ev(event_id="b-1"), ev(event_id="b-2"), ev(event_id="bad", latency_ms=-1)])
    assert seen == [[("b-1", True)], [("b-2", True)]]


def test_ingest__budget_settle_fails__nothing_written(events_api, monkeypatch):
    def boom(*, events):
        raise RuntimeError("settle failed")

    monkeypatch.setattr(ingest, "budget_events_settle", boom)
    with pytest.raises(RuntimeError):
        post(events_api, [ev(event_id="t-1")])
    assert not CallEvent.objects.exists()  # one transaction: events and budgets together


def test_ingest__500_events__constant_queries(events_api, django_assert_max_num_queries):
    batch = [ev(event_id=f"q-{i}", prompt_version=["1.0.0", "1.1.0", "7.0.0"][i % 3]) for i in range(500)]
    post(events_api, [ev()])  # the first use seeds the default prices
    with django_assert_max_num_queries(10):
        response = post(events_api, batch)
    assert response.json()["counts"]["accepted"] == 500
    assert CallEvent.objects.count() == 501


def test_ingest__1000_events__accepted(events_api):
    response = post(events_api, [ev(event_id=f"m-{i}") for i in range(1000)])
    assert response.status_code == 200 and response.json()["counts"]["accepted"] == 1000


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("overrides, code", [
    ({"input_tokens": -1}, "negative"),
    ({"output_tokens": -5}, "negative"),
    ({"cached_tokens": -1}, "negative"),
    ({"latency_ms": -1}, "negative"),
    ({"feature": "no-such-feature"}, "unknown_feature"),
    ({"input_tokens": 10, "cached_tokens": 11}, "cached_exceeds_input"),
    ({"occurred_at": "2026-03-10T12:05:01Z"}, "timestamp_in_future"),
    ({"occurred_at": "2026-02-08T11:59:59Z"}, "timestamp_too_old"),
    ({"occurred_at": "2026-03-10T11:00:00"}, "timestamp_without_offset"),
    ({"occurred_at": "yesterday"}, "invalid_timestamp"),
    ({"occurred_at": 1741600000}, "invalid_type"),
    ({"occurred_at": ...}, "required"),
    ({"input_tokens": "12"}, "invalid_type"),
    ({"input_tokens": 1.5}, "invalid_type"),
    ({"latency_ms": True}, "invalid_type"),
    ({"latency_ms": ...}, "required"),
    ({"input_tokens": 2**31}, "too_large"),
    ({"cache_hit": "yes"}, "invalid_type"),
    ({"cost_usd": -0.01}, "negative"),
    ({"cost_usd": "lots"}, "invalid_type"),
    ({"arm": "blue"}, "invalid_choice"),
    ({"outcome": "meh"}, "invalid_choice"),
    ({"event_id": ...}, "required"),
    ({"event_id": 12}, "invalid_type"),
    ({"event_id": "x" * 101}, "too_long"),
    ({"model": ...}, "required"),
    ({"feature": ["ticket-summarizer"]}, "invalid_type"),
])
def test_ingest__bad_event__rejected_with_reason(events_api, overrides, code):
    response = post(events_api, [ev(event_id="good"), ev(**({"event_id": "bad"} | overrides))])
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == ["good"]
    assert code in reasons(response, 1), response.json()["rejected"]
    assert list(CallEvent.objects.values_list("event_id", flat=True)) == ["good"]


def test_ingest__retention_edges(events_api):
    response = post(events_api, [ev(event_id="edge-future", occurred_at="2026-03-10T12:05:00Z"),
                                 ev(event_id="edge-old", occurred_at="2026-02-08T12:00:00Z")])
    assert sorted(response.json()["accepted"]) == ["edge-future", "edge-old"]


def test_ingest__retention_setting(events_api, settings):
    settings.SHIPWAY_EVENT_RETENTION_DAYS = 2
    response = post(events_api, [ev(event_id="ok", occurred_at="2026-03-08T12:00:00Z"),
                                 ev(event_id="old", occurred_at="2026-03-08T11:59:00Z")])
    assert response.json()["accepted"] == ["ok"]
    assert reasons(response, 1) == {"timestamp_too_old"}


def test_ingest__every_reason_listed(events_api):
    response = post(events_api, [ev(event_id="good"), ev(input_tokens=-1, latency_ms=-2, arm="x")])
    assert reasons(response, 1) == {"negative", "invalid_choice"}
    fields = {r["field"] for r in response.json()["rejected"][0]["reasons"]}
    assert fields == {"input_tokens", "latency_ms", "arm"}


def test_ingest__event_not_an_object__rejected(events_api):
    response = post(events_api, [ev(event_id="good"), "nope", None])
    assert response.status_code == 200
    assert [r["index"] for r in response.json()["rejected"]] == [1, 2]


def test_ingest__all_rejected__400_with_listing(events_api):
    response = post(events_api, [ev(latency_ms=-1), ev(feature="nope")])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "all_events_rejected"
    assert [r["index"] for r in error["details"]["rejected"]] == [0, 1]
    assert not CallEvent.objects.exists()


def test_ingest__batch_over_limit__413(events_api):
    response = post(events_api, [ev() for _ in range(1001)])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert not CallEvent.objects.exists()


@pytest.mark.parametrize("body", [{"events": []}, {"events": "x"}, {"evts": []}, [], {"events": {"a": 1}}])
def test_ingest__bad_envelope__400(events_api, body):
    response = events_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_ingest__malformed_json__400(events_api):
    response = events_api.post(URL, data='{"events": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_ingest__wrong_content_type__415(events_api, content_type):
    response = events_api.post(URL, data=json.dumps({"events": [ev()]}), content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert not CallEvent.objects.exists()


def test_ingest__key_without_events_scope__403(feature, envs, sdk_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {sdk_key}")  # config:read only
    response = post(client, [ev()])
    assert response.status_code == 403
    assert "events:write" in response.json()["error"]["message"]
    assert not CallEvent.objects.exists()


def test_ingest__no_key__401(feature, envs):
    response = post(APIClient(), [ev()])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_ingest__personal_token__401(feature, envs, api_for):
    response = post(api_for("admin"), [ev()])
    assert response.status_code == 401


def test_ingest__wrong_method__405(events_api):
    assert events_api.get(URL).status_code == 405


def test_ingest__staging_key__events_in_staging(feature, envs):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {events_key_for(envs['staging'])}")
    post(client, [ev(event_id="st")])
    assert CallEvent.objects.get(event_id="st").environment == envs["staging"]


def test_ingest__schema_documents_endpoint(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/v1/events" in text and "/v1/traces" in text and "unknown_version" in text
