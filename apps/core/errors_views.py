"""404/500 handlers: JSON on API paths (DESIGN's error shape), HTML elsewhere."""
from django.http import JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from apps.core.api_errors import error_body


def _is_api(request) -> bool:
    return request.path.startswith(("/api/", "/ofrep/", "/v1/"))


def not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body("not_found", f"No endpoint at {request.path}"), status=404)
    return page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse(error_body("server_error", "Internal error; it has been logged."), status=500)
    return html_server_error(request)
