"""Plivo XML replies, built with the plivo SDK."""

from __future__ import annotations

from plivo import plivoxml

from callstatus.core.plivo import DIAL_ACTION_PATH, DIAL_CALLBACK_PATH, RETRY_FRAGMENT
from callstatus.core.settings import Settings

NO_NUMBERS_NOTICE = "This line is not taking calls right now. Goodbye."


def callback_url(base_url: str, path: str) -> str:
    """`path` under `base_url`, with RETRY_FRAGMENT as its only fragment.

    A base may end in a bare "#" or "?" (PUBLIC_BASE_URL "https://calls.example.com/#" passes
    its check) or carry either from a Host header: appended to blindly, the path would land in
    that fragment or query and Plivo would call the base instead. So the base's own fragment is
    dropped and the path goes before its query. Plain text work, not urlsplit, which raises on
    some Host values (a lone "]"): the reply to a stored webhook must not fail.
    """
    base = base_url.partition("#")[0]
    base, _, query = base.partition("?")
    return base.rstrip("/") + path + (f"?{query}" if query else "") + RETRY_FRAGMENT


def answer_xml(settings: Settings, base_url: str) -> str:
    """Speak the greeting, then dial every DIAL_NUMBERS target at once."""
    response = plivoxml.ResponseElement()
    numbers = settings.dial_numbers
    if not numbers:
        response.add(plivoxml.SpeakElement(NO_NUMBERS_NOTICE))
        response.add(plivoxml.HangupElement())
        return str(response.to_string(False))
    response.add(plivoxml.SpeakElement(settings.answer_speak_text))
    dial = plivoxml.DialElement(
        action=callback_url(base_url, DIAL_ACTION_PATH),
        method="POST",
        callback_url=callback_url(base_url, DIAL_CALLBACK_PATH),
        callback_method="POST",
        timeout=settings.dial_timeout,
        caller_id=settings.dial_caller_id,
    )
    for target in numbers:
        if target.lower().startswith("sip:"):
            dial.add(plivoxml.UserElement(target))
        else:
            dial.add(plivoxml.NumberElement(target))
    response.add(dial)
    return str(response.to_string(False))


def empty_xml() -> str:
    return str(plivoxml.ResponseElement().to_string(False))
