"""Environments, credentials (SDK keys, personal API tokens) and the audit log."""
from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
key_validator = RegexValidator(
    KEY_PATTERN, "Use 1-63 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit."
)


class Environment(models.Model):
    key = models.CharField(max_length=63, unique=True, validators=[key_validator])
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(default=0, help_text="Display order")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "key"]

    def __str__(self) -> str:
        return self.key


class SdkKey(models.Model):
    """A service's credential for one environment. Only a SHA-256 of the secret is stored:
    the secret has full entropy, and every poll checks it, so a slow hash would be wrong."""

    SCOPES = ("config:read", "events:write", "reviews:write")

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="sdk_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a key")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.environment_id})"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class ApiToken(models.Model):
    """A person's token for the API; it acts with that person's roles."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """Who did what, when, before and after. Written by every service that changes state,
    in the same transaction as the change."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="Username or system actor")
    action = models.CharField(max_length=64, db_index=True, help_text="entity.verb")
    object_type = models.CharField(max_length=64)
    object_key = models.CharField(max_length=200, db_index=True)
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_key", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_key}"
