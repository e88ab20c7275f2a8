"""Plivo's V3 request signature, as a pure function over method, URL, body fields and headers."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SIGNATURE_HEADERS = ("x-plivo-signature-v3", "x-plivo-signature-ma-v3")
NONCE_HEADER = "x-plivo-signature-v3-nonce"
# Bounds checked before any HMAC work, so a forged header costs no more than a real one. A V3
# signature is 44 base64 characters; Plivo may send a comma-separated list of them (one per
# auth token of the account). Its nonces are about 20 digits.
MAX_SIGNATURE_HEADER = 1024
MAX_SIGNATURES = 16
MAX_NONCE = 256

Fields = Mapping[str, Sequence[str]]


class SignatureError(Exception):
    """The request does not carry a valid Plivo signature; `reason` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _sorted_pairs(fields: Fields) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key in sorted(fields):
        values = fields[key]
        if len(values) == 1:
            pairs.append((key, values[0]))
        else:
            pairs.extend((key, value) for value in sorted(values))
    return pairs


def _group(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def string_to_sign(method: str, url: str, body: Fields, nonce: str) -> str:
    """The exact text Plivo signs for a request to `url` (as Plivo called it)."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _group(parse_qsl(parts.query, keep_blank_values=True)) if parts.query else {}
    if method.upper() == "GET":
        merged = {key: list(values) for key, values in query.items()}
        for key, values in body.items():
            merged[key] = list(values)
        encoded = "&".join(f"{k}={v}" for k, v in _sorted_pairs(merged))
        signed = f"{base}?{encoded}" if encoded else base
    else:
        q = "&".join(f"{k}={v}" for k, v in _sorted_pairs(query))
        if body:
            signed = base + "?" + (q + "." if q else "")
            signed += "".join([k + v for k, v in _sorted_pairs(body)])
        else:
            signed = base + ("?" + q if q else "")
    return f"{signed}.{nonce}"


@functools.lru_cache(maxsize=16)
def _keyed(auth_token: str) -> hmac.HMAC:
    """HMAC-SHA256 keyed with a token, before any message: copied for each request, which
    skips the key schedule (the configured tokens are few and fixed)."""
    return hmac.new(auth_token.encode("utf-8"), digestmod=hashlib.sha256)


def sign(method: str, url: str, body: Fields, nonce: str, auth_token: str) -> str:
    mac = _keyed(auth_token).copy()
    mac.update(string_to_sign(method, url, body, nonce).encode("utf-8"))
    return base64.b64encode(mac.digest()).decode("ascii")


def verify(
    method: str,
    url: str,
    body: Fields,
    headers: Mapping[str, str],
    auth_tokens: Sequence[str],
) -> None:
    """Raise SignatureError unless a V3 or Ma-V3 signature matches one of the tokens.

    `headers` must be looked up case-insensitively (Starlette's Headers are).
    """
    nonce = headers.get(NONCE_HEADER)
    raw = [headers.get(name) or "" for name in SIGNATURE_HEADERS]
    if any(len(text) > MAX_SIGNATURE_HEADER for text in raw) or len(nonce or "") > MAX_NONCE:
        raise SignatureError(
            "bad_signature",
            f"signature headers over {MAX_SIGNATURE_HEADER} characters or a nonce over "
            f"{MAX_NONCE}: not a Plivo signature",
        )
    offered = [candidate.strip() for text in raw for candidate in text.split(",")]
    offered = [candidate for candidate in offered if candidate]
    if not nonce or not offered:
        raise SignatureError(
            "missing_signature", "no X-Plivo-Signature-V3 header and nonce on the request"
        )
    if len(offered) > MAX_SIGNATURES:
        raise SignatureError(
            "bad_signature", f"more than {MAX_SIGNATURES} signatures offered: not a Plivo request"
        )
    # Header text may hold any latin-1 character; compare_digest only takes non-ASCII as bytes.
    offered_bytes = [candidate.encode("utf-8") for candidate in offered]
    for token in auth_tokens:
        try:
            expected = sign(method, url, body, nonce, token).encode("ascii")
        except ValueError:
            # urlsplit refuses some hosts (a Host header holding `]`): Plivo never sends those.
            raise SignatureError(
                "bad_signature", f"{url} is not a URL Plivo can have signed"
            ) from None
        # Every comparison runs, so timing says nothing about which one matched.
        matches = [hmac.compare_digest(expected, candidate) for candidate in offered_bytes]
        if any(matches):
            return
    raise SignatureError(
        "bad_signature",
        f"signature does not match {url} with any configured PLIVO_AUTH_TOKEN",
    )
