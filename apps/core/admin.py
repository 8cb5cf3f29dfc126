from django.contrib import admin

from apps.core.admin_base import ReadOnlyAdmin
from apps.core.models import ApiToken, AuditEvent, Environment, SdkKey


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ["key", "name", "position", "created_at"]


@admin.register(SdkKey)
class SdkKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "prefix", "environment", "scopes", "created_at", "revoked_at"]
    list_filter = ["environment"]
    exclude = ["key_hash"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "prefix", "user", "created_at", "revoked_at"]
    exclude = ["token_hash"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "object_type", "object_key", "environment"]
    list_filter = ["action", "object_type", "environment"]
    search_fields = ["object_key", "actor_label", "reason"]
