"""Plivo's parameters typed: the typed-column list of webhook_events, and the rules that turn a
webhook's text parameters into those columns' values (stored as JSON in webhook_inbox.typed)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from callstatus.core.plivo import PHLO_KIND
from callstatus.core.records import Params

# The kind of a webhook_events row that is a Plivo call record (reconciliation), not a webhook.
CDR_KIND = "cdr"

# (column, Plivo parameter, SQL type) for every typed copy in webhook_events.
TYPED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("call_uuid", "CallUUID", "VARCHAR"),
    ("event", "Event", "VARCHAR"),
    ("direction", "Direction", "VARCHAR"),
    ("from_number", "From", "VARCHAR"),
    ("to_number", "To", "VARCHAR"),
    ("call_status", "CallStatus", "VARCHAR"),
    ("dial_status", "DialStatus", "VARCHAR"),
    ("dial_ring_status", "DialRingStatus", "BOOLEAN"),
    ("dial_hangup_cause", "DialHangupCause", "VARCHAR"),
    ("dial_a_leg_uuid", "DialALegUUID", "VARCHAR"),
    ("dial_b_leg_uuid", "DialBLegUUID", "VARCHAR"),
    ("dial_action", "DialAction", "VARCHAR"),
    ("dial_b_leg_status", "DialBLegStatus", "VARCHAR"),
    ("dial_b_leg_from", "DialBLegFrom", "VARCHAR"),
    ("dial_b_leg_to", "DialBLegTo", "VARCHAR"),
    ("dial_b_leg_position", "DialBLegPosition", "INTEGER"),
    ("dial_b_leg_duration", "DialBLegDuration", "INTEGER"),
    ("dial_b_leg_bill_duration", "DialBLegBillDuration", "INTEGER"),
    ("dial_b_leg_hangup_cause", "DialBLegHangupCause", "VARCHAR"),
    ("dial_b_leg_hangup_cause_code", "DialBLegHangupCauseCode", "INTEGER"),
    ("dial_b_leg_hangup_cause_name", "DialBLegHangupCauseName", "VARCHAR"),
    ("dial_b_leg_hangup_source", "DialBLegHangupSource", "VARCHAR"),
    ("hangup_cause", "HangupCause", "VARCHAR"),
    ("hangup_cause_code", "HangupCauseCode", "INTEGER"),
    ("hangup_cause_name", "HangupCauseName", "VARCHAR"),
    ("hangup_source", "HangupSource", "VARCHAR"),
    ("duration", "Duration", "INTEGER"),
    ("bill_duration", "BillDuration", "INTEGER"),
    ("start_time", "StartTime", "TIMESTAMPTZ"),
    ("answer_time", "AnswerTime", "TIMESTAMPTZ"),
    ("end_time", "EndTime", "TIMESTAMPTZ"),
    ("machine", "Machine", "BOOLEAN"),
)

# Built once: json.dumps with options builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


_TRUE = frozenset({"true", "t", "1", "yes", "y"})
_FALSE = frozenset({"false", "f", "0", "no", "n"})
_INT32 = (-(2**31), 2**31 - 1)


def _text(value: str | list[str] | None) -> str | None:
    # A parameter sent twice arrives as a list: typed copies take its last value.
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return None
    value = value.strip()
    return value or None


def _integer(text: str) -> int | None:
    try:
        number = int(text)
    except ValueError:
        try:
            number = int(float(text))
        except (ValueError, OverflowError):
            return None
    return number if _INT32[0] <= number <= _INT32[1] else None


def _boolean(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _timestamp(text: str, zone: ZoneInfo) -> datetime | None:
    """Plivo's 'YYYY-MM-DD HH:MM:SS' (no offset) in PLIVO_TIMEZONE, as UTC."""
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return None
    local = naive.replace(tzinfo=zone) if naive.tzinfo is None else naive
    try:
        return local.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed out of range: one bad row must not fail a batch
        return None


def _typed(text: str, sql_type: str, zone: ZoneInfo) -> object:
    if sql_type == "VARCHAR":
        return text
    if sql_type == "INTEGER":
        return _integer(text)
    if sql_type == "BOOLEAN":
        return _boolean(text)
    return _timestamp(text, zone)


# Plivo parameter -> (typed column, 0 text, 1 integer, 2 boolean, 3 timestamp): typed_values'
# dispatch, looked up once per parameter.
_KINDS = {"VARCHAR": 0, "INTEGER": 1, "BOOLEAN": 2, "TIMESTAMPTZ": 3}
_SLOT_KINDS = {param: (column, _KINDS[sql_type]) for column, param, sql_type in TYPED_COLUMNS}


