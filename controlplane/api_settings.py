"""Django REST Framework and OpenAPI settings."""
from controlplane.env import env

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.CheckedJSONParser"],
    "EXCEPTION_HANDLER": "apps.core.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.ShipwayAutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "config": env.str("THROTTLE_CONFIG", default="6000/min"),
        "ofrep": env.str("THROTTLE_OFREP", default="6000/min"),
    },
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Shipway API",
    "DESCRIPTION": "Versioned prompts, releases, canaries and rollback for LLM features.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"BudgetUnitEnum": "apps.metrics.models.Budget.Unit"},
}
