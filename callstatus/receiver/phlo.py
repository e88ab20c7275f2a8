"""PHLO reports on /plivo/phlo: their parameters (JSON, form or query) and who may send them.

A PHLO's HTTP Request component sends whatever key:value pairs the user typed, as a JSON or form
body or a query string, with the headers and query parameters the user set. Such a report is
trusted when it carries PHLO_SECRET (`Authorization: Bearer …`, an X-Callstatus-Secret header or
a `secret` query parameter) or a valid Plivo V3 signature. The secret is never stored: the
`secret` parameter is dropped from the parameters (query string and body alike) and from the URL
kept with a refused request.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

from callstatus.core.plivo import PHLO_SECRET_HEADER, PHLO_SECRET_PARAM
from callstatus.receiver.errors import RequestRefused
from callstatus.receiver.parsing import FORM_TYPE, MAX_FIELDS, Fields, parse_fields
from callstatus.receiver.signatures import NONCE_HEADER, SIGNATURE_HEADERS, SignatureError

JSON_TYPE = "application/json"
# Deeper JSON than a hand-typed report ever holds is refused: it could not be typed or stored
# without deep recursion.
MAX_DEPTH = 32

# A report's parameters: JSON values as received (text for query and form values).
Params = dict[str, Any]
# Parameters by key, each with the values it came with (one per occurrence).
Values = dict[str, list[Any]]


class Unauthenticated(Exception):
    """The report carries neither PHLO_SECRET nor a valid signature; `reason` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_secret_key(key: str) -> bool:
    return key.strip().lower() == PHLO_SECRET_PARAM


def split_secret(query: Fields) -> tuple[Fields, list[str]]:
    """The query's fields without the `secret` parameter (any case), and the secrets it held."""
    kept: Fields = {}
    offered: list[str] = []
    for key, values in query.items():
        if is_secret_key(key):
            offered.extend(values)
        else:
            kept[key] = values
    return kept, offered


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The secrets offered in headers (lower-case names): a Bearer token, X-Callstatus-Secret."""
    offered = []
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        offered.append(token.strip())
    header = headers.get(PHLO_SECRET_HEADER.lower(), "").strip()
    if header:
        offered.append(header)
    return offered


def is_signed(headers: Mapping[str, str]) -> bool:
    """The request carries Plivo's V3 signature headers (valid or not)."""
    return bool(headers.get(NONCE_HEADER)) and any(headers.get(name) for name in SIGNATURE_HEADERS)


def authenticate(
    secret: str | None,
    offered: Sequence[str],
    signed: bool,
    verify: Callable[[], None] | None,
) -> str:
    """How the report is trusted: 'secret' (it carries PHLO_SECRET) or 'valid' (a V3 signature
    that `verify` accepts; None when PLIVO_AUTH_TOKEN is unset). Raise Unauthenticated if
    neither; with PHLO_SECRET unset only a signature can pass."""
    if secret and offered:
        expected = secret.encode("utf-8")
        # Every comparison runs, so timing says nothing about which one matched.
        matches = [hmac.compare_digest(expected, text.encode("utf-8")) for text in offered]
        if any(matches):
            return "secret"
    failed: SignatureError | None = None
    if signed and verify is not None:
        try:
            verify()
        except SignatureError as exc:
            failed = exc
        else:
            return "valid"
    if offered:
        raise Unauthenticated(
            "bad_secret",
            "the secret sent does not match PHLO_SECRET"
            if secret
            else "PHLO_SECRET is not set, so no secret is accepted",
        )
    if failed is not None:
        raise Unauthenticated(failed.reason, str(failed))
    if signed:
        raise Unauthenticated(
            "missing_secret",
            "no PHLO_SECRET sent, and a Plivo signature cannot be checked without PLIVO_AUTH_TOKEN",
        )
    if not secret:
        raise Unauthenticated(
            "missing_secret",
            "PHLO_SECRET is not set: /plivo/phlo accepts only requests with a valid Plivo "
            "signature",
        )
    raise Unauthenticated(
        "missing_secret",
        f"send PHLO_SECRET as `Authorization: Bearer …`, an {PHLO_SECRET_HEADER} header or a "
        f"`{PHLO_SECRET_PARAM}` query parameter",
    )


