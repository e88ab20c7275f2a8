"""Form parsing and record ids: the receiver's hand-written fast paths against the standard
library they replace."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote_plus

import pytest

from callstatus.core.records import EventRecord, assign_ids
from callstatus.receiver.errors import RequestRefused
from callstatus.receiver.parsing import merge_params, parse_fields


def _stdlib(raw: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


TRICKY = [
    b"CallUUID=abc&From=%2B14155550100&To=sip%3Aagent%40example.com",
    b"Name=A+B%2BC&Empty=&Bare&&trailing=1&",
    b"Digits=%26%3D%25&k%3Dey=v%26al",  # escaped & and = in values and keys: the careful path
    b"Pct=%2526&Twice=1&Twice=2",  # an escaped percent sign stays one
    b"Caller=J%C3%A9r%C3%B4me&City=Z%C3%BCrich",
    "Direct=Jérôme&Plus=+".encode(),
    b"Bad=%zz&Half=%4&Upper=%3D",
    b"a=%3d&b=%3D%3d",
]


@pytest.mark.parametrize("raw", TRICKY)
def test_parse_fields_equals_parse_qsl(raw: bytes) -> None:
    assert parse_fields(raw, "body") == _stdlib(raw)


def test_parse_fields_equals_parse_qsl_on_random_forms() -> None:
    rng = random.Random(7)
    alphabet = "ab=&%+ é2C3D6A9F"
    for _ in range(3000):
        values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(4)]
        raw = "&".join(f"{quote_plus(v[:2])}={quote_plus(v)}" for v in values).encode()
        assert parse_fields(raw, "body") == _stdlib(raw), raw
        noisy = "&".join(values).encode()  # unescaped text, as a hostile client might send it
        try:
            expected = _stdlib(noisy)
        except UnicodeDecodeError:
            with pytest.raises(RequestRefused):
                parse_fields(noisy, "body")
            continue
        assert parse_fields(noisy, "body") == expected, noisy


@pytest.mark.parametrize(
    "raw",
    [b"a=%C3&b=%A9", b"a=%C3%28", b"k%FF=1", b"x=%E2%82"],  # a character cut by `&`, bad bytes
)
def test_invalid_utf8_after_unquoting_is_refused_either_path(raw: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        _stdlib(raw)
    with pytest.raises(RequestRefused) as refused:
        parse_fields(raw, "body")
    assert refused.value.status == 400
    with pytest.raises(RequestRefused):
        parse_fields(raw + b"&esc=%26", "body")  # the same on the careful path


def test_merge_params_query_first_and_repeated_keys_as_lists() -> None:
    query = {"a": ["1"], "b": ["2"]}
    body = {"b": ["3"], "c": ["4", "5"]}
    assert merge_params(query, body) == {"a": "1", "b": ["2", "3"], "c": ["4", "5"]}
    assert merge_params({}, body) == {"b": "3", "c": ["4", "5"]}
    assert merge_params(query, {}) == {"a": "1", "b": "2"}
    merged = merge_params({}, body)
    assert merged["c"] is not body["c"]  # the caller's lists are not shared


def test_assign_ids_gives_distinct_version_4_uuids_and_keeps_given_ones() -> None:
    now = datetime.now(UTC)
    records = [EventRecord(None, now, "hangup", "POST", "{}", "", 0, {}) for _ in range(500)]
    records[3].event_id = "kept"
    assign_ids(records)
    ids = [r.event_id for r in records]
    assert ids[3] == "kept"
    others = [i for k, i in enumerate(ids) if k != 3]
    assert len(set(others)) == len(others)
    for text in others:
        assert text is not None
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
