"""Writes for releases: every change is one durable transaction that writes a new numbered
release revision, an audit event with before and after, and the environment's new config
snapshot (DESIGN invariant 2). Rollback, kill switch, canary steps and restore live here."""
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from apps.core import roles
from apps.core.errors import Conflict, NotFound, ValidationFailed
from apps.core.models import Environment
from apps.core.services import audit_event_record
from apps.prompts.models import Feature, PromptVersion
from apps.rollouts.models import Release, ReleaseRevision, Segment, VersionMark
from apps.rollouts.snapshot import config_snapshot_rebuild, config_snapshot_rebuild_all
from shipway.bucketing import InvalidPercent, basis_points_to_percent, percent_to_basis_points

REVISION_FIELDS = (
    "enabled", "stable_version", "canary_version", "canary_basis_points", "salt",
    "review_sample_rate", "targeting",
)


def _actor_label(actor) -> str:
    return actor.get_username() if actor is not None else "system"


def basis_points_from_percent(percent: Any) -> int:
    if isinstance(percent, float):
        percent = repr(percent)  # the text the caller typed, never binary float arithmetic
    try:
        return percent_to_basis_points(str(percent) if isinstance(percent, int) else percent)
    except (InvalidPercent, TypeError) as exc:
        raise ValidationFailed(str(exc), code="invalid_percent", details={"percent": [str(exc)]}) from None


def _version_of(feature: Feature, version: PromptVersion | str) -> PromptVersion:
    if isinstance(version, PromptVersion):
        if version.feature_id != feature.id:
            raise ValidationFailed(f"Version {version.version} belongs to another feature")
        return version
    try:
        return PromptVersion.objects.get(feature=feature, version=version)
    except PromptVersion.DoesNotExist:
        raise NotFound(f"{feature.key} has no version '{version}'", code="version_not_found") from None


def _lock_release(*, feature: Feature, environment: Environment) -> Release:
    # Row lock: two people changing the same release serialise here; the second then sees
    # the first one's revision and fails the expected_revision check instead of overwriting.
    # The lock is taken without joins, and the current revision is read by a second query:
    # under READ COMMITTED a joined row would come from the snapshot taken *before* the
    # lock wait, i.e. the revision the winner has just replaced.
    try:
        release = Release.objects.select_for_update().get(feature=feature, environment=environment)
    except Release.DoesNotExist:
        raise NotFound(
            f"{feature.key} has no release in {environment.key} yet",
            code="release_not_found",
        ) from None
    release.feature, release.environment = feature, environment
    release.current_revision = ReleaseRevision.objects.select_related(
        "stable_version", "canary_version"
    ).get(pk=release.current_revision_id)
    return release


def _check_expected(release: Release, expected_revision: int | None) -> None:
    current = release.current_revision
    if expected_revision is not None and expected_revision != current.number:
        raise Conflict(
            f"You saw revision {expected_revision} of {release.feature.key} in "
            f"{release.environment.key}, but revision {current.number} is now current "
            f"({current.action} by {current.created_by_label} at {current.created_at:%Y-%m-%d %H:%M:%S} UTC). "
            "Reload and decide again.",
            code="stale_revision",
            details={"expected_revision": expected_revision, "current_revision": current.number,
                     "current_action": current.action, "current_by": current.created_by_label},
        )


def _write_revision(
    *, release: Release, actor, action: str, reason: str = "", **changes: Any
) -> ReleaseRevision:
    current = release.current_revision
    fields = {name: getattr(current, name) for name in REVISION_FIELDS}
    fields.update(changes)
    revision = ReleaseRevision.objects.create(
        release=release,
        number=current.number + 1,
        action=action,
        reason=reason,
        created_by=actor if actor is not None and actor.is_authenticated else None,
        created_by_label=_actor_label(actor),
        **fields,
    )
    release.current_revision = revision
    release.save(update_fields=["current_revision"])
    audit_event_record(
        actor=actor, action=action, object_type="release", object_key=release.feature.key,
        environment=release.environment, before=current.state(), after=revision.state(), reason=reason,
    )
    config_snapshot_rebuild(environment=release.environment)
    return revision


