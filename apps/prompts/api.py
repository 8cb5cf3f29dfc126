"""API for features and prompt versions (personal API tokens or a session)."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ValidationFailed
from apps.prompts import selectors, services
from apps.prompts.models import Feature, PromptVersion, Stage
from shipway.templating import TemplateRenderError, render, render_messages


class FeatureOutput(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", default=None)

    class Meta:
        model = Feature
        fields = ["key", "name", "description", "owner", "stage", "runbook_url", "oncall_contact",
                  "created_at"]


class PromptVersionOutput(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default=None)

    class Meta:
        model = PromptVersion
        fields = ["version", "template", "messages", "variables", "model", "params",
                  "fallback_models", "changelog", "content_hash", "author", "created_at", "eval_score"]


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed("The request is invalid; see details.", details=serializer.errors)
    return serializer.validated_data


class FeatureListApi(APIView):
    class InputSerializer(serializers.Serializer):
        key = serializers.CharField(max_length=63)
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        stage = serializers.ChoiceField(choices=Stage.choices, required=False, default=Stage.DEMO)

    @extend_schema(responses=FeatureOutput(many=True), operation_id="features_list")
    def get(self, request):
        return Response(FeatureOutput(Feature.objects.select_related("owner"), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: FeatureOutput}, operation_id="features_create")
    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        feature = services.feature_create(actor=request.user, owner=request.user, **data)
        return Response(FeatureOutput(feature).data, status=201)


class FeatureDetailApi(APIView):
    @extend_schema(responses=FeatureOutput, operation_id="features_retrieve")
    def get(self, request, key: str):
        return Response(FeatureOutput(selectors.feature_get(key=key)).data)


class PromptVersionListApi(APIView):
    class InputSerializer(serializers.Serializer):
        version = serializers.CharField(max_length=64)
        template = serializers.CharField(required=False, allow_null=True, default=None, trim_whitespace=False)
        messages = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True,
                                         default=None)
        model = serializers.CharField(max_length=100)
        params = serializers.DictField(required=False, default=dict)
        fallback_models = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        changelog = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(responses=PromptVersionOutput(many=True), operation_id="versions_list")
    def get(self, request, key: str):
        feature = selectors.feature_get(key=key)
        return Response(PromptVersionOutput(selectors.prompt_version_list(feature=feature), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: PromptVersionOutput}, operation_id="versions_create")
    def post(self, request, key: str):
        feature = selectors.feature_get(key=key)
        data = _valid(self.InputSerializer, request.data)
        pv = services.prompt_version_create(feature=feature, actor=request.user, **data)
        return Response(PromptVersionOutput(pv).data, status=201)


class PromptVersionDetailApi(APIView):
    @extend_schema(responses=PromptVersionOutput, operation_id="versions_retrieve")
    def get(self, request, key: str, version: str):
        feature = selectors.feature_get(key=key)
        return Response(PromptVersionOutput(selectors.prompt_version_get(feature=feature, version=version)).data)


class PromptVersionRenderApi(APIView):
    class InputSerializer(serializers.Serializer):
        variables = serializers.DictField()

    class OutputSerializer(serializers.Serializer):
        template = serializers.CharField(required=False)
        messages = serializers.ListField(required=False)
        extra = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=InputSerializer, responses=OutputSerializer, operation_id="versions_render")
    def post(self, request, key: str, version: str):
        feature = selectors.feature_get(key=key)
        pv = selectors.prompt_version_get(feature=feature, version=version)
        variables = _valid(self.InputSerializer, request.data)["variables"]
        try:
            if pv.messages is not None:
                result = render_messages(pv.messages, variables)
                return Response({"messages": result.messages, "extra": result.extra})
            result = render(pv.template, variables)
            return Response({"template": result.text, "extra": result.extra})
        except TemplateRenderError as exc:
            raise ValidationFailed(str(exc), code="missing_variables",
                                   details={"missing": getattr(exc, "missing", [])}) from None
