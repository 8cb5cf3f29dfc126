"""URL wiring: the UI, the REST API under /api/v1/, OFREP, health, schema, admin."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core import views_ui as core_ui
from apps.core.views import healthz, readyz
from apps.metrics import (
    api_budgets,
    api_events,
    api_impact,
    otlp,
    views_alerts,
    views_budgets,
    views_dashboards,
    views_impact,
)
from apps.metrics import views as metrics_views
from apps.prompts import api as prompts_api
from apps.rollouts import api as rollouts_api
from apps.rollouts import config_api

release = "features/<str:key>/environments/<str:env>"
api_v1 = [
    path("features", prompts_api.FeatureListApi.as_view(), name="api-features"),
    path("features/<str:key>", prompts_api.FeatureDetailApi.as_view(), name="api-feature"),
    path("features/<str:key>/versions", prompts_api.PromptVersionListApi.as_view(), name="api-versions"),
    path("features/<str:key>/versions/<str:version>", prompts_api.PromptVersionDetailApi.as_view(),
         name="api-version"),
    path("features/<str:key>/versions/<str:version>/render", prompts_api.PromptVersionRenderApi.as_view(),
         name="api-version-render"),
    path(f"{release}/release", rollouts_api.ReleaseDetailApi.as_view(), name="api-release"),
    path(f"{release}/release/create", rollouts_api.ReleaseCreateApi.as_view(), name="api-release-create"),
    path(f"{release}/rollback", rollouts_api.ReleaseRollbackApi.as_view(), name="api-rollback"),
    path(f"{release}/kill-switch", rollouts_api.ReleaseKillSwitchApi.as_view(), name="api-kill-switch"),
    path(f"{release}/restore", rollouts_api.ReleaseRestoreApi.as_view(), name="api-restore"),
    path(f"{release}/canary", rollouts_api.CanaryStartApi.as_view(), name="api-canary-start"),
    path(f"{release}/canary/percent", rollouts_api.CanaryPercentApi.as_view(), name="api-canary-percent"),
    path(f"{release}/canary/promote", rollouts_api.CanaryPromoteApi.as_view(), name="api-canary-promote"),
    path(f"{release}/canary/abort", rollouts_api.CanaryAbortApi.as_view(), name="api-canary-abort"),
    path("budgets/check", api_budgets.BudgetCheckApi.as_view(), name="api-budget-check"),
    path("features/<str:key>/budget", api_budgets.BudgetDetailApi.as_view(), name="api-budget"),
    path("features/<str:key>/metrics", api_impact.FeatureMetricsReportApi.as_view(), name="api-feature-metrics"),
]

urlpatterns = [
    # The polled and ingest endpoints first: URL resolution walks this list in order, and
    # these take almost all of the traffic (a poll every few seconds from every service).
    path("api/v1/config", config_api.ConfigApi.as_view(), name="api-config"),
    path("ofrep/v1/evaluate/flags", config_api.OfrepBulkEvaluateApi.as_view(), name="ofrep-bulk"),
    path("ofrep/v1/evaluate/flags/<str:key>", config_api.OfrepEvaluateApi.as_view(), name="ofrep-flag"),
    path("api/v1/events", api_events.EventBatchApi.as_view(), name="api-events"),
    path("v1/traces", otlp.TraceExportApi.as_view(), name="otlp-traces"),
    path("", include("apps.rollouts.urls")),
    path("dashboards/", views_dashboards.dashboards_overview, name="dashboards"),
    path("alerts/", views_alerts.alerts_list, name="alerts"),
    path("features/<str:key>/impact", views_impact.impact_page, name="feature-impact"),
    path("features/<str:key>/impact/metrics", views_impact.metric_definition_create, name="metric-definition-create"),
    path("features/<str:key>/impact/metrics/<int:pk>/delete", views_impact.metric_definition_delete,
         name="metric-definition-delete"),
    path("features/<str:key>/budget", views_budgets.budget_page, name="feature-budget"),
    path("features/<str:key>/dashboard", views_dashboards.feature_dashboard, name="feature-dashboard"),
    path("features/<str:key>/dashboard.csv", views_dashboards.feature_dashboard_csv, name="feature-dashboard-csv"),
    path("settings/tokens/", core_ui.api_tokens, name="api-tokens"),
    path("settings/tokens/<int:pk>/revoke", core_ui.api_token_revoke, name="api-token-revoke"),
    path("settings/sdk-keys/", core_ui.sdk_keys, name="sdk-keys"),
    path("settings/prices/", metrics_views.prices, name="prices"),
    path("settings/sdk-keys/<int:pk>/revoke", core_ui.sdk_key_revoke, name="sdk-key-revoke"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
]

handler404 = "apps.core.errors_views.not_found"
handler500 = "apps.core.errors_views.server_error"
