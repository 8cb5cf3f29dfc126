"""UI routes."""
from django.urls import path

from apps.rollouts import views

rel = "features/<str:key>/<str:env>"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", views.audit_log, name="audit"),
    path("features/new", views.feature_create, name="feature-create"),
    path("features/<str:key>/", views.feature_detail, name="feature"),
    path("features/<str:key>/versions/new", views.version_create, name="version-create"),
    path("features/<str:key>/versions/validate", views.version_validate, name="version-validate"),
    path("features/<str:key>/diff", views.version_diff, name="version-diff"),
    path("features/<str:key>/releases", views.release_create, name="release-create"),
    path(f"{rel}/rollback", views.rollback, name="rollback"),
    path(f"{rel}/kill-switch", views.kill_switch, name="kill-switch"),
    path(f"{rel}/restore/<int:number>", views.restore, name="restore"),
    path(f"{rel}/canary/start", views.canary_start, name="canary-start"),
    path(f"{rel}/canary/percent", views.canary_percent, name="canary-percent"),
    path(f"{rel}/canary/promote", views.canary_promote, name="canary-promote"),
    path(f"{rel}/canary/abort", views.canary_abort, name="canary-abort"),
]
