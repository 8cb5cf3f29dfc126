"""API for releases: state and history, rollback, kill switch, canary steps, restore.
People call it with a personal API token; every change carries `expected_revision`."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ValidationFailed
from apps.core.selectors import environment_get
from apps.prompts.selectors import feature_get
from apps.rollouts import selectors, services
from apps.rollouts.models import ReleaseRevision


class RevisionOutput(serializers.Serializer):
    revision = serializers.IntegerField(source="number")
    enabled = serializers.BooleanField()
    stable = serializers.CharField(source="stable_version.version")
    canary = serializers.CharField(source="canary_version.version", default=None)
    canary_basis_points = serializers.IntegerField()
    salt = serializers.CharField()
    review_sample_rate = serializers.FloatField()
    targeting = serializers.JSONField()
    action = serializers.CharField()
    reason = serializers.CharField()
    created_by = serializers.CharField(source="created_by_label")
    created_at = serializers.DateTimeField()


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed("The request is invalid; see details.", details=serializer.errors)
    return serializer.validated_data


class ReleaseTarget:
    def target(self, key: str, env: str):
        return feature_get(key=key), environment_get(key=env)


class ReleaseDetailApi(ReleaseTarget, APIView):
    class OutputSerializer(serializers.Serializer):
        feature = serializers.CharField()
        environment = serializers.CharField()
        current = RevisionOutput()
        marks = serializers.DictField(child=serializers.CharField())
        history = RevisionOutput(many=True)

    @extend_schema(responses=OutputSerializer, operation_id="release_retrieve")
    def get(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        release = selectors.release_get_current(feature=feature, environment=environment)
        return Response({
            "feature": feature.key,
            "environment": environment.key,
            "current": RevisionOutput(release.current_revision).data,
            "marks": selectors.release_marks(release=release),
            "history": RevisionOutput(selectors.release_revisions(release=release)[:100], many=True).data,
        })


class ChangeInput(serializers.Serializer):
    expected_revision = serializers.IntegerField(min_value=1)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


def _result(revision: ReleaseRevision, status: int = 200, **extra) -> Response:
    return Response({"revision": RevisionOutput(revision).data} | extra, status=status)


class ReleaseRollbackApi(ReleaseTarget, APIView):
    @extend_schema(request=ChangeInput, responses=RevisionOutput, operation_id="release_rollback",
                   description="Take the newest prompt version off the air (DESIGN's rollback rule). "
                   "409 when there is nothing earlier or expected_revision is stale.")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(ChangeInput, request.data)
        result = services.release_rollback(feature=feature, environment=environment, actor=request.user, **data)
        return _result(result.revision, rolled_back=result.marked.version)


class ReleaseKillSwitchApi(ReleaseTarget, APIView):
    class InputSerializer(ChangeInput):
        enabled = serializers.BooleanField()

    @extend_schema(request=InputSerializer, responses=RevisionOutput, operation_id="release_kill_switch")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(self.InputSerializer, request.data)
        return _result(services.release_set_enabled(
            feature=feature, environment=environment, actor=request.user, **data))


class CanaryStartApi(ReleaseTarget, APIView):
    class InputSerializer(ChangeInput):
        version = serializers.CharField(max_length=64)
        percent = serializers.CharField(max_length=12, help_text="e.g. \"5\" or \"0.5\" (at most two decimals)")

    @extend_schema(request=InputSerializer, responses=RevisionOutput, operation_id="canary_start")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(self.InputSerializer, request.data)
        return _result(services.canary_start(feature=feature, environment=environment, actor=request.user, **data))


class CanaryPercentApi(ReleaseTarget, APIView):
    class InputSerializer(ChangeInput):
        percent = serializers.CharField(max_length=12)

    @extend_schema(request=InputSerializer, responses=RevisionOutput, operation_id="canary_percent")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(self.InputSerializer, request.data)
        return _result(services.canary_set_percent(
            feature=feature, environment=environment, actor=request.user, **data))


class CanaryPromoteApi(ReleaseTarget, APIView):
    @extend_schema(request=ChangeInput, responses=RevisionOutput, operation_id="canary_promote")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(ChangeInput, request.data)
        return _result(services.canary_promote(feature=feature, environment=environment, actor=request.user, **data))


class CanaryAbortApi(ReleaseTarget, APIView):
    @extend_schema(request=ChangeInput, responses=RevisionOutput, operation_id="canary_abort")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(ChangeInput, request.data)
        return _result(services.canary_abort(feature=feature, environment=environment, actor=request.user, **data))


class ReleaseRestoreApi(ReleaseTarget, APIView):
    class InputSerializer(ChangeInput):
        revision = serializers.IntegerField(min_value=1)

    @extend_schema(request=InputSerializer, responses=RevisionOutput, operation_id="release_restore")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(self.InputSerializer, request.data)
        return _result(services.release_restore(
            feature=feature, environment=environment, actor=request.user, number=data["revision"],
            expected_revision=data["expected_revision"], reason=data["reason"]))


class ReleaseCreateApi(ReleaseTarget, APIView):
    class InputSerializer(serializers.Serializer):
        stable_version = serializers.CharField(max_length=64)
        enabled = serializers.BooleanField(default=True)
        reason = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: RevisionOutput}, operation_id="release_create")
    def post(self, request, key: str, env: str):
        feature, environment = self.target(key, env)
        data = _valid(self.InputSerializer, request.data)
        return _result(services.release_create(feature=feature, environment=environment, actor=request.user,
                                               **data), status=201)
