"""Turns domain errors escaping a UI view into the right HTTP status instead of a 500."""
from django.http import HttpResponse
from django.template.loader import render_to_string

from apps.core.errors import ShipwayError


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
