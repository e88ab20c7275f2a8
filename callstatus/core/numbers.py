"""Masked numbers: phone numbers and SIP users replaced by keyed pseudonyms (docs/privacy.md)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, unquote_plus

import phonenumbers

if TYPE_CHECKING:
    from callstatus.core.records import Params
    from callstatus.core.settings import Settings

ELLIPSIS = "…"
# Masked values kept per masker: the numbers of the calls in progress, a few MiB at most.
CACHED_VALUES = 65_536
# "+1…07#3f9a2c1b7d": country code, the last two digits, 10 hex of the HMAC. A SIP user or a
# name that is no number has neither country nor digits: "…#3f9a2c1b7d".
_PSEUDONYM = re.compile(r"(\+\d{1,3})?…\d{0,2}#[0-9a-f]{10}")
_PSEUDONYM_WHOLE = re.compile(rf"^{_PSEUDONYM.pattern}$")
# A pseudonym typed by hand with three dots instead of the ellipsis.
_TYPED_DOTS = re.compile(r"^(\+\d{1,3})?\.\.\.(\d{0,2}#[0-9a-fA-F]{10})$")

# What a number may be written with besides its digits.
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0]")
_DIGITS = re.compile(r"\+?\d+")
_PLAIN = re.compile(r"\+?[1-9]\d{2,14}")
# E.164 allows 15 digits; fewer than 3 is a duration or a digit pressed, never a number.
_MIN_DIGITS, _MAX_DIGITS = 3, 15

# Words carriers put where the number goes when the caller withheld it: they identify nobody and
# the dashboard counts them as they are.
_WITHHELD = frozenset(
    {"anonymous", "unknown", "restricted", "private", "unavailable", "withheld", "none", "null"}
)

# Inside a longer text (a SIP header, a display name with a URI): pseudonyms (left alone), SIP and
# tel URIs, and runs of digits long enough to be a number.
_IN_TEXT = re.compile(
    rf"(?P<pseudonym>{_PSEUDONYM.pattern})"
    r"|(?P<uri>(?i:sips?|tel):[^\s<>\"',;]+)"
    r"|(?P<number>(?<![\w#+])(?:\+|00)?\d[\d\-. ()]{5,}\d(?!\w))"
)

_URI = re.compile(r"(?i:sips?|tel):[^\s<>\"',]+")

# Parameter names (lower case, letters and digits only) that hold a number in any kind: Plivo's
# webhooks, call records (kind `cdr`) and PHLO reports, whose keys come in any spelling.
_NUMBER_KEYS = frozenset(
    {
        "from",
        "to",
        "dialblegto",
        "dialblegfrom",
        "forwardedfrom",
        "forwardedto",
        "divertedfrom",
        "diversion",
        "redirectedfrom",
        "caller",
        "callee",
        "destination",
        "ani",
        "dnis",
        "msisdn",
    }
)
_NUMBER_KEY_PARTS = ("number", "phone", "msisdn", "callerid", "forward", "divert", "diversion")
# Names, not numbers: a name identifies a person as well as a number does, so it is masked too.
_NAME_KEYS = frozenset({"callername", "callerid", "displayname"})
# Custom SIP headers (SIP-H-*, X-PH-*) carry whatever the caller's side put there: every number
# and SIP user inside them is masked.
_HEADER_PREFIXES = ("siph", "xph")


_NAME, _NUMBER, _HEADER = 1, 2, 3


@lru_cache(maxsize=4096)
def _key_role(key: str) -> int | None:
    """What a parameter holds, by its name in any spelling: a name, a number, a custom SIP
    header's text, or nothing personal (None). Cached: a webhook's keys repeat."""
    name = re.sub(r"[^0-9a-z]", "", key.lower())
    if name in _NAME_KEYS:
        return _NAME
    if name in _NUMBER_KEYS or any(part in name for part in _NUMBER_KEY_PARTS):
        return _NUMBER
    if name.startswith(_HEADER_PREFIXES):
        return _HEADER
    return None


def _user_part(value: str) -> tuple[str, str, str] | None:
    """(scheme with colon, user, the rest from '@') of a SIP URI, or None."""
    match = re.match(r"^(?P<scheme>(?i:sips?):)(?P<user>[^@]+)(?P<rest>@.*)$", value.strip())
    if match is None:
        return None
    return match["scheme"], match["user"], match["rest"]


def normalise(value: str) -> str | None:
    """The number in E.164 ("+14155550107") when `value` is a phone number in any common form
    (leading 00 or none, separators, a tel: URI or a SIP URI's user part), else None."""
    text = value.strip()
    if _PLAIN.fullmatch(text):  # the common case: digits as Plivo sends them, "+" or not
        return "+" + text.lstrip("+")
    sip = _user_part(text)
    if sip is not None:
        text = sip[1]
    elif text[:4].lower() == "tel:":
        text = text[4:]
    text = text.split(";", 1)[0]  # URI parameters (;user=phone, ;ext=…) are not the number
    text = _SEPARATORS.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("+")
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        return None
    return "+" + digits


def is_pseudonym(value: str) -> bool:
    return _PSEUDONYM_WHOLE.match(value.strip()) is not None


def _digest(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()[:10]


def _country(e164: str) -> str:
    # Country codes are prefix-free (ITU E.164): the first 1 to 3 digits that are one is it,
    # as phonenumbers' own parsing finds it, at a fraction of its cost.
    for length in (1, 2, 3):
        code = int(e164[1 : 1 + length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return f"+{code}"
    return ""  # no known country code: the pseudonym has none


def pseudonym(number: str, key: str) -> str:
    """The keyed pseudonym of a number: "+1…07#3f9a2c1b7d". The same number in any form gives
    the same pseudonym; a pseudonym is returned unchanged. A value that is no number (a SIP user,
    a name) gets "…#<hmac>" of its case-folded text."""
    if is_pseudonym(number):
        return number.strip()
    e164 = normalise(number)
    if e164 is None:
        return f"{ELLIPSIS}#{_digest(key, 'text:' + number.strip().casefold())}"
    return f"{_country(e164)}{ELLIPSIS}{e164[-2:]}#{_digest(key, e164)}"


class NumberMasker:
    """Masks the numbers of webhooks, call records and searches with one key; our own numbers
    (DIAL_NUMBERS, DIAL_CALLER_ID, CALLSTATUS_OWN_NUMBERS) stay in clear."""

    def __init__(self, key: str, own_numbers: Iterable[str]) -> None:
        self._key = key
        self._own_numbers: set[str] = set()
        self._own_users: set[str] = set()  # SIP users and other non-numeric own entries
        for own in own_numbers:
            e164 = normalise(own)
            if e164 is not None:
                self._own_numbers.add(e164)
            else:
                sip = _user_part(own)
                self._own_users.add((sip[1] if sip else own).strip().casefold())
        self._mask_cached = lru_cache(maxsize=CACHED_VALUES)(self._mask)
        self._mask_name_cached = lru_cache(maxsize=CACHED_VALUES)(self._mask_name)

    @classmethod
    def from_settings(cls, settings: Settings) -> NumberMasker | None:
        """The masker of masked mode; None when numbers are kept in clear."""
        if not settings.masked or not settings.number_key:
            return None
        return cls(settings.number_key, settings.own_numbers)

    def is_own(self, value: str) -> bool:
        e164 = normalise(value)
        if e164 is not None:
            return e164 in self._own_numbers
        sip = _user_part(value)
        return sip is not None and sip[1].strip().casefold() in self._own_users

    def _number(self, value: str) -> str:
        return value if self.is_own(value) else pseudonym(value, self._key)

    def mask(self, value: str) -> str:
        # A caller's number comes with every webhook of the call: masked once.
        return self._mask_cached(value)

    def mask_name(self, value: str) -> str:
        """A caller's name or number: a number as `mask`, a name (no number in it) as "…#<hmac>"."""
        return self._mask_name_cached(value)

    def _mask(self, value: str) -> str:
        """One value: a number becomes its pseudonym; a SIP URI keeps its host and parameters,
        its user (a number or a name like sip:alice@host: both identify a person) is masked; a
        longer text has each number and URI inside it masked. Own numbers, withheld markers
        ("anonymous") and text without a number are returned unchanged."""
        text = value.strip()
        if not text or text.casefold() in _WITHHELD or is_pseudonym(text):
            return value
        if _URI.fullmatch(text):
            return self._uri(text)
        if normalise(text) is not None:
            return self._number(text)
        return _IN_TEXT.sub(self._in_text, value)

    def _uri(self, uri: str) -> str:
        sip = _user_part(uri)
        if sip is None:  # tel:…, or sip:host without a user
            if uri[:4].lower() == "tel:" and normalise(uri) is not None:
                return uri if self.is_own(uri) else uri[:4] + pseudonym(uri, self._key)
            return uri
        scheme, user, rest = sip
        if self.is_own(uri) or is_pseudonym(user) or user.casefold() in _WITHHELD:
            return uri
        # User parameters (sip:+1415…;user=phone@host is rare but legal) go with the number.
        number, sep, params = user.partition(";")
        return f"{scheme}{pseudonym(number, self._key)}{sep}{params}{rest}"

    def _in_text(self, match: re.Match[str]) -> str:
        found = match.group(0)
        if match["pseudonym"]:
            return found
        if match["uri"]:
            return self._uri(found)
        return self._number(found) if normalise(found) is not None else found

    def _mask_name(self, value: str) -> str:
        masked = self.mask(value)
        text = value.strip()
        if masked != value or not text or text.casefold() in _WITHHELD or is_pseudonym(text):
            return masked
        return pseudonym(text, self._key)

    def mask_params(self, kind: str, params: Params) -> Params:
        """A copy of a webhook's, call record's or PHLO report's parameters with every number
        masked: the keys that hold numbers or names, and every number inside custom SIP headers.
        Lists are masked element by element, nested values (PHLO's JSON) key by key."""
        masked: dict[str, Any] = dict(params)
        for key, value in params.items():
            # Most parameters hold nothing personal: their role, cached by name, says so.
            if _key_role(key) is not None or isinstance(value, dict | list):
                masked[key] = self._value(key, value)
        return masked

    def _value(self, key: str, value: Any) -> Any:
        role = _key_role(key)
        if isinstance(value, dict):
            return {inner: self._value(inner, item) for inner, item in value.items()}
        if isinstance(value, list):
            return [self._value(key, item) for item in value]
        if role is None or value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):  # a number in a PHLO report's JSON
            return self.mask(str(value)) if role != _HEADER else value
        if not isinstance(value, str):
            return value
        if role == _NAME:
            return self.mask_name(value)
        if role == _NUMBER:
            return self.mask(value)
        return _IN_TEXT.sub(self._in_text, value)

    def lookup_forms(self, typed: str) -> list[str]:
        """What a number typed into a search or the API is looked up as: its pseudonym (the
        typed value when it already is one); an own number as the forms Plivo sends it in."""
        text = typed.strip()
        dots = _TYPED_DOTS.match(text)
        if dots is not None:
            text = f"{dots[1] or ''}{ELLIPSIS}{dots[2].lower()}"
        if not text or is_pseudonym(text):
            return [text] if text else []
        e164 = normalise(text)
        if e164 is not None and e164 in self._own_numbers:
            return [e164, e164[1:]]
        masked = self.mask(text)
        if masked == text and e164 is None and _user_part(text) is None:
            # A bare SIP user or a name typed alone: as it was masked when it came in.
            return [pseudonym(text, self._key)]
        return [masked]


def mask_text(masker: NumberMasker | None, text: str) -> str:
    """Text bound for a log line with every number in it masked (unchanged in clear mode)."""
    return text if masker is None else _IN_TEXT.sub(masker._in_text, text)


def mask_url(masker: NumberMasker | None, url: str) -> str:
    """A URL with the numbers of its query string masked, each parameter as `mask_params` masks
    it (GET webhooks carry everything there); the rest of the URL is kept as it was sent."""
    if masker is None or "?" not in url:
        return url
    base, _, query = url.partition("?")
    parts = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        try:
            name, text = unquote_plus(key, errors="strict"), unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            parts.append(mask_text(masker, part))
            continue
        masked = str(masker._value(name, text))
        parts.append(part if masked == text else f"{key}{sep}{quote_plus(masked)}")
    return f"{base}?{'&'.join(parts)}"
