"""Domain errors raised by services. Each maps to one HTTP status and a stable `code`, so
views, the API, management commands and the UI report them the same way."""
from typing import Any


class ShipwayError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class ValidationFailed(ShipwayError):
    status = 400
    code = "validation_failed"


class NotFound(ShipwayError):
    status = 404
    code = "not_found"


class PermissionDenied(ShipwayError):
    status = 403
    code = "permission_denied"


class Conflict(ShipwayError):
    status = 409
    code = "conflict"
