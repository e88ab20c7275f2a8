"""The seven webhook paths in the OpenAPI document, from callstatus.core.plivo.

They are served by raw ASGI endpoints (callstatus.receiver.routes), not by FastAPI, so FastAPI
cannot describe them: these path items are added to the schema it generates for its own routes.
"""

from __future__ import annotations

from typing import Any

from callstatus.core import plivo

TAG = "Plivo webhooks"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

_REPLIES: dict[plivo.Reply, dict[str, Any]] = {
    plivo.Reply.ANSWER_XML: {
        "description": "Stored. Plivo XML: Speak ANSWER_SPEAK_TEXT, then Dial every DIAL_NUMBERS "
        f"target at once, with action={plivo.DIAL_ACTION_PATH} and callbackUrl="
        f"{plivo.DIAL_CALLBACK_PATH} (without DIAL_NUMBERS: a notice, then Hangup).",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    },
    plivo.Reply.EMPTY_XML: {
        "description": "Stored. `<Response/>`: nothing more for the call to do.",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    },
    plivo.Reply.EMPTY: {"description": "Stored. No body: Plivo ignores the reply."},
}

_REFUSALS = {
    "400": "Undecodable body or query string, or a malformed request.",
    "403": "With PLIVO_AUTH_TOKEN set: no valid V3 signature (the request is kept in "
    "rejected_webhooks, not webhook_events).",
    "405": "A method other than GET and POST.",
    "413": "A body over 64 KiB.",
    "415": "A body that is not application/x-www-form-urlencoded.",
    "503": "Starting, or the webhook could be neither stored nor spooled.",
}


def _signature_headers() -> list[dict[str, Any]]:
    described = {
        plivo.SIGNATURE_HEADER: "Plivo's V3 signature(s), comma-separated",
        plivo.MA_SIGNATURE_HEADER: "the main account's V3 signature(s), for subaccounts",
        plivo.NONCE_HEADER: "the nonce signed with the request",
    }
    return [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": f"{text}; checked when PLIVO_AUTH_TOKEN is set",
            "schema": {"type": "string"},
        }
        for name, text in described.items()
    ]


# PHLO reports: a shared secret (any one of three places) or a V3 signature, JSON or a form.
_PHLO_SECRET_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "Authorization",
        "in": "header",
        "required": False,
        "description": "`Bearer <PHLO_SECRET>`",
        "schema": {"type": "string"},
    },
    {
        "name": plivo.PHLO_SECRET_HEADER,
        "in": "header",
        "required": False,
        "description": "PHLO_SECRET",
        "schema": {"type": "string"},
    },
    {
        "name": plivo.PHLO_SECRET_PARAM,
        "in": "query",
        "required": False,
        "description": "PHLO_SECRET (dropped before anything is stored)",
        "schema": {"type": "string"},
    },
]
_PHLO_REFUSALS = {
    "403": "Neither PHLO_SECRET (as a Bearer token, X-Callstatus-Secret or the secret query "
    "parameter) nor a valid V3 signature (the request is kept in rejected_webhooks).",
    "415": "A body that is neither application/json nor application/x-www-form-urlencoded.",
}


def _operation(webhook: plivo.Webhook, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _REPLIES[webhook.reply]}
    for status, text in _REFUSALS.items():
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": ERROR_REF}},
        }
    operation: dict[str, Any] = {
        "tags": [TAG],
        "summary": f"{webhook.console_setting} (kind `{webhook.kind}`)",
        "description": f"{webhook.description} Stored in webhook_events with kind "
        f"`{webhook.kind}`, every parameter kept (also ones not listed here); replied to "
        "only once committed.",
        "operationId": f"{webhook.kind}_{method}",
        "parameters": _signature_headers(),
        "responses": responses,
    }
    if method == "get":
        operation["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in webhook.parameters
        ] + operation["parameters"]
    else:
        operation["requestBody"] = {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {name: {"type": "string"} for name in webhook.parameters},
                        "additionalProperties": {"type": "string"},
                    }
                }
            },
        }
    if webhook.kind == plivo.PHLO_KIND:
        _as_phlo(operation, webhook)
    return operation


def _as_phlo(operation: dict[str, Any], webhook: plivo.Webhook) -> None:
    """A PHLO report: the shared secret's three places, a JSON body too, its refusals."""
    operation["parameters"] = _PHLO_SECRET_PARAMETERS + operation["parameters"]
    operation["description"] += (
        " Keys in any spelling (DialStatus, dial_status, dialstatus); values kept as sent."
    )
    for status, text in _PHLO_REFUSALS.items():
        operation["responses"][status]["description"] = text
    body = operation.get("requestBody")
    if body is not None:
        body["content"]["application/json"] = {
            "schema": {
                "type": "object",
                "properties": {name: {"type": "string"} for name in webhook.parameters},
                "additionalProperties": True,
            }
        }


def webhook_paths() -> dict[str, Any]:
    """Path items of the webhook paths: GET (parameters in the query) and POST (a form; PHLO
    reports JSON too)."""
    return {
        webhook.path: {method: _operation(webhook, method) for method in ("post", "get")}
        for webhook in plivo.WEBHOOKS
    }


def add_webhooks(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (FastAPI's document) with the webhook paths and the error shape added."""
    schema["paths"] = {**webhook_paths(), **schema.get("paths", {})}
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    schema.setdefault("tags", []).append(
        {"name": TAG, "description": "The URLs Plivo calls. GET and POST alike."}
    )
    return schema


# The API's credentials, as the document's security schemes (callstatus.app.password).
SECURITY_SCHEMES: dict[str, Any] = {
    "password": {
        "type": "http",
        "scheme": "basic",
        "description": "DASHBOARD_PASSWORD, any user name.",
    },
    "token": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from CALLSTATUS_API_TOKENS (GET only).",
    },
}
_PROTECTED = ("/api/", "/metrics")
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def add_security(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the password and the API tokens on the protected paths: reads take either,
    anything else the password."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(_PROTECTED):
            continue
        for method, operation in item.items():
            reads = method in ("get", "head")
            operation["security"] = (
                [{"password": []}, {"token": []}] if reads else [{"password": []}]
            )
    return schema


def use_error_shape(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with FastAPI's 422 validation answers replaced by what the API sends: 400 in
    the one error shape (callstatus.app.api, `_invalid_request`)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400",
                    {
                        "description": "A parameter is missing or malformed.",
                        "content": {"application/json": {"schema": ERROR_REF}},
                    },
                )
    schemas = schema.get("components", {}).get("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return schema
