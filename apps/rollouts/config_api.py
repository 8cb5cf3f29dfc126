"""The polled endpoints: `GET /api/v1/config` and OpenFeature remote evaluation (OFREP).

Both are hot paths (STYLE habit 7): the SDK key is checked in one query, the ETag comes from
the stored snapshot, and a `304` is answered before the snapshot body is even loaded."""
import hashlib
import json

from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from apps.core.authentication import HasSdkScope, SdkKeyAuthentication
from apps.rollouts import selectors
from shipway.evaluation import Evaluation, evaluate_feature


class SdkKeyRateThrottle(SimpleRateThrottle):
    """Throttles per SDK key (its own scope per endpoint)."""

    def get_cache_key(self, request, view):
        key = getattr(request, "auth", None)
        ident = key.pk if key is not None and hasattr(key, "pk") else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ConfigThrottle(SdkKeyRateThrottle):
    scope = "config"


class OfrepThrottle(SdkKeyRateThrottle):
    scope = "ofrep"


def _etag_matches(request, etag: str) -> bool:
    header = request.META.get("HTTP_IF_NONE_MATCH", "")
    return bool(header) and (header.strip() == "*" or etag in [t.strip() for t in header.split(",")])


class ConfigApi(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    throttle_classes = [ConfigThrottle]
    required_scope = "config:read"

    @extend_schema(
        operation_id="config_retrieve",
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)],
        responses={200: OpenApiTypes.OBJECT, 304: None},
        description="The whole environment's configuration for local evaluation. Strong ETag; "
        "send it back in If-None-Match to get 304 with no body.",
    )
    def get(self, request):
        env_id = request.auth.environment_id
        if request.META.get("HTTP_IF_NONE_MATCH"):
            # Likely unchanged: compare the stored ETag before loading the body at all.
            etag = selectors.snapshot_etag(environment_id=env_id)
            if etag is not None and _etag_matches(request, etag):
                response = HttpResponse(status=304)
                response["ETag"] = etag
                return response
        snapshot = selectors.snapshot_get(environment_id=env_id)
        if snapshot is None:
            response = HttpResponse(_empty_body(request.auth.environment.key), content_type="application/json")
        else:
            response = HttpResponse(snapshot.body, content_type="application/json")
            response["ETag"] = snapshot.etag
        response["Cache-Control"] = "private, no-cache"
        return response


def _empty_body(environment_key: str) -> str:
    return json.dumps({"environment": environment_key, "revision": 0, "poll_interval_seconds": 5,
                       "features": {}, "flags": {}, "segments": {}}, separators=(",", ":"))


_PARSED: dict[str, dict] = {}


def _parsed(etag: str, body: str) -> dict:
    """Parsed snapshot, cached per ETag (content hash): OFREP evaluates against it without
    re-parsing. Keyed by the ETag alone so a hit costs no pass over the body."""
    config = _PARSED.get(etag)
    if config is None:
        if len(_PARSED) >= 64:
            _PARSED.clear()
        config = _PARSED[etag] = json.loads(body)
    return config


def _ofrep_error(key: str | None, code: str, details: str, status: int) -> JsonResponse:
    body = {"errorCode": code, "errorDetails": details}
    if key is not None:
        body = {"key": key} | body
    return JsonResponse(body, status=status)


class OfrepApiBase(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [HasSdkScope]
    throttle_classes = [OfrepThrottle]
    required_scope = "config:read"
    parser_classes = []  # the body is parsed here, to answer in OFREP's error shape

    def handle_exception(self, exc):
        # OFREP has its own error shape, also for auth failures and throttling.
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            response = _ofrep_error(self.kwargs.get("key"), "GENERAL", str(exc.detail), 401)
            response["WWW-Authenticate"] = "Bearer"
            return response
        if isinstance(exc, exceptions.PermissionDenied):
            return _ofrep_error(self.kwargs.get("key"), "GENERAL", str(exc.detail), 403)
        if isinstance(exc, exceptions.Throttled):
            response = _ofrep_error(self.kwargs.get("key"), "GENERAL", "Too many requests", 429)
            response["Retry-After"] = str(int(exc.wait or 1))
            return response
        return super().handle_exception(exc)

    def context_or_error(self, request, key: str | None) -> dict | JsonResponse:
        raw = request.body
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _ofrep_error(key, "PARSE_ERROR", f"The body is not valid JSON: {exc}", 400)
        if not isinstance(body, dict):
            return _ofrep_error(key, "PARSE_ERROR", "The body must be a JSON object", 400)
        context = body.get("context", {})
        if context is None:
            context = {}
        if not isinstance(context, dict):
            return _ofrep_error(key, "INVALID_CONTEXT", "context must be a JSON object", 400)
        tk = context.get("targetingKey")
        if tk is not None and not isinstance(tk, str):
            return _ofrep_error(key, "INVALID_CONTEXT", "context.targetingKey must be a string", 400)
        return context

    def config(self, request) -> tuple[dict, str]:
        snapshot = selectors.snapshot_get(environment_id=request.auth.environment_id)
        if snapshot is None:
            return json.loads(_empty_body(request.auth.environment.key)), '"empty"'
        return _parsed(snapshot.etag, snapshot.body), snapshot.etag


def _answer(key: str, ev: Evaluation, revision: int) -> dict:
    out: dict = {"key": key, "reason": ev.reason, "variant": ev.variant,
                 "metadata": {"revision": revision}}
    if ev.value is not None:
        out["value"] = ev.value
    return out


class OfrepEvaluateApi(OfrepApiBase):
    @extend_schema(operation_id="ofrep_evaluate_flag", request=OpenApiTypes.OBJECT,
                   responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT},
                   description="OpenFeature remote evaluation of one feature.")
    def post(self, request, key: str):
        context = self.context_or_error(request, key)
        if isinstance(context, JsonResponse):
            return context
        config, _ = self.config(request)
        feature = config["features"].get(key)
        if feature is None:
            return _ofrep_error(key, "FLAG_NOT_FOUND", f"No feature '{key}' in {config['environment']}", 404)
        ev = evaluate_feature(feature, context, config.get("segments"))
        if ev.error_code == "TARGETING_KEY_MISSING":
            return _ofrep_error(key, "TARGETING_KEY_MISSING",
                                f"'{key}' is split between stable and canary: send context.targetingKey", 400)
        return JsonResponse(_answer(key, ev, config["revision"]))


class OfrepBulkEvaluateApi(OfrepApiBase):
    @extend_schema(operation_id="ofrep_evaluate_flags", request=OpenApiTypes.OBJECT,
                   responses={200: OpenApiTypes.OBJECT, 304: None},
                   description="OpenFeature remote evaluation of every feature (bulk, with ETag).")
    def post(self, request):
        context = self.context_or_error(request, None)
        if isinstance(context, JsonResponse):
            return context
        config, snapshot_etag = self.config(request)
        # The answer depends on the snapshot and the context, so the ETag covers both.
        canonical = json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        etag = '"' + hashlib.sha256(f"{snapshot_etag}|{canonical}".encode()).hexdigest()[:40] + '"'
        if _etag_matches(request, etag):
            response = HttpResponse(status=304)
            response["ETag"] = etag
            return response
        flags = []
        for key, feature in config["features"].items():
            ev = evaluate_feature(feature, context, config.get("segments"))
            if ev.error_code:
                flags.append({"key": key, "errorCode": ev.error_code,
                              "errorDetails": ev.error_message or ev.error_code})
            else:
                flags.append(_answer(key, ev, config["revision"]))
        response = JsonResponse({"flags": flags, "metadata": {"revision": config["revision"]}})
        response["ETag"] = etag
        return response
