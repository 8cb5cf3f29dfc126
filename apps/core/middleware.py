"""Turns domain errors escaping a UI view into the right HTTP status instead of a 500, and
refuses NUL characters in the URL, query and form fields before any view sees them."""
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.datastructures import MultiValueDict

from apps.core.api_errors import error_body
from apps.core.errors import ShipwayError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _has_nul(values: MultiValueDict) -> bool:
    return any("\x00" in key or any("\x00" in v for v in vs if isinstance(v, str)) for key, vs in values.lists())


class RejectNulMiddleware:
    """A NUL (`%00`) in the path, the query or a form field is refused with 400: PostgreSQL
    cannot compare text with a NUL in it, so any lookup by such a value was a 500 there."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or _has_nul(request.GET) or self._form_has_nul(request):
            message = "The request holds a NUL character (%00) in its URL, query or form fields."
            if request.path.startswith(("/api/", "/ofrep/", "/v1/")):
                return JsonResponse(error_body("invalid_characters", message), status=400)
            html = render_to_string("error.html", {"status": 400, "message": message}, request=request)
            return HttpResponse(html, status=400)
        return self.get_response(request)

    @staticmethod
    def _form_has_nul(request) -> bool:
        if request.method != "POST" or not request.content_type.startswith(FORM_TYPES):
            return False  # JSON bodies are checked by apps.core.parsers
        try:
            return _has_nul(request.POST)
        except RequestDataTooBig:
            return False  # the view answers that


class ShipwayErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, ShipwayError):
            return None
        html = render_to_string("error.html", {"status": exception.status, "message": exception.message},
                                request=request)
        return HttpResponse(html, status=exception.status)
