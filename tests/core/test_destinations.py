"""Countries and line types of numbers, SIP URIs and pseudonyms, in the views and rollups."""

from __future__ import annotations

import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.destinations import LINE_TYPES, SIP, Destination, destination
from callstatus.core.numbers import NumberMasker
from tests.factories import T0, assert_rollups_equal_views, store


@pytest.mark.parametrize(
    ("value", "country", "line_type"),
    [
        # E.164, with or without "+", "00", spaces, dashes, parentheses, tel:
        ("+14155550107", "US", "fixed_line_or_mobile"),
        ("14155550107", "US", "fixed_line_or_mobile"),
        ("+1 (415) 555-0107", "US", "fixed_line_or_mobile"),
        ("tel:+1-415-555-0107", "US", "fixed_line_or_mobile"),
        ("18005550199", "US", "toll_free"),
        ("442071838750", "GB", "fixed_line"),
        ("447400123456", "GB", "mobile"),
        ("447700900123", "GB", None),  # reserved for drama: a UK number of no line type
        ("00493012345678", "DE", "fixed_line"),
        ("918071279100", "IN", "fixed_line"),
        ("+16135550123", "CA", "fixed_line_or_mobile"),  # +1 is not always the US
        # SIP URIs: an endpoint; its country when the user part is a number
        ("sip:ana@phone.plivo.com", None, SIP),
        ("sip:+442071838750@sip.example.com", "GB", SIP),
        ("SIP:4930123456@gw.example.com;transport=tcp", "DE", SIP),
        # Pseudonyms (CALLSTATUS_NUMBERS=masked): the code's country, no line type
        ("+44…50#3f9a2c1b7d", "GB", None),
        ("+1…07#3f9a2c1b7d", "US", None),  # a shared code gives its main country
        ("sip:+91…00#0a1b2c3d4e@phone.plivo.com", "IN", SIP),
        # An unassigned number of a known code: the code's country, no line type
        ("+4400000", "GB", None),
        # Malformed, names, nothing
        ("anonymous", None, None),
        ("Maria Garcia", None, None),
        ("+", None, None),
        ("123", None, None),
        ("+999123456789", None, None),
        ("…07#3f9a2c1b7d", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_destination(value: str | None, country: str | None, line_type: str | None) -> None:
    assert destination(value) == Destination(country, line_type)


OUT = "c0ffee00-0000-4000-8000-000000000001"
IN = "c0ffee00-0000-4000-8000-000000000002"
B1, B2 = "c0ffee00-0000-4000-8000-0000000000b1", "c0ffee00-0000-4000-8000-0000000000b2"


def _hangup(
    uuid: str, direction: str, frm: str, to: str, **more: str
) -> tuple[str, dict[str, str]]:
    params = {
        "CallUUID": uuid,
        "Direction": direction,
        "From": frm,
        "To": to,
        "CallStatus": "completed",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "StartTime": "2026-11-02 09:00:00",
        "AnswerTime": "2026-11-02 09:00:05",
        "EndTime": "2026-11-02 09:01:00",
        "Duration": "55",
        "BillDuration": "60",
        **more,
    }
    return "hangup", params


def _b_leg(b: str, to: str) -> tuple[str, dict[str, str]]:
    return "dial_callback", {
        "CallUUID": IN,
        "DialALegUUID": IN,
        "DialBLegUUID": b,
        "DialAction": "hangup",
        "DialBLegTo": to,
        "DialBLegHangupCauseCode": "3000",
    }


def test_views_and_rollups_carry_countries(db: Database) -> None:
    store(
        db,
        [
            ("ring", {"CallUUID": OUT, "Direction": "outbound", "From": "18005550199",
                      "To": "442071838750", "CallStatus": "ringing"}),
            _hangup(OUT, "outbound", "18005550199", "442071838750"),
            _hangup(IN, "inbound", "+44…50#3f9a2c1b7d", "18005550199"),
            _b_leg(B1, "sip:ana@phone.plivo.com"),
            _b_leg(B2, "not a number"),
        ],
        start=T0,
    )  # fmt: skip
    cur = db.cursor()
    # Before a refresh the numbers are not learnt: the views say unknown, never wrong.
    assert cur.execute("SELECT count(to_country) FROM calls").fetchall() == [(0,)]
    rollups.refresh(cur)
    assert_rollups_equal_views(db)
    for relation in ("calls", "calls_rollup"):
        got = cur.execute(
            "SELECT call_uuid, to_country, to_line_type, from_country, from_line_type, rang_at"
            f" FROM {relation} ORDER BY call_uuid"
        ).fetchall()
        assert [row[:5] for row in got] == [
            (OUT, "GB", "fixed_line", "US", "toll_free"),
            (IN, "US", "toll_free", "GB", None),
        ]
        assert got[0][5] == T0 and got[1][5] is None  # the ring callback's arrival
    for relation in ("dial_legs", "dial_legs_rollup"):
        got = cur.execute(
            f"SELECT b_leg_uuid, b_leg_to_country, b_leg_to_line_type FROM {relation}"
            " ORDER BY b_leg_uuid"
        ).fetchall()
        assert got == [(B1, None, SIP), (B2, None, None)]
    # Each distinct number once, whatever number of webhooks carried it.
    assert cur.execute(
        "SELECT count(*), count(DISTINCT number) FROM number_destinations"
    ).fetchall() == [(5, 5)]


def test_an_incremental_refresh_learns_only_new_numbers(db: Database) -> None:
    store(db, [_hangup(OUT, "outbound", "18005550199", "442071838750")], start=T0)
    cur = db.cursor()
    rollups.refresh(cur)
    store(db, [_hangup(IN, "inbound", "919820012345", "18005550199")], start=T0)
    rollups.refresh(cur)
    assert_rollups_equal_views(db)
    assert cur.execute(
        "SELECT number, country, line_type FROM number_destinations ORDER BY number"
    ).fetchall() == [
        ("18005550199", "US", "toll_free"),
        ("442071838750", "GB", "fixed_line"),
        ("919820012345", "IN", "mobile"),
    ]


@pytest.mark.parametrize(
    ("clear", "country", "line_type"),
    [
        ("14155550107", "US", None),
        ("+442071838750", "GB", None),
        ("sip:+4930123456@gw.example.com", "DE", SIP),
        ("+999123", None, None),  # no country code to keep
    ],
)
def test_pseudonyms_of_the_masker_keep_their_country(
    clear: str, country: str | None, line_type: str | None
) -> None:
    masked = NumberMasker("a key of at least sixteen characters", []).mask(clear)
    assert masked != clear
    assert destination(masked) == Destination(country, line_type)


def test_line_types_equal_the_library_s_own() -> None:
    """The shortcut to the line type gives what phonenumbers.number_type gives."""
    import random

    import phonenumbers

    rng = random.Random(17)
    numbers = [f"+1{rng.randint(201, 989)}{rng.randrange(10**7):07d}" for _ in range(300)]
    numbers += [f"+{code}{rng.randrange(10**10):010d}" for code in (44, 91, 49, 33, 55, 61)]
    numbers += [f"+{code}{rng.randrange(10**9):09d}" for code in (44, 91, 49, 33, 55, 61) * 40]
    for number in numbers:
        parsed = phonenumbers.parse(number, None)
        if phonenumbers.region_code_for_number(parsed) is None:
            continue
        expected = LINE_TYPES.get(phonenumbers.number_type(parsed))
        assert destination(number).line_type == expected, number
