"""What the receiver says about itself: spool, queue, snapshot age, and URL mistakes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pandas as pd
import streamlit as st

from callstatus.core.plivo import RETRY_FRAGMENT, WEBHOOKS
from callstatus.core.snapshot import age_s
from callstatus.dashboard import context
from callstatus.dashboard.text import code
from callstatus.receiver import signatures

# Plivo setting -> path, in the order a user sets them up.
PLIVO_PATHS = {webhook.console_setting: webhook.path for webhook in WEBHOOKS}
# The URLs whose retry settings Plivo reads from their fragment (plivo-webhooks.md section 8):
# the application's and the Make-a-Call API's, and our XML's Dial action and callbackUrl (which
# receiver/xml.py writes with it). Machine detection is not among those Plivo documents.
RETRIED_KINDS = frozenset({"answer", "fallback", "hangup", "ring", "dial_action", "dial_callback"})
RETRY_NOTE = (
    f"The `{RETRY_FRAGMENT}` part asks Plivo to retry a webhook we answer with 503 (we could "
    "not store it) up to 5 times instead of dropping it. Plivo never sends it, so signatures "
    "are unaffected."
)


def plivo_urls(base: str) -> dict[str, str]:
    """Plivo setting -> the URL to set there, with Plivo's retry fragment where it reads one."""
    return {
        webhook.console_setting: base
        + webhook.path
        + (RETRY_FRAGMENT if webhook.kind in RETRIED_KINDS else "")
        for webhook in WEBHOOKS
    }


@dataclass(frozen=True)
class Status:
    serving: bool
    spool_depth: int | None
    writer_queue: int | None
    snapshot_age_s: float | None
    signature_checks: str
    public_base_url: str | None


def status() -> Status:
    """Live figures from the server in this process; file-based guesses without one."""
    settings = context.settings()
    checks = "off (development mode)" if settings.development_mode else "on"
    handle = context.server()
    if handle is None:
        age = age_s(settings.snapshot_path)
        return Status(False, None, None, age, checks, settings.public_base_url)
    live = handle.status()
    return Status(
        True,
        live.spool_depth,
        live.writer_queue,
        live.snapshot_age_s,
        checks,
        settings.public_base_url,
    )


def browser_base_url() -> str:
    """The base URL as the browser reached us (proxy headers first)."""
    headers = st.context.headers
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:8000"
    proto = headers.get("x-forwarded-proto")
    if not proto:
        url = st.context.url or ""
        proto = "https" if url.startswith("https") else "http"
    return f"{proto}://{host.split(',')[0].strip()}"


def public_base_url() -> tuple[str, str]:
    """(base URL Plivo should call, where that came from)."""
    configured = context.settings()
    if configured.public_base_url:
        return configured.public_base_url, "PUBLIC_BASE_URL"
    return browser_base_url(), "this browser's address (PUBLIC_BASE_URL is not set)"


def auth_tokens() -> list[str]:
    """The auth tokens the receiver in this process checks signatures with."""
    return context.settings().auth_tokens


_BASE = re.compile(r"^[^:/?#]*://[^/?#]*")


def _base(url: str) -> str:
    """scheme://host[:port] of a URL, whatever the host holds (a Host header can hold `]`,
    which urlsplit refuses)."""
    found = _BASE.match(url)
    return found.group(0) if found else ""


def _claimed_bases(headers: Mapping[str, str], checked_base: str) -> list[str]:
    """The base URLs a refused request's own headers claim it was sent to (untrusted)."""
    proto = str(headers.get("x-forwarded-proto") or "").split(",")[0].strip() or (
        "https" if checked_base.startswith("https") else "http"
    )
    hosts = [
        str(headers.get(name) or "").split(",")[0].strip() for name in ("x-forwarded-host", "host")
    ]
    return [f"{proto}://{host}" for host in hosts if host]


