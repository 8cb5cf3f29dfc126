from django.contrib import admin

from apps.core.admin_base import ReadOnlyAdmin
from apps.prompts.models import Feature, PromptVersion


@admin.register(Feature)
class FeatureAdmin(ReadOnlyAdmin):
    list_display = ["key", "name", "stage", "owner", "created_at"]
    list_filter = ["stage"]
    search_fields = ["key", "name"]


@admin.register(PromptVersion)
class PromptVersionAdmin(ReadOnlyAdmin):
    list_display = ["feature", "version", "model", "author", "created_at", "content_hash"]
    list_filter = ["feature"]
