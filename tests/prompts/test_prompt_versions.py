"""Prompt versions: immutable, semver, templates validated at save time, render errors."""
import pytest

from apps.core.errors import Conflict, PermissionDenied, ValidationFailed
from apps.prompts.models import PromptVersion
from apps.prompts.services import feature_create, prompt_version_create


def test_create__records_variables_and_hash(feature):
    pv = PromptVersion.objects.get(feature=feature, version="1.2.0")
    assert pv.variables == ["ticket"]
    assert len(pv.content_hash) == 64


@pytest.mark.parametrize("version", ["1.2", "v1.2.0", "01.2.0", "1.2.0.0", "", "latest"])
def test_create__invalid_semver__refused(feature, personas, version):
    with pytest.raises(ValidationFailed):
        prompt_version_create(feature=feature, version=version, model="m", template="x",
                              actor=personas["engineer"])


@pytest.mark.parametrize("version", ["2147483648.0.0", "1.99999999999999999999.0", "1.0.18446744073709551616"])
def test_create__semver_part_too_large_for_the_column__refused_not_500(feature, api_for, version):
    response = api_for("engineer").post(f"/api/v1/features/{feature.key}/versions",
                                        {"version": version, "template": "x", "model": "m"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_version"
    assert not PromptVersion.objects.filter(feature=feature, version=version).exists()


def test_create__largest_semver_part_is_kept(feature, personas):
    pv = prompt_version_create(feature=feature, version="2147483647.0.0", model="m", template="x",
                               actor=personas["engineer"])
    assert pv.major == 2147483647


def test_create__duplicate_semver__conflict_and_original_untouched(feature, personas):
    with pytest.raises(Conflict, match="immutable"):
        prompt_version_create(feature=feature, version="1.0.0", model="other", template="changed",
                              actor=personas["engineer"])
    assert PromptVersion.objects.get(feature=feature, version="1.0.0").model == "gpt-4o-mini"


@pytest.mark.parametrize("template", ["Hello {{ name", "{{ 1abc }}", "{{}}", "a {{ b c }} d", "{{ name }"])
def test_create__malformed_placeholder__refused_at_save(feature, personas, template):
    with pytest.raises(ValidationFailed) as exc:
        prompt_version_create(feature=feature, version="2.0.0", model="m", template=template,
                              actor=personas["engineer"])
    assert exc.value.code == "invalid_template"
    assert not PromptVersion.objects.filter(version="2.0.0").exists()


def test_create__json_braces_are_literal(feature, personas):
    pv = prompt_version_create(feature=feature, version="2.0.0", model="m",
                               template='Return {"a": {"b": 1}} for {{ q }}', actor=personas["engineer"])
    assert pv.variables == ["q"]


def test_create__chat_messages_validated(feature, personas):
    with pytest.raises(ValidationFailed):
        prompt_version_create(feature=feature, version="2.0.0", model="m", messages=[{"role": "wizard",
                                                                                        "content": "x"}],
                              actor=personas["engineer"])
    pv = prompt_version_create(feature=feature, version="2.0.0", model="m", actor=personas["engineer"],
                               messages=[{"role": "system", "content": "Be {{tone}}"},
                                         {"role": "user", "content": "{{ q }}"}])
    assert pv.variables == ["tone", "q"]


def test_create__reviewer_may_not(feature, personas):
    with pytest.raises(PermissionDenied):
        prompt_version_create(feature=feature, version="2.0.0", model="m", template="x",
                              actor=personas["reviewer"])


@pytest.mark.parametrize("key", ["Bad", "-x", "a b", "x" * 64, "", "ünï"])
def test_feature_key__must_match_pattern(db, key):
    with pytest.raises(ValidationFailed):
        feature_create(key=key, name="x")


def test_feature_key__duplicate__conflict(feature):
    with pytest.raises(Conflict):
        feature_create(key="ticket-summarizer", name="again")


def test_api__create_version_and_render(feature, api_for):
    eng = api_for("engineer")
    response = eng.post("/api/v1/features/ticket-summarizer/versions",
                        {"version": "2.0.0", "model": "gpt-4o", "template": "Hi {{ name }}, {{ topic }}"},
                        format="json")
    assert response.status_code == 201, response.content
    assert response.json()["variables"] == ["name", "topic"]
    missing = eng.post("/api/v1/features/ticket-summarizer/versions/2.0.0/render", {"variables": {"x": 1}},
                       format="json")
    assert missing.status_code == 400
    assert missing.json()["error"]["details"]["missing"] == ["name", "topic"]
    ok = eng.post("/api/v1/features/ticket-summarizer/versions/2.0.0/render",
                  {"variables": {"name": "{{topic}}", "topic": "refunds", "extra": 1}}, format="json")
    assert ok.json() == {"template": "Hi {{topic}}, refunds", "extra": ["extra"]}


def test_api__bad_template__400_names_the_problem(feature, api_for):
    response = api_for("engineer").post("/api/v1/features/ticket-summarizer/versions",
                                        {"version": "2.0.0", "model": "m", "template": "Hi {{ name"},
                                        format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_template"
    assert "line 1" in response.json()["error"]["message"]


def test_api__wrong_typed_body__400(feature, api_for):
    response = api_for("engineer").post("/api/v1/features/ticket-summarizer/versions",
                                        {"version": 2, "model": ["m"], "template": {"a": 1}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_failed"
