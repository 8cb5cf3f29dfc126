"""Bad JSON bodies get a 400 (or 413) in the API's error shape, never a 500: deep nesting,
numbers that overflow to infinity, lone surrogates and NULs, bodies over Django's limit."""
import pytest

from apps.core.parsers import json_loads_checked
from apps.prompts.models import Feature, PromptVersion

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


@pytest.mark.parametrize("raw, problem", [
    (DEEP, "nested too deeply"),
    ('{"a": ' * 65 + "1" + "}" * 65, "nested more than 64"),
    ('{"t": 1e400}', "out of range"),
    ('{"t": -1e400}', "out of range"),
    ('{"t": NaN}', "NaN"),
    ('{"t": Infinity}', "Infinity"),
    ('{"t": "x\\ud800"}', "surrogate"),
    ('{"t": "\\udfff"}', "surrogate"),
    ('{"\\ud800": 1}', "surrogate"),
    ('["a\\u0000b"]', "NUL"),
])
def test_json_loads_checked__refuses_what_breaks_later(raw, problem):
    with pytest.raises(ValueError, match=problem):
        json_loads_checked(raw)


def test_json_loads_checked__keeps_ordinary_documents():
    assert json_loads_checked('{"emoji": "\\ud83d\\ude00", "n": 1.5, "deep": ' + "[" * 60 + "]" * 60 + "}") == {
        "emoji": "\U0001F600", "n": 1.5, "deep": eval("[" * 60 + "]" * 60)}
    assert json_loads_checked("[" * 500 + "]" * 500, max_depth=None)  # no depth limit asked


@pytest.mark.parametrize("raw", [
    DEEP,
    '{"key": "ok-key", "name": "x", "description": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
    '{"key": "ok-key", "name": "x\\ud800"}',
])
def test_feature_create__bad_json__400_invalid_json(api_for, raw):
    response = api_for("admin").post("/api/v1/features", raw, content_type="application/json")
    _error(response, 400, "invalid_json")
    assert not Feature.objects.filter(key="ok-key").exists()


@pytest.mark.parametrize("params", ['{"t": 1e400}', '{"t": "\\ud800"}', '{"t": "a\\u0000"}',
                                    '{"a": ' * 5000 + "1" + "}" * 5000])
def test_version_create__params_that_cannot_be_stored__400_not_500_or_409(api_for, feature, params):
    raw = '{"version": "9.0.0", "template": "hi", "model": "m", "params": ' + params + "}"
    response = api_for("engineer").post(f"/api/v1/features/{feature.key}/versions", raw,
                                        content_type="application/json")
    _error(response, 400, "invalid_json")
    assert not PromptVersion.objects.filter(feature=feature, version="9.0.0").exists()


def test_render__variable_with_a_lone_surrogate__400(api_for, feature):
    response = api_for("engineer").post(f"/api/v1/features/{feature.key}/versions/1.0.0/render",
                                        '{"variables": {"ticket": "\\ud800"}}', content_type="application/json")
    _error(response, 400, "invalid_json")


def test_body_over_the_upload_limit__413_in_the_error_shape(api_for, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    raw = '{"key": "big", "name": "' + "x" * 2000 + '"}'
    error = _error(api_for("admin").post("/api/v1/features", raw, content_type="application/json"), 413,
                   "body_too_large")
    assert "1000 bytes" in error["message"]


def test_upload_limit_admits_a_full_event_batch(settings):
    from apps.metrics.api_events import MAX_BODY_BYTES

    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE >= MAX_BODY_BYTES


@pytest.mark.parametrize("url", ["/api/v1/features/ticket-summarizer/versions/%00", "/api/v1/features/a%00b",
                                 "/api/v1/features/ticket-summarizer/budget?user_key=%00",
                                 "/ofrep/v1/evaluate/flags/%00"])
def test_nul_in_url_or_query__api_400_json(api_for, feature, url):
    # PostgreSQL cannot compare text holding a NUL: every lookup by such a value was a 500 there.
    response = api_for("admin").get(url) if not url.startswith("/ofrep") else api_for("admin").post(url)
    _error(response, 400, "invalid_characters")


@pytest.mark.parametrize("method, url, data", [
    ("get", "/features/a%00b/", None), ("get", "/dashboards/?env=%00", None), ("get", "/audit/?actor=%00", None),
    ("post", "/features/ticket-summarizer/impact/metrics", {"key": "m", "name": "n", "env": "\x00"}),
])
def test_nul_in_url_query_or_form__ui_400_page(client, feature, personas, method, url, data):
    client.force_login(personas["admin"])
    response = getattr(client, method)(url, data) if data else getattr(client, method)(url)
    assert response.status_code == 400
    assert b"NUL character" in response.content


def test_ordinary_query_and_form_pass(client, feature, personas):
    client.force_login(personas["admin"])
    assert client.get("/audit/", {"actor": "admin"}).status_code == 200


def test_charset_of_the_content_type_is_honoured_and_non_text_codecs_refused(api_for, feature):
    client = api_for("engineer")
    url = f"/api/v1/features/{feature.key}/versions/1.0.0/render"
    latin = client.post(url, '{"variables": {"ticket": "caf\xe9"}}'.encode("latin-1"),
                        content_type="application/json; charset=latin-1")
    assert latin.status_code == 200 and latin.json()["template"].endswith("café")
    bomb = client.post(url, b"BZh9", content_type="application/json; charset=bz2_codec")
    _error(bomb, 400, "invalid_json")