def read_body(headers: Mapping[str, str], body: bytes) -> tuple[Values, Fields]:
    """The body's parameters (the `secret` key left out) and the fields a V3 signature of it
    covers (all of them, as sent)."""
    if not body:
        return {}, {}
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == FORM_TYPE:
        fields = parse_fields(body, "body")
        return {k: list(v) for k, v in fields.items() if not is_secret_key(k)}, fields
    if media_type == JSON_TYPE or media_type.endswith("+json"):
        document = parse_json(body)
        values: Values = {k: [v] for k, v in document.items() if not is_secret_key(k)}
        return values, signature_fields(document)
    raise RequestRefused(
        415,
        "unsupported_media_type",
        f"expected {JSON_TYPE} or {FORM_TYPE} (the body types of PHLO's HTTP Request "
        f"component), got {media_type or 'no content type'}",
    )


def parse_json(body: bytes) -> Params:
    """A JSON object body; a key that comes twice becomes a list. Refused (400) when it is no
    object, is not UTF-8, holds NaN or infinities, nests deeper than MAX_DEPTH or holds text
    that has no UTF-8 form (lone surrogates)."""
    try:
        document = json.loads(
            body.decode("utf-8-sig"),
            object_pairs_hook=_object,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
        if not isinstance(document, dict):
            raise ValueError("the body is not a JSON object")
        if len(document) > MAX_FIELDS:
            raise ValueError(f"more than {MAX_FIELDS} keys")
        _check_depth(document)
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise RequestRefused(400, "undecodable", "the body is not valid UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise RequestRefused(400, "undecodable", f"the body cannot be parsed: {exc}") from None
    return document


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    grouped: Values = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large")
    return number


def _check_depth(document: object) -> None:
    level: list[object] = [document]
    for _ in range(MAX_DEPTH):
        below: list[object] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(item.values())
            elif isinstance(item, list):
                below.extend(item)
        if not below:
            return
        level = below
    raise ValueError(f"nested deeper than {MAX_DEPTH} levels")


def _sdk_text(value: object) -> str:
    """A JSON value as Plivo's SDK writes it into the signed text (Python's str of it)."""
    if isinstance(value, dict):
        return _params_text(value)
    if isinstance(value, list):
        return "".join(sorted(_sdk_text(item) for item in value))
    return str(value)


def _params_text(document: Mapping[str, object]) -> str:
    parts: list[str] = []
    for key in sorted(document):
        value = document[key]
        items = value if isinstance(value, list) else [value]
        parts.extend(key + text for text in sorted(_sdk_text(item) for item in items))
    return "".join(parts)


def signature_fields(document: Mapping[str, object]) -> Fields:
    """The fields a V3 signature of a JSON body covers, as Plivo's SDK validates one with the
    parsed object as its params (`validate_v3_signature`): its keys, and its values as Python
    writes them (True, 1.5, None), an object's as its sorted key-value text."""
    fields: Fields = {}
    for key, value in document.items():
        items = value if isinstance(value, list) else [value]
        fields[key] = [_sdk_text(item) for item in items]
    return fields


def merge(query: Fields, body: Values) -> Params:
    """URL query and body together, query first; a key that comes twice becomes a list."""
    merged: Values = {}
    for source in (query, body):
        for key, values in source.items():
            merged.setdefault(key, []).extend(values)
    return {key: values[0] if len(values) == 1 else values for key, values in merged.items()}


def without_secret(url: str) -> str:
    """`url` with every `secret` query parameter removed, the rest exactly as sent."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [
        part for part in query.split("&") if not is_secret_key(_unquote_key(part.partition("=")[0]))
    ]
    return base + ("?" + "&".join(kept) if any(kept) else "")


def _unquote_key(key: str) -> str:
    try:
        return unquote_plus(key, encoding="utf-8", errors="strict")
    except UnicodeError:
        return key
