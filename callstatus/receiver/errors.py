"""The one error shape every refusal uses: {"error": {"code": ..., "message": ...}}.

`error_body` builds it for everyone: the webhook endpoints, the protocol's own 400/408/431
replies, the password middleware and the API's exception handlers.
"""

from __future__ import annotations

import json

from starlette.responses import Response

JSON = "application/json"


class RequestRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message}}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def error_response(status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status_code=status, media_type=JSON)


def too_many_failures(retry_after: int) -> Response:
    """429 for an address locked out after too many wrong passwords."""
    response = error_response(
        429,
        "too_many_failed_logins",
        f"too many wrong passwords from this address; try again in {retry_after} s",
    )
    response.headers["retry-after"] = str(retry_after)
    return response
