"""The UI's core actions as plain form posts (no JavaScript), pages, and query counts."""
import pytest

from apps.rollouts import services as rollouts


@pytest.fixture
def canary(release, envs, personas):
    rollouts.canary_start(feature=release.feature, environment=envs["production"], version="1.1.0",
                          percent="5", actor=personas["engineer"])
    return release


def test_pages__need_login(client, db):
    response = client.get("/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_overview__shows_state_and_who_changed_it(client, canary, personas):
    client.force_login(personas["oncall"])
    html = client.get("/").content.decode()
    assert "ticket-summarizer" in html and "v1.0.0" in html and "canary v1.1.0" in html
    assert "5 %" in html and "engineer" in html


def test_overview__query_count_does_not_grow_with_features(client, canary, personas, envs,
                                                           django_assert_max_num_queries):
    from apps.prompts.services import feature_create, prompt_version_create

    for i in range(10):
        f = feature_create(key=f"f-{i}", name=f"F{i}")
        prompt_version_create(feature=f, version="1.0.0", model="m", template="x")
        rollouts.release_create(feature=f, environment=envs["production"], stable_version="1.0.0")
    client.force_login(personas["oncall"])
    with django_assert_max_num_queries(12):
        assert client.get("/").status_code == 200


def test_rollback__confirm_page_says_what_will_be_served(client, canary, personas):
    client.force_login(personas["oncall"])
    html = client.get("/features/ticket-summarizer/production/rollback").content.decode()
    assert "production: v1.0.0 to 100 % instead of v1.1.0 at 5 %" in html
    assert 'name="expected_revision" value="2"' in html


def test_rollback__plain_form_post_then_result_shows_who_and_when(client, canary, personas):
    client.force_login(personas["oncall"])
    response = client.post("/features/ticket-summarizer/production/rollback",
                           {"expected_revision": "2", "reason": "errors"}, follow=True)
    html = response.content.decode()
    assert "rolled back v1.1.0 - revision 3 by oncall" in html
    canary.refresh_from_db()
    assert canary.current_revision.canary_version is None


def test_rollback__stale_form__shows_the_conflict_not_a_500(client, canary, personas):
    client.force_login(personas["oncall"])
    client.post("/features/ticket-summarizer/production/rollback", {"expected_revision": "2"})
    html = client.post("/features/ticket-summarizer/production/rollback", {"expected_revision": "2"},
                       follow=True).content.decode()
    assert "revision 3 is now current" in html


def test_rollback__forbidden_role_sees_why(client, canary, personas):
    client.force_login(personas["reviewer"])
    html = client.post("/features/ticket-summarizer/production/rollback", {"expected_revision": "2"},
                       follow=True).content.decode()
    assert "may not release.rollback" in html
    canary.refresh_from_db()
    assert canary.current_revision.number == 2


def test_kill_switch__confirm_and_post(client, canary, personas):
    client.force_login(personas["oncall"])
    html = client.get("/features/ticket-summarizer/production/kill-switch").content.decode()
    assert "serve nothing" in html
    client.post("/features/ticket-summarizer/production/kill-switch", {"expected_revision": "2", "enabled": "0"})
    canary.refresh_from_db()
    assert canary.current_revision.enabled is False


def test_canary_forms__percent_promote(client, canary, personas):
    client.force_login(personas["engineer"])
    client.post("/features/ticket-summarizer/production/canary/percent", {"expected_revision": "2", "percent": "25"})
    html = client.post("/features/ticket-summarizer/production/canary/percent",
                       {"expected_revision": "3", "percent": "33.333"}, follow=True).content.decode()
    assert "at most two decimals" in html
    client.post("/features/ticket-summarizer/production/canary/promote", {"expected_revision": "3"})
    canary.refresh_from_db()
    assert canary.current_revision.stable_version.version == "1.1.0"


def test_restore__from_history(client, canary, personas):
    client.force_login(personas["oncall"])
    assert "Restore revision 1" in client.get("/features/ticket-summarizer/production/restore/1").content.decode()
    client.post("/features/ticket-summarizer/production/restore/1", {"expected_revision": "2", "revision": "1"})
    canary.refresh_from_db()
    assert canary.current_revision.number == 3 and canary.current_revision.canary_version is None


def test_feature_page__versions_history_and_diff(client, canary, personas):
    client.force_login(personas["engineer"])
    html = client.get("/features/ticket-summarizer/").content.decode()
    assert "Prompt versions" in html and "v1.2.0" in html and "History" in html
    diff = client.get("/features/ticket-summarizer/diff?a=1.0.0&b=1.1.0").content.decode()
    assert "Summarise briefly" in diff


def test_version_form__live_validation_fragment(client, feature, personas):
    client.force_login(personas["engineer"])
    bad = client.post("/features/ticket-summarizer/versions/validate", {"kind": "text", "body": "Hi {{ name"},
                      HTTP_HX_REQUEST="true").content.decode()
    assert "malformed" in bad and "<html" not in bad
    good = client.post("/features/ticket-summarizer/versions/validate", {"kind": "text", "body": "Hi {{ name }}"},
                       HTTP_HX_REQUEST="true").content.decode()
    assert "<code>name</code>" in good


def test_version_form__plain_post_creates_version(client, feature, personas):
    client.force_login(personas["engineer"])
    response = client.post("/features/ticket-summarizer/versions/new", {
        "version": "2.0.0", "kind": "text", "body": "Hello {{ who }}", "model": "gpt-4o", "params": "{}",
        "fallback_models": "gpt-4o-mini", "changelog": "x"})
    assert response.status_code == 302
    assert feature.versions.get(version="2.0.0").fallback_models == ["gpt-4o-mini"]


def test_version_form__bad_template_shows_inline_error(client, feature, personas):
    client.force_login(personas["engineer"])
    html = client.post("/features/ticket-summarizer/versions/new", {
        "version": "2.0.0", "kind": "text", "body": "Hello {{ who", "model": "gpt-4o", "params": "{}"}
    ).content.decode()
    assert "field-error" in html and "malformed" in html


def test_unknown_feature_page__404_not_500(client, personas):
    client.force_login(personas["oncall"])
    assert client.get("/features/nope/").status_code == 404


def test_audit_log__filters_and_paginates(client, canary, personas):
    client.force_login(personas["oncall"])
    html = client.get("/audit/?action=canary.started").content.decode()
    assert "canary.started" in html and "prompt_version.created</code>" not in html


def test_feature_page__canary_card_shows_its_health_verdict_since_the_canary_started(client, canary, personas):
    from datetime import timedelta

    from django.utils import timezone

    from apps.rollouts.models import ReleaseRevision
    from tests.metrics.test_health import make_rollup

    client.force_login(personas["oncall"])
    production = canary.environment
    page = client.get("/features/ticket-summarizer/").content.decode()
    assert "Canary health (since it started): <strong>not enough data yet" in page

    now = timezone.now().replace(second=0, microsecond=0)
    # The canary started 40 minutes ago; calls before that (an hour ago) are not its.
    ReleaseRevision.objects.filter(release=canary, action="canary.started").update(
        created_at=now - timedelta(minutes=40))
    for i in range(30):  # stable fine, canary failing a third of its calls
        at = now - timedelta(minutes=35) + timedelta(minutes=i)
        make_rollup(feature=canary.feature, environment=production, minute=at, calls=200, errors=2)
        make_rollup(feature=canary.feature, environment=production, minute=at, arm="canary", version="1.1.0",
                    calls=20, errors=7)
    make_rollup(feature=canary.feature, environment=production, minute=now - timedelta(minutes=60), arm="canary",
                version="1.1.0", calls=5000, errors=0)
    page = client.get("/features/ticket-summarizer/").content.decode()
    assert "Canary health (since it started): <strong>unhealthy</strong>" in page
    card = page.split("Canary health")[1][:600].lower()
    assert "error rate" in card and "5000" not in card and "5,000" not in card


def test_overview__latest_changes_are_what_is_served_not_set_up_noise(client, canary, personas):
    from datetime import date

    from apps.metrics.pricing import model_price_set

    model_price_set(actor=personas["admin"], model="gpt-test", input_per_million="1", cached_input_per_million="0.5",
                    output_per_million="2", effective_from=date(2026, 1, 1))
    client.force_login(personas["oncall"])
    page = client.get("/").content.decode()
    latest = page.split("Latest changes")[1]
    assert "canary.started" in latest and "release.created" in latest
    assert "model_price" not in latest


_DEEP = '{"a":' * 100_000 + "1" + "}" * 100_000


@pytest.mark.parametrize("kind, body, params", [
    ("text", "hi", '{"t": 1e400}'),  # SQLite: a CHECK failure reported as "already has a version"
    ("text", "hi", '{"t": NaN}'),
    ("text", "hi", '{"t": "\\ud800"}'),
    ("text", "hi", _DEEP),
    ("chat", '[{"role": "user", "content": "x\\ud800"}]', "{}"),
    ("chat", '[{"role": "user", "content": "x\\u0000"}]', "{}"),
    ("chat", "[" * 100_000 + "]" * 100_000, "{}"),
])
def test_version_form__json_that_cannot_be_stored__form_error_not_500(client, feature, personas, kind, body, params):
    from apps.prompts.models import PromptVersion

    client.force_login(personas["engineer"])
    response = client.post(f"/features/{feature.key}/versions/new", {
        "version": "7.0.0", "kind": kind, "body": body, "model": "m", "params": params})
    assert response.status_code == 200  # the form again, with the error
    assert b"already has a version" not in response.content
    assert not PromptVersion.objects.filter(feature=feature, version="7.0.0").exists()
    check = client.post(f"/features/{feature.key}/versions/validate", {"kind": "chat", "body": body})
    assert check.status_code == 200
