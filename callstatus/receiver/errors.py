"""The one error shape every refusal uses: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from starlette.responses import JSONResponse


class RequestRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def too_many_failures(retry_after: int) -> JSONResponse:
    """429 for an address locked out after too many wrong passwords."""
    response = error_response(
        429,
        "too_many_failed_logins",
        f"too many wrong passwords from this address; try again in {retry_after} s",
    )
    response.headers["retry-after"] = str(retry_after)
    return response
