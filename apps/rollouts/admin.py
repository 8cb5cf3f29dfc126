from django.contrib import admin

from apps.core.admin_base import ReadOnlyAdmin
from apps.rollouts.models import ConfigSnapshot, Release, ReleaseRevision, Segment, VersionMark


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = ["feature", "environment", "current_revision", "created_at"]
    list_filter = ["environment"]


@admin.register(ReleaseRevision)
class ReleaseRevisionAdmin(ReadOnlyAdmin):
    list_display = ["release", "number", "enabled", "stable_version", "canary_version",
                    "canary_basis_points", "action", "created_by_label", "created_at"]
    list_filter = ["release__environment", "action"]


@admin.register(VersionMark)
class VersionMarkAdmin(ReadOnlyAdmin):
    list_display = ["release", "prompt_version", "kind", "created_at"]


@admin.register(Segment)
class SegmentAdmin(ReadOnlyAdmin):
    list_display = ["key", "name", "match"]


@admin.register(ConfigSnapshot)
class ConfigSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["environment", "revision", "etag", "updated_at"]
