"""Management commands: seed_demo, create_sdk_key, rollback."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.core.selectors import sdk_key_authenticate
from apps.rollouts.models import Release


@pytest.fixture
def seeded(db):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _rev(feature: str, env: str = "production"):
    return Release.objects.get(feature__key=feature, environment__key=env).current_revision


def test_seed_demo__three_features_with_believable_history(seeded):
    assert "shipway-demo" in seeded
    summarizer = _rev("ticket-summarizer")
    assert summarizer.stable_version.version == "1.2.0" and summarizer.canary_version is None
    assert "canary.promoted" in set(summarizer.release.revisions.values_list("action", flat=True))
    refund = _rev("refund-drafter")
    assert (refund.canary_version.version, refund.canary_basis_points) == ("1.1.0", 500)
    assert _rev("support-router").canary_version is None
    assert _rev("support-router", "staging").stable_version.version == "2.1.0"


def test_seed_demo__history_is_spread_over_the_weeks_the_telemetry_covers(seeded):
    from datetime import timedelta

    from django.utils import timezone

    from apps.core.models import AuditEvent

    revisions = list(_rev("refund-drafter").release.revisions.order_by("number"))
    times = [r.created_at for r in revisions]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert timezone.now() - times[-1] > timedelta(hours=30)  # the 5 % step: a day and a half ago
    canary_audit = AuditEvent.objects.filter(object_key="refund-drafter", action="canary.started").get()
    assert canary_audit.created_at == revisions[1].created_at


def test_seed_demo__twice_is_harmless(seeded):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "already" in out.getvalue()


def test_create_sdk_key__prints_a_working_key_last(seeded):
    out = StringIO()
    call_command("create_sdk_key", "production", "--scopes", "config:read", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]
    key = sdk_key_authenticate(secret=secret)
    assert key.environment.key == "production" and key.scopes == ["config:read"]


def test_create_sdk_key__unknown_environment(seeded):
    with pytest.raises(CommandError, match="Unknown environment"):
        call_command("create_sdk_key", "mars", stdout=StringIO(), stderr=StringIO())


def test_rollback_command__aborts_the_canary(seeded):
    out = StringIO()
    call_command("rollback", "refund-drafter", "--env", "production", "--user", "oncall", "--reason", "spike",
                 stdout=out)
    assert "v1.0.0 to 100 % instead of v1.1.0 at 5 %" in out.getvalue()
    rev = _rev("refund-drafter")
    assert rev.canary_version is None and rev.created_by_label == "oncall" and rev.reason == "spike"


def test_rollback_command__nothing_earlier_is_a_clear_error(seeded):
    with pytest.raises(CommandError, match="Nothing earlier"):
        call_command("rollback", "support-router", "--env", "staging", stdout=StringIO())


def test_rollback_command__user_without_role_refused(seeded):
    with pytest.raises(CommandError, match="may not"):
        call_command("rollback", "refund-drafter", "--env", "production", "--user", "reviewer", stdout=StringIO())
