"""Releases (feature x environment), their immutable numbered revisions, version marks,
segments, and the per-environment config snapshot that polls are served from."""
from django.conf import settings
from django.db import models

from apps.core.models import Environment, key_validator
from apps.prompts.models import Feature, PromptVersion


class Release(models.Model):
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="releases")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="releases")
    # Denormalised pointer to the newest revision so the snapshot is one joined query.
    current_revision = models.OneToOneField(
        "ReleaseRevision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["feature", "environment"], name="release_unique_per_env")
        ]

    def __str__(self) -> str:
        return f"{self.feature.key}/{self.environment.key}"


class ReleaseRevision(models.Model):
    """What a release serves, as of one numbered change. Never edited after it is written."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="revisions")
    number = models.PositiveIntegerField()
    enabled = models.BooleanField(default=True)
    stable_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    canary_version = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    canary_basis_points = models.PositiveIntegerField(default=0)
    salt = models.CharField(max_length=200)
    review_sample_rate = models.DecimalField(max_digits=5, decimal_places=4, default=0)
    targeting = models.JSONField(default=list, blank=True)
    action = models.CharField(max_length=64, help_text="release.verb that wrote this revision")
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_label = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["release", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["release", "number"], name="revision_number_unique"),
            models.CheckConstraint(
                condition=models.Q(canary_basis_points__lte=10000), name="canary_bp_at_most_10000"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.release} r{self.number}"

    def served_versions(self) -> set[int]:
        """DESIGN's served(r): the stable version plus the canary when its share is above 0."""
        served = {self.stable_version_id}
        if self.canary_version_id and self.canary_basis_points > 0:
            served.add(self.canary_version_id)
        return served

    def state(self) -> dict:
        """The revision as plain data, for audit before/after and the API."""
        return {
            "revision": self.number,
            "enabled": self.enabled,
            "stable": self.stable_version.version,
            "canary": self.canary_version.version if self.canary_version_id else None,
            "canary_basis_points": self.canary_basis_points,
            "salt": self.salt,
            "review_sample_rate": float(self.review_sample_rate),
            "targeting": self.targeting,
        }


class VersionMark(models.Model):
    """A prompt version taken off the air in one release, so rollback never restores it."""

    class Kind(models.TextChoices):
        ROLLED_BACK = "rolled_back", "Rolled back"
        HALTED = "halted", "Halted"

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="marks")
    prompt_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="marks")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    revision = models.ForeignKey(ReleaseRevision, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["release", "prompt_version"], name="mark_unique_per_release")
        ]

    def __str__(self) -> str:
        return f"{self.prompt_version_id} {self.kind} in {self.release_id}"


class Segment(models.Model):
    """A named rule set over the evaluation context, e.g. `internal`."""

    key = models.CharField(max_length=63, unique=True, validators=[key_validator])
    name = models.CharField(max_length=200)
    match = models.CharField(max_length=3, choices=[("any", "any rule"), ("all", "all rules")], default="any")
    rules = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def as_config(self) -> dict:
        return {"key": self.key, "match": self.match, "rules": self.rules}


class ConfigSnapshot(models.Model):
    """The exact bytes served to polls for one environment, rebuilt in the transaction of
    every change, so a poll reads one row and never joins."""

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, primary_key=True,
                                       related_name="snapshot")
    revision = models.PositiveIntegerField(default=0)
    body = models.TextField()
    etag = models.CharField(max_length=80)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.environment_id} r{self.revision}"
