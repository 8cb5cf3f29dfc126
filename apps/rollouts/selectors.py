"""Reads for releases, revisions and snapshots."""
from apps.core.errors import NotFound
from apps.core.models import Environment
from apps.prompts.models import Feature
from apps.rollouts.models import ConfigSnapshot, Release, ReleaseRevision, VersionMark


def release_get_current(*, feature: Feature, environment: Environment) -> Release:
    try:
        return Release.objects.select_related(
            "feature", "environment", "current_revision__stable_version",
            "current_revision__canary_version", "current_revision__created_by",
        ).get(feature=feature, environment=environment)
    except Release.DoesNotExist:
        raise NotFound(f"{feature.key} has no release in {environment.key}",
                       code="release_not_found") from None


def release_revisions(*, release: Release):
    return release.revisions.select_related("stable_version", "canary_version").order_by("-number")


def release_marks(*, release: Release) -> dict[str, str]:
    """version -> mark kind, for versions taken off the air in this release."""
    return dict(
        VersionMark.objects.filter(release=release).values_list("prompt_version__version", "kind")
    )


def releases_by_feature(*, features) -> dict[tuple[int, int], Release]:
    """All releases of `features`, keyed by (feature id, environment id), in one query."""
    rows = Release.objects.filter(feature__in=features, current_revision__isnull=False).select_related(
        "environment", "current_revision__stable_version", "current_revision__canary_version"
    )
    return {(r.feature_id, r.environment_id): r for r in rows}


def snapshot_etag(*, environment_id: int) -> str | None:
    return ConfigSnapshot.objects.filter(environment_id=environment_id).values_list("etag", flat=True).first()


def snapshot_get(*, environment_id: int) -> ConfigSnapshot | None:
    return ConfigSnapshot.objects.filter(environment_id=environment_id).first()


def revision_get(*, release: Release, number: int) -> ReleaseRevision:
    try:
        return release.revisions.select_related("stable_version", "canary_version").get(number=number)
    except ReleaseRevision.DoesNotExist:
        raise NotFound(f"No revision {number}", code="revision_not_found") from None


def canary_started_at(*, release: Release, revision: ReleaseRevision):
    """When the current canary began: the newest revision up to `revision` that started
    this canary version. Percent changes since then are steps of the same canary."""
    started = (release.revisions.filter(number__lte=revision.number, action="canary.started",
                                        canary_version_id=revision.canary_version_id)
               .order_by("-number").values_list("created_at", flat=True).first())
    return started or revision.created_at