def _clipped(text: str, limit: int = 120) -> str:
    """A header value as shown: a refused request may carry kilobytes of it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _form(method: str, url: str, params: Mapping[str, object]) -> dict[str, list[str]]:
    """The body fields of a refused request: its stored parameters less the URL's query (the
    receiver stores query values first, then the body's)."""
    if method.upper() == "GET":
        return {}
    query: dict[str, int] = {}
    for key, _ in parse_qsl(url.partition("?")[2].partition("#")[0], keep_blank_values=True):
        query[key] = query.get(key, 0) + 1
    form: dict[str, list[str]] = {}
    for key, value in params.items():
        values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        rest = values[query.get(key, 0) :]
        if rest:
            form[key] = rest
    return form


def _signed_for(row: Any, tokens: Sequence[str]) -> str | None:
    """The base URL, among those the request's headers claim, for which its Plivo signature
    verifies with one of our tokens: then Plivo itself called that address."""
    if not tokens or row.truncated or not row.checked_url:
        return None
    try:
        headers = json.loads(row.headers)
        params = json.loads(row.params)
    except ValueError:
        return None
    if not isinstance(headers, dict) or not isinstance(params, dict):
        return None
    checked = _base(row.checked_url)
    rest = row.checked_url[len(checked) :]
    form = _form(row.http_method, row.checked_url, params)
    for base in dict.fromkeys(_claimed_bases(headers, checked)):
        if base == checked:
            continue
        try:
            signatures.verify(row.http_method, base + rest, form, headers, tokens)
        except (signatures.SignatureError, ValueError):  # ValueError: no URL at all
            continue
        return base
    return None


def base_url_advice(samples: pd.DataFrame, tokens: Sequence[str] = ()) -> list[str]:
    """What recent refused requests say about the setup, as Markdown (rejected_samples rows).

    Everything in a refused request (its Host and X-Forwarded-Host headers, its URL) is text
    any client can send: it is shown as quoted code, never as Markdown, and proposed as
    `PUBLIC_BASE_URL` only when the request's own Plivo signature verifies against that
    address with one of our auth tokens, i.e. when Plivo really called it.
    """
    advice: list[str] = []
    unsigned = samples[samples["reason"] == "missing_signature"]
    if not unsigned.empty:
        advice.append(
            "Requests arrived **without** Plivo signature headers: they are not from Plivo, "
            "or a proxy in front of callstatus strips the `X-Plivo-Signature-*` headers."
        )
    bad = samples[samples["reason"] == "bad_signature"]
    if bad.empty:
        return advice
    checked = list(dict.fromkeys(_base(u) for u in bad["checked_url"].dropna()))
    checked_text = ", ".join(code(_clipped(c)) for c in checked[:3] if c) or "the address"
    for row in bad.itertuples():
        signed = _signed_for(row, tokens)
        if signed:
            advice.append(
                f"Signatures were checked against {checked_text}, but Plivo signed these "
                f"requests for {code(signed)} (their signature verifies against that address "
                f"with your `PLIVO_AUTH_TOKEN`). Set {code('PUBLIC_BASE_URL=' + signed)} (the "
                "URL configured in Plivo) and restart `callstatus serve`."
            )
            return advice
    claimed: list[str] = []
    for row in bad.itertuples():
        try:
            headers = json.loads(row.headers)
        except ValueError:
            continue
        if isinstance(headers, dict):
            base = _base(row.checked_url) if row.checked_url else ""
            claimed += [c for c in _claimed_bases(headers, base) if c != base]
    claimed = list(dict.fromkeys(claimed))
    text = (
        f"Signatures were checked against {checked_text} and match none of the configured "
        "`PLIVO_AUTH_TOKEN` values. If that is not the address configured in your Plivo "
        "application, set `PUBLIC_BASE_URL` to the one that is; if it is, check that "
        "`PLIVO_AUTH_TOKEN` holds this account's (and sub-account's) auth token."
    )
    if claimed:
        text += (
            " The requests' own `Host` / `X-Forwarded-Host` headers named "
            + ", ".join(code(_clipped(c)) for c in claimed[:3])
            + (" and others" if len(claimed) > 3 else "")
            + ": any client can send those headers, and the signatures do not verify against "
            "that address either, so do not copy it into `PUBLIC_BASE_URL` unless it is "
            "your own."
        )
    advice.append(text)
    return advice