def typed_values(params: Params, zone: ZoneInfo) -> dict[str, object]:
    """The typed copies of one webhook's parameters that have a value, ready for JSON
    (timestamps as ISO 8601 in UTC); unusable values are left out (NULL). Walks the webhook's
    own parameters, most of which are typed. (`_typed` by hand: this runs for every webhook.)"""
    values: dict[str, object] = {}
    slots = _SLOT_KINDS
    for param, value in params.items():
        slot = slots.get(param)
        if slot is None:
            continue
        if type(value) is str:
            text: str | None = value.strip() or None
        else:
            text = _text(value)
        if text is None:
            continue
        column, kind = slot
        if kind == 0:
            values[column] = text
        elif kind == 1:
            number = _integer(text)
            if number is not None:
                values[column] = number
        elif kind == 2:
            flag = _boolean(text)
            if flag is not None:
                values[column] = flag
        else:
            moment = _timestamp(text, zone)
            if moment is not None:
                values[column] = moment.isoformat()
    return values


# A Plivo call record (kind `cdr`, from the Call API) -> the typed column of each field it shares
# with webhooks. A B leg's record (parent_call_uuid set) is also typed as a Dial's B leg.
CDR_FIELDS: dict[str, str] = {
    "call_uuid": "call_uuid",
    "call_direction": "direction",
    "from_number": "from_number",
    "to_number": "to_number",
    "initiation_time": "start_time",
    "answer_time": "answer_time",
    "end_time": "end_time",
    "call_duration": "duration",
    "bill_duration": "bill_duration",
    "hangup_cause_code": "hangup_cause_code",
    "hangup_cause_name": "hangup_cause_name",
    "hangup_source": "hangup_source",
    "parent_call_uuid": "dial_a_leg_uuid",
}
_SQL_TYPES = {column: sql_type for column, _, sql_type in TYPED_COLUMNS}


def cdr_typed_values(record: Mapping[str, object], zone: ZoneInfo) -> dict[str, object]:
    """The typed copies of one call record, as `typed_values` gives a webhook's. Records are
    JSON with numbers and nulls: every scalar is read through its text, as a webhook's is."""
    values: dict[str, object] = {}
    for field, column in CDR_FIELDS.items():
        value = record.get(field)
        if value is None or isinstance(value, (dict, list)):
            continue
        text = _text(str(value).lower() if isinstance(value, bool) else str(value))
        if text is None:
            continue
        typed = _typed(text, _SQL_TYPES[column], zone)
        if typed is not None:
            values[column] = typed.isoformat() if isinstance(typed, datetime) else typed
    if "dial_a_leg_uuid" in values and "call_uuid" in values:
        values["dial_b_leg_uuid"] = values["call_uuid"]
    return values


_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def spelling(key: str) -> str:
    """A key as users spell it, reduced: lower case, letters and digits only (DialStatus,
    dial_status, Dial_Status, dialstatus and dial-status all give `dialstatus`)."""
    return _NOT_ALNUM.sub("", key.lower())


# A PHLO report's keys are typed by hand in its HTTP Request component: a reduced spelling of a
# Plivo parameter (DialALegUUID) or of its column (dial_a_leg_uuid) -> the typed column.
PHLO_SLOTS: dict[str, str] = {
    **{spelling(param): column for column, param, _ in TYPED_COLUMNS},
    **{spelling(column): column for column, _, _ in TYPED_COLUMNS},
}
_PARAM_OF = {column: param for column, param, _ in TYPED_COLUMNS}


def _json_text(value: object) -> str | None:
    """A JSON value as the text a form would have carried; a list gives its last value, as a
    repeated form key does; an object gives none."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return _text(str(value))
    return None


def phlo_typed_values(params: Mapping[str, object], zone: ZoneInfo) -> dict[str, object]:
    """The typed copies of a PHLO report, as `typed_values` gives a webhook's, its keys read in
    any spelling. When two spellings of one key carry a value, Plivo's own spelling wins, else
    the first in sorted order: never the order of arrival, which a spool replay does not keep."""
    best: dict[str, tuple[int, str]] = {}
    for key in sorted(params):
        column = PHLO_SLOTS.get(spelling(key))
        if column is None:
            continue
        text = _json_text(params[key])
        if text is None:
            continue
        rank = 0 if key == _PARAM_OF[column] else 1
        if column not in best or rank < best[column][0]:
            best[column] = (rank, text)
    values: dict[str, object] = {}
    for column, (_, text) in best.items():
        typed = _typed(text, _SQL_TYPES[column], zone)
        if typed is not None:
            values[column] = typed.isoformat() if isinstance(typed, datetime) else typed
    return values


def typed_json(params: Params, zone: ZoneInfo, kind: str = "") -> str:
    """The typed copies as the JSON object stored in webhook_inbox.typed: `cdr_typed_values`
    for a call record, `phlo_typed_values` for a PHLO report, `typed_values` for a webhook."""
    if kind == CDR_KIND:
        return _COMPACT.encode(cdr_typed_values(params, zone))
    if kind == PHLO_KIND:
        return _COMPACT.encode(phlo_typed_values(params, zone))
    return _COMPACT.encode(typed_values(params, zone))
