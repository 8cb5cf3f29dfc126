"""Features and their immutable prompt versions."""
from django.conf import settings
from django.db import models

from apps.core.models import key_validator


class Stage(models.TextChoices):
    DEMO = "demo", "Demo"
    ALPHA = "alpha", "Alpha"
    BETA = "beta", "Beta"
    GA = "ga", "GA"
    RETIRED = "retired", "Retired"


class Feature(models.Model):
    key = models.CharField(max_length=63, unique=True, validators=[key_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_features"
    )
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.DEMO)
    runbook_url = models.URLField(blank=True)
    oncall_contact = models.CharField(max_length=200, blank=True)
    slo_p95_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    slo_error_rate = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class PromptVersion(models.Model):
    """Immutable once saved: editing a prompt means saving a new version."""

    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=64, help_text="Semantic version, e.g. 1.2.0")
    major = models.PositiveIntegerField()
    minor = models.PositiveIntegerField()
    patch = models.PositiveIntegerField()
    prerelease = models.CharField(max_length=64, blank=True)
    template = models.TextField(null=True, blank=True, help_text="Text template, or null for chat")
    messages = models.JSONField(null=True, blank=True, help_text="Chat messages, or null for text")
    variables = models.JSONField(default=list, help_text="Placeholders found when saved")
    model = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    fallback_models = models.JSONField(default=list, blank=True)
    changelog = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    eval_score = models.DecimalField(max_digits=6, decimal_places=4, null=True, blank=True)

    class Meta:
        ordering = ["feature", "-major", "-minor", "-patch", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["feature", "version"], name="prompt_version_unique_per_feature")
        ]

    def __str__(self) -> str:
        return f"{self.feature.key}@{self.version}"

    @property
    def kind(self) -> str:
        return "chat" if self.messages is not None else "text"

    def served_fields(self) -> dict:
        """The fields the config snapshot serves for this version."""
        out: dict = {"prompt_version": self.version}
        if self.messages is not None:
            out["messages"] = self.messages
        else:
            out["template"] = self.template
        out.update(model=self.model, params=self.params, fallback_models=self.fallback_models)
        return out