def release_create(
    *, feature: Feature, environment: Environment, stable_version: PromptVersion | str,
    actor=None, enabled: bool = True, review_sample_rate: Decimal | float = 0, reason: str = "",
) -> ReleaseRevision:
    """Put a feature on the air in an environment: revision 1 serves `stable_version`."""
    roles.require(actor, "release.configure")
    version = _version_of(feature, stable_version)
    with transaction.atomic(durable=True):
        release, created = Release.objects.select_for_update().get_or_create(
            feature=feature, environment=environment
        )
        if not created and release.current_revision_id:
            raise Conflict(f"{feature.key} already has a release in {environment.key}",
                           code="release_exists")
        revision = ReleaseRevision.objects.create(
            release=release, number=1, enabled=enabled, stable_version=version,
            canary_version=None, canary_basis_points=0, salt=feature.key,
            review_sample_rate=_sample_rate(review_sample_rate), targeting=[],
            action="release.created", reason=reason,
            created_by=actor if actor is not None and actor.is_authenticated else None,
            created_by_label=_actor_label(actor),
        )
        release.current_revision = revision
        release.save(update_fields=["current_revision"])
        audit_event_record(
            actor=actor, action="release.created", object_type="release", object_key=feature.key,
            environment=environment, after=revision.state(), reason=reason,
        )
        config_snapshot_rebuild(environment=environment)
    return revision


def _sample_rate(value: Any) -> Decimal:
    try:
        rate = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed("review_sample_rate must be a number between 0 and 1") from None
    if not rate.is_finite() or not (0 <= rate <= 1) or rate.as_tuple().exponent < -4:
        raise ValidationFailed("review_sample_rate must be between 0 and 1 with at most 4 decimals",
                               details={"review_sample_rate": ["Between 0 and 1"]})
    return rate


@dataclass(frozen=True)
class ChangeResult:
    revision: ReleaseRevision
    marked: PromptVersion | None = None


def _change(
    *, feature: Feature, environment: Environment, actor, permission: str, action: str,
    expected_revision: int | None, reason: str, compute,
) -> ReleaseRevision:
    """Shared body of every release change: permission, lock, stale check, new revision.
    `compute(release)` returns the field changes (and may raise a domain error)."""
    roles.require(actor, permission)
    with transaction.atomic(durable=True):
        release = _lock_release(feature=feature, environment=environment)
        _check_expected(release, expected_revision)
        changes = compute(release)
        return _write_revision(release=release, actor=actor, action=action, reason=reason, **changes)


def _refuse_marked(release: Release, version: PromptVersion) -> None:
    mark = VersionMark.objects.filter(release=release, prompt_version=version).first()
    if mark:
        raise Conflict(
            f"{version.version} was {mark.get_kind_display().lower()} in {release.environment.key} "
            f"(revision {mark.revision.number}); save a new version instead",
            code="version_marked",
        )


def release_set_stable(
    *, feature: Feature, environment: Environment, version: PromptVersion | str, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    """Serve `version` to everyone (a direct deploy, e.g. in staging). Ends any canary."""
    pv = _version_of(feature, version)

    def compute(release):
        _refuse_marked(release, pv)
        if release.current_revision.stable_version_id == pv.id and not release.current_revision.canary_version_id:
            raise Conflict(f"{pv.version} is already stable in {environment.key}", code="no_change")
        return {"stable_version": pv, "canary_version": None, "canary_basis_points": 0}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.canary", action="release.stable_set",
                   expected_revision=expected_revision, reason=reason, compute=compute)


def canary_start(
    *, feature: Feature, environment: Environment, version: PromptVersion | str, percent: Any,
    actor=None, expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    pv = _version_of(feature, version)
    bp = basis_points_from_percent(percent)
    if bp == 0:
        raise ValidationFailed("A canary needs a percentage above 0", code="invalid_percent")

    def compute(release):
        current = release.current_revision
        if current.canary_version_id:
            raise Conflict(f"A canary of {current.canary_version.version} is already running; "
                           "promote or abort it first", code="canary_running")
        if current.stable_version_id == pv.id:
            raise ValidationFailed(f"{pv.version} is already the stable version")
        _refuse_marked(release, pv)
        return {"canary_version": pv, "canary_basis_points": bp}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.canary", action="canary.started",
                   expected_revision=expected_revision, reason=reason, compute=compute)


