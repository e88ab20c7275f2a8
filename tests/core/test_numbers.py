"""Masked numbers: normalisation, pseudonyms, the masker's values, parameters and lookups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callstatus.core.numbers import (
    NumberMasker,
    is_pseudonym,
    mask_text,
    mask_url,
    normalise,
    pseudonym,
)
from tests.factories import make_settings

KEY = "a-key-of-thirty-two-characters!!"
OTHER_KEY = "another-key-of-thirty-two-chars!"
OURS = ("+14155550100", "sip:frontdesk@phone.plivo.com")
SHAPE = re.compile(r"^\+\d{1,3}…\d\d#[0-9a-f]{10}$")


@pytest.fixture
def masker() -> NumberMasker:
    return NumberMasker(KEY, OURS)


@pytest.mark.parametrize(
    "written",
    [
        "+14155550107",
        "14155550107",
        "0014155550107",
        " +1 (415) 555-0107 ",
        "+1.415.555.0107",
        "1-415-555-0107",
        "tel:+1-415-555-0107",
        "sip:+14155550107@phone.plivo.com",
        "sip:14155550107@203.0.113.9:5060;transport=udp",
    ],
)
def test_one_number_in_any_form_is_one_e164_and_one_pseudonym(written: str) -> None:
    assert normalise(written) == "+14155550107"
    assert pseudonym(written, KEY) == pseudonym("+14155550107", KEY)


@pytest.mark.parametrize(
    "value", ["", "anonymous", "Maria Garcia", "sip:alice@phone.plivo.com", "12", "+", "4155x0107"]
)
def test_words_names_and_short_digits_are_no_number(value: str) -> None:
    assert normalise(value) is None


def test_a_pseudonym_keeps_the_country_code_and_the_last_two_digits() -> None:
    uk = pseudonym("+44 20 7946 0958", KEY)
    us = pseudonym("14155550107", KEY)
    india = pseudonym("919876543210", KEY)
    assert SHAPE.match(uk) and uk.startswith("+44…58#")
    assert SHAPE.match(us) and us.startswith("+1…07#")
    assert india.startswith("+91…10#")
    assert "4155550107" not in us and "2079460958" not in uk


def test_the_hash_part_is_the_hmac_of_the_e164_number() -> None:
    import hashlib
    import hmac

    expected = hmac.new(KEY.encode(), b"+14155550107", hashlib.sha256).hexdigest()[:10]
    assert pseudonym("0014155550107", KEY) == f"+1…07#{expected}"


def test_keys_give_different_pseudonyms_and_numbers_differ() -> None:
    assert pseudonym("+14155550107", KEY) != pseudonym("+14155550107", OTHER_KEY)
    assert pseudonym("+14155550107", KEY) != pseudonym("+14155550117", KEY)
    many = {pseudonym(f"+1415555{n:04d}", KEY) for n in range(2000)}
    assert len(many) == 2000


def test_pseudonyms_are_idempotent_and_recognised() -> None:
    once = pseudonym("+14155550107", KEY)
    assert is_pseudonym(once)
    assert pseudonym(once, KEY) == once
    assert pseudonym(once, OTHER_KEY) == once
    assert not is_pseudonym("+14155550107")
    assert not is_pseudonym("…#xyz")


def test_a_number_without_a_known_country_code_keeps_no_country() -> None:
    masked = pseudonym("+999123456789", KEY)
    assert masked.startswith("…89#") and is_pseudonym(masked)


def test_mask_values(masker: NumberMasker) -> None:
    caller = pseudonym("+14155550107", KEY)
    assert masker.mask("14155550107") == caller
    assert masker.mask(caller) == caller
    assert masker.mask("sip:+14155550107@phone.plivo.com") == f"sip:{caller}@phone.plivo.com"
    assert masker.mask("tel:+1-415-555-0107") == f"tel:{caller}"
    # A SIP user that is a name identifies a person too: masked, host kept.
    alice = masker.mask("sip:alice@phone.plivo.com")
    assert re.fullmatch(r"sip:…#[0-9a-f]{10}@phone\.plivo\.com", alice)
    assert masker.mask("sip:Alice@other.example") == alice.replace(
        "phone.plivo.com", "other.example"
    )
    # A display name with a URI: the URI's number is masked.
    header = masker.mask('"Bob" <sip:+14155550107@carrier.example>;tag=9')
    assert header == f'"Bob" <sip:{caller}@carrier.example>;tag=9'


@pytest.mark.parametrize(
    "value",
    [
        "+14155550100",
        "14155550100",
        "sip:+14155550100@phone.plivo.com",
        "sip:frontdesk@phone.plivo.com",
        "anonymous",
        "Anonymous",
        "sip:anonymous@anonymous.invalid",
        "",
        "no number here",
    ],
)
def test_own_numbers_withheld_markers_and_words_stay_as_they_are(
    masker: NumberMasker, value: str
) -> None:
    assert masker.mask(value) == value


def test_mask_params_of_a_webhook(masker: NumberMasker) -> None:
    params = {
        "CallUUID": "6f1d2c3b-1111-2222-3333-444455556666",
        "From": "14155550107",
        "To": "+14155550100",
        "CallerName": "Maria Garcia",
        "ForwardedFrom": "+442079460958",
        "Duration": "37",
        "SessionStart": "2026-12-01 06:00:00.123456",
        "SIP-H-Diversion": "<sip:+33142685300@carrier.example>;reason=unconditional",
        "X-PH-Customer": "call back on 0044 20 7946 0959",
        "SIP-H-X-Tag": ["vip", "+919876543210"],
    }
    masked = masker.mask_params("hangup", params)
    assert masked["From"] == pseudonym("+14155550107", KEY)
    assert masked["To"] == "+14155550100"
    assert re.fullmatch(r"…#[0-9a-f]{10}", str(masked["CallerName"]))
    assert masked["ForwardedFrom"] == pseudonym("+442079460958", KEY)
    for unchanged in ("CallUUID", "Duration", "SessionStart"):
        assert masked[unchanged] == params[unchanged]
    diversion = pseudonym("+33142685300", KEY)
    assert masked["SIP-H-Diversion"] == f"<sip:{diversion}@carrier.example>;reason=unconditional"
    assert masked["X-PH-Customer"] == f"call back on {pseudonym('+442079460959', KEY)}"
    assert masked["SIP-H-X-Tag"] == ["vip", pseudonym("+919876543210", KEY)]
    assert params["From"] == "14155550107"  # a copy: the signed parameters are untouched


def test_caller_name_that_is_a_number_or_withheld(masker: NumberMasker) -> None:
    masked = masker.mask_params("answer", {"CallerName": "+14155550107"})
    assert masked["CallerName"] == pseudonym("+14155550107", KEY)
    assert masker.mask_params("answer", {"CallerName": "Anonymous"}) == {"CallerName": "Anonymous"}


def test_dial_callback_b_leg_numbers(masker: NumberMasker) -> None:
    masked = masker.mask_params(
        "dial_callback",
        {
            "DialBLegTo": "sip:ana@phone.plivo.com",
            "DialBLegFrom": "+14155550100",
            "DialBLegPosition": "2",
            "DialBLegUUID": "b-1",
        },
    )
    assert (
        masked["DialBLegTo"] == masker.mask("sip:ana@phone.plivo.com") != "sip:ana@phone.plivo.com"
    )
    assert masked["DialBLegFrom"] == "+14155550100"
    assert masked["DialBLegPosition"] == "2" and masked["DialBLegUUID"] == "b-1"


def test_call_records_and_phlo_reports_in_any_spelling(masker: NumberMasker) -> None:
    record = masker.mask_params(
        "cdr",
        {
            "from_number": "14155550107",
            "to_number": "14155550100",
            "caller_name": "John Smith",
            "bill_duration": 30,
            "hangup_cause_code": 4000,
            "answer_time": None,
        },
    )
    assert record["from_number"] == pseudonym("+14155550107", KEY)
    assert record["to_number"] == "14155550100"
    assert record["caller_name"] != "John Smith"
    assert record["bill_duration"] == 30 and record["hangup_cause_code"] == 4000
    assert record["answer_time"] is None
    phlo = masker.mask_params(
        "phlo",
        {
            "Caller Number": 14155550107,
            "DIAL-B-LEG-TO": "+442079460958",
            "caller": {"phone": "+14155550107", "tier": "gold"},
            "DialStatus": "completed",
        },
    )
    assert phlo["Caller Number"] == pseudonym("+14155550107", KEY)
    assert phlo["DIAL-B-LEG-TO"] == pseudonym("+442079460958", KEY)
    assert phlo["caller"] == {"phone": pseudonym("+14155550107", KEY), "tier": "gold"}
    assert phlo["DialStatus"] == "completed"


def test_masking_twice_changes_nothing(masker: NumberMasker) -> None:
    params = {"From": "14155550107", "SIP-H-Diversion": "<sip:+33142685300@c>", "To": "sip:bo@h"}
    once = masker.mask_params("answer", params)
    assert masker.mask_params("answer", once) == once


def test_lookup_forms(masker: NumberMasker) -> None:
    caller = pseudonym("+14155550107", KEY)
    assert masker.lookup_forms("+1 415 555 0107") == [caller]
    assert masker.lookup_forms("0014155550107") == [caller]
    assert masker.lookup_forms(caller) == [caller]
    assert masker.lookup_forms(caller.replace("…", "...")) == [caller]
    assert masker.lookup_forms("+14155550100") == ["+14155550100", "14155550100"]
    stored = masker.mask("sip:alice@phone.plivo.com")
    assert masker.lookup_forms("sip:alice@phone.plivo.com") == [stored]
    assert masker.lookup_forms("alice")[0] in stored
    assert masker.lookup_forms("  ") == []


def test_mask_url_masks_the_query_and_keeps_the_rest(masker: NumberMasker) -> None:
    url = "https://calls.example.com/plivo/answer?From=%2B14155550107&To=14155550100&CallUUID=c-1"
    masked = mask_url(masker, url)
    assert "4155550107" not in masked
    assert masked.startswith("https://calls.example.com/plivo/answer?From=%2B1%E2%80%A607%23")
    assert masked.endswith("&To=14155550100&CallUUID=c-1")
    assert mask_url(None, url) == url
    assert mask_url(masker, "https://calls.example.com/plivo/hangup") == (
        "https://calls.example.com/plivo/hangup"
    )


def test_mask_text_for_log_lines(masker: NumberMasker) -> None:
    line = "call from +14155550107 to sip:ana@phone.plivo.com"
    assert "4155550107" not in mask_text(masker, line) and "ana@" not in mask_text(masker, line)
    assert mask_text(None, line) == line


def test_from_settings(tmp_path: Path) -> None:
    path = tmp_path
    assert NumberMasker.from_settings(make_settings(path)) is None
    masked = make_settings(
        path,
        CALLSTATUS_NUMBERS="masked",
        CALLSTATUS_NUMBER_KEY=KEY,
        DIAL_NUMBERS="+14155550101",
        DIAL_CALLER_ID="+14155550199",
        CALLSTATUS_OWN_NUMBERS="sip:frontdesk@phone.plivo.com",
    )
    masker = NumberMasker.from_settings(masked)
    assert masker is not None
    for ours in ("14155550101", "+14155550199", "sip:frontdesk@phone.plivo.com"):
        assert masker.mask(ours) == ours
    assert masker.mask("+14155550107") == pseudonym("+14155550107", KEY)


@pytest.mark.parametrize(
    "number",
    ["+14155550107", "+442079460958", "+351912345678", "+8801712345678", "+79161234567",
     "+2348031234567", "+35312345678", "+8613812345678", "+6421234567", "+80012345678"],
)  # fmt: skip
def test_the_country_code_is_the_one_phonenumbers_parses(number: str) -> None:
    import phonenumbers

    code = phonenumbers.parse(number, None).country_code
    assert pseudonym(number, KEY).startswith(f"+{code}…")


def test_many_values_of_one_webhook_and_the_cache_agree(masker: NumberMasker) -> None:
    fresh = NumberMasker(KEY, OURS)
    values = [f"+1415555{n:04d}" for n in range(1000, 1300)] + ["sip:bob@h", "Maria Garcia"]
    first = [masker.mask(v) for v in values]
    assert [masker.mask(v) for v in values] == first == [fresh.mask(v) for v in values]
    assert first[:300] == [pseudonym(v, KEY) for v in values[:300]]
    assert len(set(first)) == len(values)
