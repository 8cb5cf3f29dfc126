"""The polled endpoints: `GET /api/v1/config` and OpenFeature remote evaluation (OFREP).

Both are hot paths (STYLE habit 7): a poll is one query, which checks the SDK key and reads
the environment's stored snapshot ETag (and, only when the body will be sent, the body) in
the same round trip; a `304` is answered before any per-feature work."""
import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpResponse, HttpResponseNotModified, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from apps.core.authentication import (
    HasSdkScope,
    SdkKeyAuthentication,
    SdkPrincipal,
    bearer_secret,
    touch_last_used,
)
from apps.core.models import Environment, SdkKey
from apps.core.parsers import json_loads_checked
from apps.core.services import API_TOKEN_PREFIX, hash_secret
from apps.core.throttling import FixedWindowThrottle
from apps.rollouts.models import ConfigSnapshot
from shipway.evaluation import Evaluation, evaluate_feature


class ConfigThrottle(FixedWindowThrottle):
    scope = "config"


class OfrepThrottle(FixedWindowThrottle):
    scope = "ofrep"


class JsonOnly(BaseContentNegotiation):
    """These views only ever answer JSON (or an empty 304): skip DRF's negotiation."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return None


@dataclass(frozen=True)
class PollCredential:
    """request.auth on the polled endpoints: what they need of the SDK key, plus the ETag of
    its environment's snapshot, all read by one query (`PollAuthentication`)."""

    pk: int
    environment_id: int
    environment_key: str
    scopes: tuple[str, ...]
    snapshot_etag: str | None  # None: nothing released in the environment yet

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


_POLL_SQL = (
    "SELECT k.id, k.environment_id, k.scopes, e.key, s.etag "
    f"FROM {SdkKey._meta.db_table} k "
    f"JOIN {Environment._meta.db_table} e ON e.id = k.environment_id "
    f"LEFT JOIN {ConfigSnapshot._meta.db_table} s ON s.environment_id = k.environment_id "
    "WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


class PollAuthentication(SdkKeyAuthentication):
    """SDK-key authentication for the polled endpoints: checks the key and reads its
    environment's snapshot ETag in the same query (the body comes from `snapshot_bytes`)."""

    def authenticate(self, request):
        secret = bearer_secret(request)
        if secret is None or secret.startswith(API_TOKEN_PREFIX):
            return super().authenticate(request)  # the same errors as everywhere else
        with connection.cursor() as cursor:
            cursor.execute(_POLL_SQL, [hash_secret(secret)])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked SDK key.")
        key_id, environment_id, scopes, environment_key, etag = row
        scopes = json.loads(scopes) if isinstance(scopes, str) else scopes  # SQLite gives text
        credential = PollCredential(key_id, environment_id, environment_key, tuple(scopes), etag)
        touch_last_used(SdkKey, key_id)
        return SdkPrincipal(credential), credential


# ETag -> the exact bytes served, and the parsed config OFREP evaluates against. The ETag is
# a hash of the bytes, so an entry can never be stale, only unused; a change makes a new one.
_BYTES: dict[str, bytes] = {}
_PARSED: dict[str, dict] = {}
_CACHE_ENTRIES = 64


def _remember(cache: dict, etag: str, value):
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[etag] = value
    return value


def snapshot_bytes(credential: PollCredential) -> tuple[str, bytes]:
    """(etag, body) of the credential's environment. Loads the body only when this process
    has not served that ETag yet; if the snapshot changed since the ETag was read, the newer
    pair is returned (the two always belong together)."""
    etag = credential.snapshot_etag
    if etag is None:
        return '"empty"', _empty_body(credential.environment_key).encode()
    body = _BYTES.get(etag)
    if body is None:
        row = ConfigSnapshot.objects.filter(environment_id=credential.environment_id).values_list(
            "etag", "body").first()
        if row is None:  # pragma: no cover - snapshots are never deleted
            return '"empty"', _empty_body(credential.environment_key).encode()
        etag, body = row[0], _remember(_BYTES, row[0], row[1].encode("utf-8"))
    return etag, body


def snapshot_parsed(credential: PollCredential) -> tuple[str, dict]:
    etag = credential.snapshot_etag
    config = _PARSED.get(etag) if etag is not None else None
    if config is None:
        etag, body = snapshot_bytes(credential)
        config = _remember(_PARSED, etag, json.loads(body))
    return etag, config


def _etag_matches(request, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): `W/"x"` matches `"x"`, so a
    proxy that weakens ETags (nginx does when it compresses) still gets its 304s."""
    header = request.META.get("HTTP_IF_NONE_MATCH", "")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return etag.removeprefix("W/") in [t.strip().removeprefix("W/") for t in header.split(",")]


def _not_modified(etag: str) -> HttpResponseNotModified:
    response = HttpResponseNotModified()  # no body and no Content-Type
    response["ETag"] = etag
    return response


class ConfigApi(APIView):
    authentication_classes = [PollAuthentication]
    permission_classes = [HasSdkScope]
    throttle_classes = [ConfigThrottle]
    content_negotiation_class = JsonOnly
    required_scope = "config:read"

    @extend_schema(
        operation_id="config_retrieve",
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)],
        responses={200: OpenApiTypes.OBJECT, 304: None},
        description="The whole environment's configuration for local evaluation. Strong ETag; "
        "send it back in If-None-Match to get 304 with no body.",
    )
    def get(self, request):
        credential: PollCredential = request.auth
        if credential.snapshot_etag is not None and _etag_matches(request, credential.snapshot_etag):
            return _not_modified(credential.snapshot_etag)
        etag, body = snapshot_bytes(credential)
        response = HttpResponse(body, content_type="application/json")
        if credential.snapshot_etag is not None:
            response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        return response


def _empty_body(environment_key: str) -> str:
    return json.dumps({"environment": environment_key, "revision": 0,
                       "poll_interval_seconds": settings.SHIPWAY_POLL_INTERVAL_SECONDS,
                       "features": {}, "flags": {}, "segments": {}}, separators=(",", ":"))


def _ofrep_error(key: str | None, code: str, details: str, status: int) -> JsonResponse:
    body = {"errorCode": code, "errorDetails": details}
    if key is not None:
        body = {"key": key} | body
    return JsonResponse(body, status=status)


class OfrepApiBase(APIView):
    authentication_classes = [PollAuthentication]
    permission_classes = [HasSdkScope]
    throttle_classes = [OfrepThrottle]
    content_negotiation_class = JsonOnly
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
        if isinstance(exc, RequestDataTooBig):
            return _ofrep_error(self.kwargs.get("key"), "GENERAL",
                                f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", 413)
        if isinstance(exc, exceptions.APIException):  # e.g. 405: still OFREP's shape
            response = _ofrep_error(self.kwargs.get("key"), "GENERAL", str(exc.detail), exc.status_code)
            if isinstance(exc, exceptions.MethodNotAllowed):
                response["Allow"] = ", ".join(self.allowed_methods)
            return response
        return super().handle_exception(exc)

    def context_or_error(self, request, key: str | None) -> dict | JsonResponse:
        raw = request.body
        if not raw.strip():
            return {}
        try:
            body = json_loads_checked(raw)
        except ValueError as exc:  # also deep nesting, 1e400, lone surrogates and NULs
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
        etag, config = snapshot_parsed(request.auth)
        return config, etag


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
            return _not_modified(etag)
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
