"""The API's errors: a Status object with the code, reason and message the real server gives."""

from aiohttp import web


REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
           415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError"}


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code, self.message, self.reason, self.details = code, message, reason or REASONS.get(code), details


def status_body(code, message, reason=None, details=None):
    """A metav1.Status of a failure, its fields in the order Go's encoder writes them."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or REASONS.get(code, ""), **({"details": details} if details else {}), "code": code}


def status_response(code, message, reason=None, details=None):
    return web.json_response(status_body(code, message, reason, details), status=code)


def not_found(resource, name):
    return ApiError(404, f'{resource.qualified} "{name}" not found',
                    details={"name": name, **({"group": resource.group} if resource.group else {}), "kind": resource.plural})
