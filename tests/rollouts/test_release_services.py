"""Release changes through the services: revisions, audit, marks, permissions, bad input."""
import pytest

from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from apps.core.models import AuditEvent
from apps.rollouts import services as rollouts
from apps.rollouts.models import ConfigSnapshot, ReleaseRevision, VersionMark


@pytest.fixture
def prod(envs):
    return envs["production"]


def _current(release):
    release.refresh_from_db()
    return release.current_revision


def test_canary_lifecycle__start_raise_promote(release, prod, personas):
    eng = personas["engineer"]
    r2 = rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="0.5",
                               actor=eng, expected_revision=1)
    assert (r2.number, r2.canary_basis_points, r2.canary_version.version) == (2, 50, "1.1.0")
    r3 = rollouts.canary_set_percent(feature=release.feature, environment=prod, percent="25", actor=eng)
    assert r3.canary_basis_points == 2500
    r4 = rollouts.canary_promote(feature=release.feature, environment=prod, actor=eng)
    assert (r4.stable_version.version, r4.canary_version, r4.canary_basis_points) == ("1.1.0", None, 0)
    actions = list(AuditEvent.objects.filter(object_type="release").values_list("action", flat=True))
    assert actions[:3] == ["canary.promoted", "canary.percent_changed", "canary.started"]


def test_every_change__one_revision_one_audit_event_one_snapshot_bump(release, prod, personas):
    snap_before = ConfigSnapshot.objects.get(environment=prod).revision
    audits_before = AuditEvent.objects.count()
    rev = rollouts.release_set_enabled(feature=release.feature, environment=prod, enabled=False,
                                       actor=personas["oncall"], reason="incident 42")
    assert ConfigSnapshot.objects.get(environment=prod).revision == snap_before + 1
    assert AuditEvent.objects.count() == audits_before + 1
    event = AuditEvent.objects.first()
    assert (event.action, event.actor_label, event.reason) == ("release.killed", "oncall", "incident 42")
    assert event.before["enabled"] is True and event.after["enabled"] is False
    assert rev.number == 2


def test_canary_abort__marks_halted_and_never_restarts(release, prod, personas):
    eng = personas["engineer"]
    rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5", actor=eng)
    rev = rollouts.canary_abort(feature=release.feature, environment=prod, actor=personas["oncall"])
    assert rev.canary_version is None and rev.canary_basis_points == 0
    assert VersionMark.objects.get(prompt_version__version="1.1.0").kind == "halted"
    with pytest.raises(Conflict, match="halted"):
        rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5", actor=eng)


def test_restore__copies_every_field_of_the_old_revision(release, prod, personas):
    eng, oncall = personas["engineer"], personas["oncall"]
    rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5", actor=eng)
    rollouts.release_set_enabled(feature=release.feature, environment=prod, enabled=False, actor=oncall)
    rev = rollouts.release_restore(feature=release.feature, environment=prod, number=1, actor=oncall,
                                   expected_revision=3)
    assert rev.number == 4
    assert (rev.enabled, rev.stable_version.version, rev.canary_version) == (True, "1.0.0", None)
    assert ReleaseRevision.objects.filter(release=release).count() == 4  # nothing deleted


def test_stale_expected_revision__409_names_what_happened(release, prod, personas):
    rollouts.release_set_enabled(feature=release.feature, environment=prod, enabled=False,
                                 actor=personas["oncall"], expected_revision=1)
    with pytest.raises(Conflict) as exc:
        rollouts.release_set_enabled(feature=release.feature, environment=prod, enabled=False,
                                     actor=personas["admin"], expected_revision=1)
    assert "revision 2" in exc.value.message and "oncall" in exc.value.message
    assert exc.value.code == "stale_revision"
    assert _current(release).number == 2


@pytest.mark.parametrize("percent", ["100.5", "-1", "33.333", "NaN", "1e2", "", "abc", 33.333])
def test_canary_percent__refused_with_a_clear_message_and_nothing_written(release, prod, personas, percent):
    with pytest.raises(ValidationFailed) as exc:
        rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent=percent,
                              actor=personas["engineer"])
    assert exc.value.code == "invalid_percent"
    assert _current(release).number == 1


def test_canary_percent__zero_is_refused_for_a_new_canary(release, prod, personas):
    with pytest.raises(ValidationFailed):
        rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="0",
                              actor=personas["engineer"])


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("oncall", True), ("admin", True), ("engineer", True), ("pm", False), ("reviewer", False),
     ("nobody", False)],
)
def test_rollback__permission_checked_in_the_service(release, prod, personas, role, allowed):
    rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5",
                          actor=personas["engineer"])
    if allowed:
        assert rollouts.release_rollback(feature=release.feature, environment=prod, actor=personas[role])
    else:
        with pytest.raises(PermissionDenied):
            rollouts.release_rollback(feature=release.feature, environment=prod, actor=personas[role])
        assert _current(release).number == 2


@pytest.mark.parametrize(("role", "allowed"), [("oncall", True), ("admin", True), ("engineer", False),
                                               ("pm", False)])
def test_kill_switch__permission(release, prod, personas, role, allowed):
    call = lambda: rollouts.release_set_enabled(  # noqa: E731
        feature=release.feature, environment=prod, enabled=False, actor=personas[role])
    if allowed:
        assert call().enabled is False
    else:
        with pytest.raises(PermissionDenied):
            call()


def test_unknown_version__404(release, prod, personas):
    with pytest.raises(NotFound):
        rollouts.canary_start(feature=release.feature, environment=prod, version="9.9.9", percent="5",
                              actor=personas["engineer"])


def test_salt_change__needs_a_reason_and_is_audited(release, prod, personas):
    with pytest.raises(ValidationFailed):
        rollouts.release_set_salt(feature=release.feature, environment=prod, salt="x:r2", actor=personas["admin"])
    rev = rollouts.release_set_salt(feature=release.feature, environment=prod, salt="x:r2",
                                    actor=personas["admin"], reason="re-draw cohorts after bias found")
    assert rev.salt == "x:r2"
    assert AuditEvent.objects.filter(action="release.salt_changed").exists()


def test_rollback_describe__says_what_will_be_served(release, prod, personas):
    rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5",
                          actor=personas["engineer"])
    current, target, victim = rollouts.rollback_plan(release=_current(release).release)
    text = rollouts.rollback_describe(current=current, target=target)
    assert text == "production: v1.0.0 to 100 % instead of v1.1.0 at 5 %"
    assert victim.version == "1.1.0"
