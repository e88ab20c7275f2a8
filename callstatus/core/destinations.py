"""Where a number leads: its ISO country and line type, from E.164 numbers, SIP URIs and pseudonyms.

The views' `to_country`, `from_country`, `b_leg_to_country` (and line types) join
`number_destinations`, one row per distinct number ever stored, which the rollup refresh fills
(`learn`) before it recomputes the legs: a number is parsed once, not once per webhook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import duckdb
import phonenumbers
from phonenumbers import PhoneNumberType, geocoder, phonenumberutil
from phonenumbers.phonemetadata import PhoneMetadata

# A SIP endpoint is an agent's phone or softphone, whatever its user part says.
SIP = "sip"
LINE_TYPES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}
# A masked number (CALLSTATUS_NUMBERS=masked): "+1…07#3f9a2c1b7d", its country code kept.
PSEUDONYM = re.compile(r"^\+(\d{1,3})…\d*#[0-9a-f]+$")
_SIP_URI = re.compile(r"^sips?:([^@;?]*)", re.IGNORECASE)
_PUNCTUATION = re.compile(r"[\s\-.()/]")
_DIGITS = re.compile(r"^\+?\d{4,17}$")


@dataclass(frozen=True)
class Destination:
    """A number's ISO 3166 country (e.g. "GB") and line type; None where unknown."""

    country: str | None = None
    line_type: str | None = None


UNKNOWN = Destination()


def _country_of_code(code: int) -> str | None:
    """The country of a calling code: its main country when several share it (+1: US)."""
    region = phonenumbers.region_code_for_country_code(code)
    return None if region in (None, phonenumbers.UNKNOWN_REGION) else region


def _e164(text: str) -> str | None:
    """A dialled number as "+<digits>", or None when it is not one. Plivo often sends numbers
    without their "+" ("14155550107"); "00" is the international prefix."""
    compact = _PUNCTUATION.sub("", text)
    if compact.lower().startswith("tel:"):
        compact = compact[4:]
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _DIGITS.match(compact):
        return None
    return compact if compact.startswith("+") else "+" + compact


def _of_number(text: str) -> Destination:
    masked = PSEUDONYM.match(text)
    if masked:  # the country code is all a pseudonym keeps: no line type
        return Destination(_country_of_code(int(masked.group(1))))
    e164 = _e164(text)
    if e164 is None:
        return UNKNOWN
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return UNKNOWN
    region = phonenumbers.region_code_for_number(parsed)
    if region in (None, phonenumbers.UNKNOWN_REGION):
        # Not a valid number of any country: its calling code still says where it leads.
        return Destination(_country_of_code(parsed.country_code or 0))
    return Destination(region, LINE_TYPES.get(_number_type(parsed, region)))


def _number_type(parsed: phonenumbers.PhoneNumber, region: str) -> int:
    """phonenumbers.number_type, without finding the region a second time (it does so first):
    half the cost of a number, which counts when a rebuild learns a million of them. Falls back
    to the public function should the library's internals change."""
    try:
        code = parsed.country_code or 0
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        helper = phonenumberutil._number_type_helper
    except AttributeError:
        return int(phonenumbers.number_type(parsed))
    if metadata is None:
        return int(PhoneNumberType.UNKNOWN)
    return int(helper(phonenumbers.national_significant_number(parsed), metadata))


@lru_cache(maxsize=65536)
def destination(value: str | None) -> Destination:
    """The country and line type of a number, a SIP URI (line type "sip", the country of its
    user part when that is a number) or a pseudonym (the country of its code). Anything else
    (names, "anonymous", malformed text) is unknown."""
    if value is None:
        return UNKNOWN
    text = value.strip()
    sip = _SIP_URI.match(text)
    if sip:
        return Destination(_of_number(sip.group(1)).country, SIP)
    return _of_number(text)


# Every number of the webhooks seq > $mark and seq <= $top that number_destinations lacks.
_UNSEEN = """
SELECT DISTINCT n FROM (
    SELECT unnest([to_number, from_number, dial_b_leg_to]) AS n
    FROM webhook_rows WHERE seq > $mark AND seq <= $top
) WHERE n IS NOT NULL AND n NOT IN (SELECT number FROM number_destinations)
"""


def learn(cur: duckdb.DuckDBPyConnection, mark: int, top: int) -> int:
    """Add the numbers of webhooks mark < seq <= top to number_destinations, each with its
    country and line type; return how many were new. Runs inside the caller's transaction."""
    numbers = [str(row[0]) for row in cur.execute(_UNSEEN, {"mark": mark, "top": top}).fetchall()]
    if not numbers:
        return 0
    found = [destination(n) for n in numbers]
    cur.execute(
        "INSERT INTO number_destinations (number, country, line_type)"
        " SELECT unnest($n::VARCHAR[]), unnest($c::VARCHAR[]), unnest($t::VARCHAR[])",
        {"n": numbers, "c": [d.country for d in found], "t": [d.line_type for d in found]},
    )
    return len(numbers)


@lru_cache(maxsize=512)
def country_name(code: str) -> str:
    """A country's English name from its ISO code ("GB": "United Kingdom"); the code itself
    when phonenumbers has no example number for it."""
    example = phonenumbers.example_number(code)
    if example is None:
        return code
    return geocoder.country_name_for_number(example, "en") or code
