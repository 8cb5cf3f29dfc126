"""Builds an environment's config snapshot: the whole configuration services poll, as the
exact bytes served, with a strong ETag over them. Called inside the transaction of every
change, so a poll never assembles anything (DESIGN invariant 4)."""
import hashlib
import json

from django.conf import settings

from apps.core.models import Environment
from apps.metrics.budgets import budget_served_state
from apps.rollouts.models import ConfigSnapshot, Release, Segment

NO_BUDGET = {"max_tokens_per_request": None, "exhausted": False}


def _feature_entry(release: Release, budget: dict | None = None) -> dict:
    rev = release.current_revision
    canary = None
    if rev.canary_version_id:
        canary = rev.canary_version.served_fields() | {"basis_points": rev.canary_basis_points}
    return {
        "enabled": rev.enabled,
        "stage": release.feature.stage,
        "salt": rev.salt,
        "release_revision": rev.number,
        "targeting": rev.targeting,
        "stable": rev.stable_version.served_fields(),
        "canary": canary,
        "review_sample_rate": float(rev.review_sample_rate),
        "budget": budget or NO_BUDGET,
    }


def snapshot_body(*, environment: Environment, revision: int) -> str:
    releases = (
        Release.objects.filter(environment=environment, current_revision__isnull=False)
        .select_related(
            "feature", "current_revision__stable_version", "current_revision__canary_version"
        )
        .order_by("feature__key")
    )
    budgets = budget_served_state(feature_ids=[r.feature_id for r in releases])  # one query for all
    payload = {
        "environment": environment.key,
        "revision": revision,
        "poll_interval_seconds": settings.SHIPWAY_POLL_INTERVAL_SECONDS,
        "features": {r.feature.key: _feature_entry(r, budgets.get(r.feature_id)) for r in releases},
        "flags": {},
        "segments": {s.key: s.as_config() for s in Segment.objects.all()},
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_snapshot_rebuild(*, environment: Environment) -> ConfigSnapshot:
    """Bump the environment's revision and rebuild its snapshot. Must run inside the
    transaction of the change; the row lock serialises changes within one environment, so
    two changes can never both read revision N and both write N+1."""
    snapshot, _ = ConfigSnapshot.objects.select_for_update().get_or_create(
        environment=environment, defaults={"body": "", "etag": ""}
    )
    snapshot.revision += 1
    snapshot.body = snapshot_body(environment=environment, revision=snapshot.revision)
    snapshot.etag = '"' + hashlib.sha256(snapshot.body.encode("utf-8")).hexdigest()[:40] + '"'
    snapshot.save(update_fields=["revision", "body", "etag", "updated_at"])
    return snapshot


def config_snapshot_rebuild_all() -> None:
    for environment in Environment.objects.all():
        config_snapshot_rebuild(environment=environment)


def budget_served_changed_receiver(sender, feature_ids: list[int], **kwargs) -> None:
    """apps.metrics sends `budget_served_changed` (inside its transaction) when a feature's
    served budget state flips; rebuild the snapshots of the environments serving it."""
    environments = Environment.objects.filter(releases__feature_id__in=feature_ids).distinct()
    for environment in environments:
        config_snapshot_rebuild(environment=environment)
