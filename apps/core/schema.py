"""OpenAPI schema generation (drf-spectacular): component names that do not collide, and
the two bearer credentials described, so /api/schema/ is a schema clients can generate from."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class ShipwayAutoSchema(AutoSchema):
    """Serializers nested in an API view (`FeatureListApi.InputSerializer`) are named after
    the view (`FeatureListInput`): otherwise every view's `InputSerializer` becomes one
    `Input` component and all but one request body in the schema are wrong."""

    def get_serializer_name(self, serializer, direction):
        name = super().get_serializer_name(serializer, direction)
        outer = type(serializer).__qualname__.rpartition(".")[0].removesuffix("Api")
        return outer + name if outer and not name.startswith(outer) else name


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.core.authentication.ApiTokenAuthentication"
    name = "personalToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A personal API token (sw_pat_…); acts with its owner's roles."}


SDK_KEY = {"type": "http", "scheme": "bearer",
           "description": "An SDK key (sw_sdk_…) of one environment, with scopes config:read, events:write, "
                          "reviews:write."}


class SdkKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.core.authentication.SdkKeyAuthentication"
    name = "sdkKey"

    def get_security_definition(self, auto_schema):
        return SDK_KEY


class PollSdkKeyScheme(OpenApiAuthenticationExtension):
    """The polled endpoints' authentication (an SDK key with config:read, checked in the same
    query that reads the snapshot ETag). A second name: spectacular gives each class its own."""

    target_class = "apps.rollouts.config_api.PollAuthentication"
    name = "sdkKeyPoll"

    def get_security_definition(self, auto_schema):
        return SDK_KEY
