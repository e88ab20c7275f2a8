"""Plivo XML replies, built with the plivo SDK."""

from __future__ import annotations

from plivo import plivoxml

from callstatus.core.plivo import DIAL_ACTION_PATH, DIAL_CALLBACK_PATH
from callstatus.core.settings import Settings

NO_NUMBERS_NOTICE = "This line is not taking calls right now. Goodbye."


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
        action=base_url + DIAL_ACTION_PATH,
        method="POST",
        callback_url=base_url + DIAL_CALLBACK_PATH,
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