def canary_set_percent(
    *, feature: Feature, environment: Environment, percent: Any, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    bp = basis_points_from_percent(percent)

    def compute(release):
        current = release.current_revision
        if not current.canary_version_id:
            raise Conflict("No canary is running", code="no_canary")
        if bp == current.canary_basis_points:
            raise Conflict(f"The canary is already at {basis_points_to_percent(bp)} %", code="no_change")
        return {"canary_basis_points": bp}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.canary", action="canary.percent_changed",
                   expected_revision=expected_revision, reason=reason, compute=compute)


def canary_promote(
    *, feature: Feature, environment: Environment, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    def compute(release):
        current = release.current_revision
        if not current.canary_version_id:
            raise Conflict("No canary is running", code="no_canary")
        return {"stable_version": current.canary_version, "canary_version": None,
                "canary_basis_points": 0}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.canary", action="canary.promoted",
                   expected_revision=expected_revision, reason=reason, compute=compute)


def canary_abort(
    *, feature: Feature, environment: Environment, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    """Stop the canary: everyone gets stable, and the canary version is marked halted."""
    roles.require(actor, "release.canary_abort")
    with transaction.atomic(durable=True):
        release = _lock_release(feature=feature, environment=environment)
        _check_expected(release, expected_revision)
        current = release.current_revision
        if not current.canary_version_id:
            raise Conflict("No canary is running", code="no_canary")
        halted = current.canary_version
        revision = _write_revision(release=release, actor=actor, action="canary.aborted",
                                   reason=reason, canary_version=None, canary_basis_points=0)
        VersionMark.objects.get_or_create(
            release=release, prompt_version=halted,
            defaults={"kind": VersionMark.Kind.HALTED, "revision": revision},
        )
    return revision


def release_set_enabled(
    *, feature: Feature, environment: Environment, enabled: bool, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    """The kill switch."""
    def compute(release):
        if release.current_revision.enabled == enabled:
            state = "on" if enabled else "off"
            raise Conflict(f"{feature.key} is already {state} in {environment.key}", code="no_change")
        return {"enabled": enabled}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.kill_switch",
                   action="release.enabled" if enabled else "release.killed",
                   expected_revision=expected_revision, reason=reason, compute=compute)


def release_set_review_sample_rate(
    *, feature: Feature, environment: Environment, rate: Any, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    value = _sample_rate(rate)
    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.configure", action="release.review_sample_rate_changed",
                   expected_revision=expected_revision, reason=reason,
                   compute=lambda release: {"review_sample_rate": value})


def release_set_salt(
    *, feature: Feature, environment: Environment, salt: str, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    """Change the bucketing salt: an explicit, audited action that re-draws every cohort."""
    if not salt or len(salt) > 200:
        raise ValidationFailed("salt must be 1-200 characters")
    if not reason:
        raise ValidationFailed("Changing the salt re-draws every cohort: give a reason",
                               details={"reason": ["Required"]})
    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.configure", action="release.salt_changed",
                   expected_revision=expected_revision, reason=reason,
                   compute=lambda release: {"salt": salt})


# --- rollback -----------------------------------------------------------------------------

def rollback_plan(*, release: Release) -> tuple[ReleaseRevision, ReleaseRevision, PromptVersion]:
    """DESIGN's rollback rule: (current, target, version to take off the air).

    V is the served version whose unbroken run of revisions ending at the current one started
    latest (a tie goes to the canary); the target is the newest revision before that run
    whose served set holds neither V nor any version already rolled back or halted here.
    Raises Conflict when there is no such revision."""
    revisions = list(
        release.revisions.select_related("stable_version", "canary_version").order_by("number")
    )
    current = revisions[-1]
    candidates = [current.stable_version_id]
    if current.canary_version_id and current.canary_basis_points > 0:
        candidates.append(current.canary_version_id)  # later in the list wins ties
    best_id, best_start = None, None
    for version_id in candidates:
        start = len(revisions) - 1
        while start > 0 and version_id in revisions[start - 1].served_versions():
            start -= 1
        if best_start is None or start >= best_start:
            best_id, best_start = version_id, start
    marked = set(VersionMark.objects.filter(release=release).values_list("prompt_version_id", flat=True))
    excluded = marked | {best_id}
    victim = next(v for v in (current.stable_version, current.canary_version) if v and v.id == best_id)
    for revision in reversed(revisions[:best_start]):
        if not (revision.served_versions() & excluded):
            return current, revision, victim
    raise Conflict(
        f"Nothing earlier to roll back to: every revision of {release.feature.key} in "
        f"{release.environment.key} before {victim.version} went on the air serves it or a "
        "version already rolled back or halted. "
        + ("Abort the canary instead." if victim.id == current.canary_version_id
           else "Set another stable version instead."),
        code="nothing_to_roll_back_to",
        details={"version": victim.version, "current_revision": current.number},
    )


def rollback_describe(*, current: ReleaseRevision, target: ReleaseRevision) -> str:
    """What will be served afterwards, in the words the confirm step shows."""
    def served(rev: ReleaseRevision) -> str:
        text = f"v{rev.stable_version.version} to {basis_points_to_percent(10000 - rev.canary_basis_points)} %"
        if rev.canary_version_id and rev.canary_basis_points:
            text += f" and v{rev.canary_version.version} to {basis_points_to_percent(rev.canary_basis_points)} %"
        return text

    def now(rev: ReleaseRevision) -> str:
        if rev.canary_version_id and rev.canary_basis_points:
            return f"v{rev.canary_version.version} at {basis_points_to_percent(rev.canary_basis_points)} %"
        return f"v{rev.stable_version.version} at 100 %"

    env = current.release.environment.key
    off = "" if current.enabled else " (the kill switch stays off: nothing is served until it is turned on)"
    return f"{env}: {served(target)} instead of {now(current)}{off}"


def release_rollback(
    *, feature: Feature, environment: Environment, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ChangeResult:
    roles.require(actor, "release.rollback")
    with transaction.atomic(durable=True):
        release = _lock_release(feature=feature, environment=environment)
        _check_expected(release, expected_revision)
        current, target, victim = rollback_plan(release=release)
        revision = _write_revision(
            release=release, actor=actor, action="release.rolled_back",
            reason=reason or f"Rolled back {victim.version} to revision {target.number}",
            stable_version=target.stable_version, canary_version=target.canary_version,
            canary_basis_points=target.canary_basis_points,
        )
        VersionMark.objects.update_or_create(
            release=release, prompt_version=victim,
            defaults={"kind": VersionMark.Kind.ROLLED_BACK, "revision": revision},
        )
    return ChangeResult(revision=revision, marked=victim)


def release_restore(
    *, feature: Feature, environment: Environment, number: int, actor=None,
    expected_revision: int | None = None, reason: str = "",
) -> ReleaseRevision:
    """The general undo: a new revision equal to revision `number` (every field)."""
    def compute(release):
        try:
            old = release.revisions.get(number=number)
        except ReleaseRevision.DoesNotExist:
            raise NotFound(f"{feature.key} has no revision {number} in {environment.key}",
                           code="revision_not_found") from None
        if old.pk == release.current_revision_id:
            raise Conflict(f"Revision {number} is already current", code="no_change")
        return {name: getattr(old, name) for name in REVISION_FIELDS}

    return _change(feature=feature, environment=environment, actor=actor,
                   permission="release.restore", action="release.restored",
                   expected_revision=expected_revision,
                   reason=reason or f"Restored revision {number}", compute=compute)


# --- segments ---------------------------------------------------------------------------

def segment_upsert(*, key: str, name: str, rules: list[dict], match: str = "any", actor=None) -> Segment:
    roles.require(actor, "release.configure")
    if match not in ("any", "all") or not isinstance(rules, list):
        raise ValidationFailed("A segment needs match 'any' or 'all' and a list of rules")
    with transaction.atomic(durable=True):
        before = Segment.objects.filter(key=key).first()
        segment, _ = Segment.objects.update_or_create(
            key=key, defaults={"name": name, "rules": rules, "match": match}
        )
        segment.full_clean()
        audit_event_record(
            actor=actor, action="segment.saved", object_type="segment", object_key=key,
            before=before.as_config() if before else None, after=segment.as_config(),
        )
        config_snapshot_rebuild_all()
    return segment
