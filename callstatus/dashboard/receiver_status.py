"""What the receiver says about itself: spool, queue, snapshot age, and URL mistakes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from callstatus.core.settings import get_settings
from callstatus.app import runtime

PLIVO_PATHS = {
    "Answer URL": "/plivo/answer",
    "Hangup URL": "/plivo/hangup",
    "Fallback answer URL": "/plivo/fallback",
    "Ring URL (Make-a-Call API)": "/plivo/ring",
    "Machine detection URL (Make-a-Call API)": "/plivo/machine-detection",
    "Dial action (written into our XML)": "/plivo/dial/action",
    "Dial callbackUrl (written into our XML)": "/plivo/dial/callback",
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
    rt = runtime.current()
    settings = rt.settings if rt is not None else get_settings()
    checks = "off (development mode)" if settings.development_mode else "on"
    if rt is None:
        snap = settings.snapshot_path
        age = time.time() - snap.stat().st_mtime if snap.exists() else None
        return Status(False, None, None, age, checks, settings.public_base_url)
    return Status(True, rt.spool.depth(), rt.writer.queue_depth(), rt.snapshot_age_s(), checks,
                  settings.public_base_url)


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
    configured = (runtime.current().settings if runtime.current() else get_settings())
    if configured.public_base_url:
        return configured.public_base_url, "PUBLIC_BASE_URL"
    return browser_base_url(), "this browser's address (PUBLIC_BASE_URL is not set)"


def base_url_advice(rejected: pd.DataFrame) -> str | None:
    """If refused requests were signed for another URL than the one we checked, say which
    PUBLIC_BASE_URL would have matched, from the proxy headers Plivo's request carried."""
    for row in rejected.itertuples():
        if row.reason == "missing_signature":
            return (
                "Requests arrived **without** Plivo signature headers: they are not from Plivo, "
                "or a proxy in front of callstatus strips the `X-Plivo-Signature-*` headers."
            )
        host = row.forwarded_host or row.host_header
        proto = row.forwarded_proto or ("https" if str(row.checked_base).startswith("https")
                                        else "http")
        seen = f"{proto}://{host.split(',')[0].strip()}" if host else None
        if seen and seen != row.checked_base:
            return (
                f"Signatures were checked against `{row.checked_base}`, but the requests "
                f"reached us as `{seen}`. Set `PUBLIC_BASE_URL={seen}` (the URL configured "
                "in Plivo) and restart `callstatus serve`."
            )
        return (
            f"Signatures were checked against `{row.checked_base}`. If that is not the "
            "address configured in your Plivo application, set `PUBLIC_BASE_URL` to it; if "
            "it is, check that `PLIVO_AUTH_TOKEN` holds this account's (and sub-account's) "
            "auth token."
        )
    return None
