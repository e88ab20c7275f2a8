"""The Plivo webhook paths: the kind each stores, where it is set in Plivo, what it replies.

One table read by the receiver (its endpoints), the simulator (where it sends each kind), the
dashboard's setup and health pages (what to paste where) and the OpenAPI document (the
parameters each carries). The facts come from plivo-webhooks.md, sections 1, 2 and 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reply(Enum):
    """What a webhook path answers once the webhook is stored."""

    ANSWER_XML = "answer_xml"  # Speak, then Dial to DIAL_NUMBERS (receiver.xml.answer_xml)
    EMPTY_XML = "empty_xml"  # <Response/>: Plivo reads XML there, but we have nothing to add
    EMPTY = "empty"  # 200 with no body: Plivo ignores the reply


@dataclass(frozen=True)
class Webhook:
    path: str
    kind: str  # webhook_events.kind
    console_setting: str  # where the URL goes: a Plivo console or API setting, or our XML
    reply: Reply
    description: str
    parameters: tuple[str, ...]  # the Plivo parameters it usually carries (others are kept too)


# Parameters of every call request (answer, fallback, hangup, ring, dial_action).
_CALL = (
    "CallUUID",
    "From",
    "To",
    "CallStatus",
    "Direction",
    "ALegUUID",
    "ALegRequestUUID",
    "RequestUUID",
    "Event",
    "BillRate",
    "ParentAuthID",
    "SessionStart",
    "ForwardedFrom",
    "CallerName",
    "STIRVerification",
)
_HANGUP = (
    "HangupCause",
    "HangupCauseCode",
    "HangupCauseName",
    "HangupSource",
    "Duration",
    "BillDuration",
    "StartTime",
    "AnswerTime",
    "EndTime",
    "TotalCost",
)
_DIAL_ACTION = (
    "DialStatus",
    "DialRingStatus",
    "DialHangupCause",
    "DialALegUUID",
    "DialBLegUUID",
)
_DIAL_CALLBACK = (
    "CallUUID",
    "From",
    "To",
    "Direction",
    "CallStatus",
    "Event",
    "DialAction",
    "DialALegUUID",
    "DialBLegUUID",
    "DialBLegStatus",
    "DialBLegFrom",
    "DialBLegTo",
    "DialBLegPosition",
    "DialBLegBillRate",
    "DialBLegDuration",
    "DialBLegBillDuration",
    "DialBLegTotalCost",
    "DialBLegHangupCause",
    "DialBLegHangupCauseCode",
    "DialBLegHangupCauseName",
    "DialBLegHangupSource",
    "DialDigitsMatch",
    "DialDigitsPressedBy",
)
_MACHINE_DETECTION = (
    "CallUUID",
    "RequestUUID",
    "ALegUUID",
    "ALegRequestUUID",
    "From",
    "To",
    "Direction",
    "Event",
    "Machine",
    "IfMachine",
)

# What a PHLO's HTTP Request component posts after a dial, as the guide names the keys (the
# user types them, in any spelling; callstatus.core.typed reads them case- and separator-blind).
_PHLO = _DIAL_ACTION

ANSWER_PATH = "/plivo/answer"
DIAL_ACTION_PATH = "/plivo/dial/action"
DIAL_CALLBACK_PATH = "/plivo/dial/callback"
PHLO_PATH = "/plivo/phlo"
PHLO_KIND = "phlo"

# Plivo's per-URL callback settings, in the fragment of every URL it calls: our XML's Dial action
# and callbackUrl carry it, and the README asks for it on the Answer, Fallback, Hangup and Ring
# URLs. Plivo reads it and never sends it (a fragment is not part of an HTTP request), so the
# request and its signature are those of the URL without it (plivo-webhooks.md sections 4, 8).
# - rp=5xx,ct,rt: Plivo's default (ct,rt) never retries a 5xx, and we answer 503 exactly when a
#   webhook could not be stored (starting, disk full, database file gone): it would be lost.
#   4xx stays out: a refused signature or a malformed request would be refused again.
# - rc=5: the most Plivo allows. A 503 comes back at once, so six attempts cost little, and a
#   retry of a webhook that was stored after all is kept as a duplicate, never a second event.
# - rt=8000: a healthy reply takes milliseconds and the longest stall measured was under a second
#   (docs/benchmarks.md). Plivo's 40 s read timeout would leave room for one retry in tt, the total
#   timeout of all attempts (left at its default and maximum, 55000 ms); at 8 s all six fit (48 s).
# - ct: Plivo's default, 2000 ms.
RETRY_FRAGMENT = "#rt=8000&rc=5&rp=5xx,ct,rt"

# In the order a user sets them up: the application's URLs, the call API's, our XML's, then a
# PHLO's (no XML of ours: the user types the URL into the PHLO's HTTP Request component).
WEBHOOKS: tuple[Webhook, ...] = (
    Webhook(
        ANSWER_PATH,
        "answer",
        "Answer URL",
        Reply.ANSWER_XML,
        "A call arrived (inbound) or the callee answered (outbound): replies with the XML "
        "that greets the caller and dials DIAL_NUMBERS.",
        _CALL,
    ),
    Webhook(
        "/plivo/hangup",
        "hangup",
        "Hangup URL",
        Reply.EMPTY,
        "A call leg ended, answered or not: its hangup cause, duration and times.",
        _CALL + _HANGUP,
    ),
    Webhook(
        "/plivo/fallback",
        "fallback",
        "Fallback answer URL",
        Reply.ANSWER_XML,
        "Plivo could not use the answer URL's reply: the same parameters and the same XML.",
        _CALL,
    ),
    Webhook(
        "/plivo/ring",
        "ring",
        "Ring URL (Make-a-Call API)",
        Reply.EMPTY,
        "An outbound call's callee started ringing.",
        _CALL,
    ),
    Webhook(
        "/plivo/machine-detection",
        "machine_detection",
        "Machine detection URL (Make-a-Call API)",
        Reply.EMPTY,
        "Answering-machine detection finished on an outbound call.",
        _MACHINE_DETECTION,
    ),
    Webhook(
        DIAL_ACTION_PATH,
        "dial_action",
        "Dial action (written into our XML)",
        Reply.EMPTY_XML,
        "The Dial of our answer XML ended: whether and how an agent answered.",
        _CALL + _DIAL_ACTION,
    ),
    Webhook(
        DIAL_CALLBACK_PATH,
        "dial_callback",
        "Dial callbackUrl (written into our XML)",
        Reply.EMPTY,
        "A B leg of our Dial was answered, connected or hung up (several per Dial).",
        _DIAL_CALLBACK,
    ),
    Webhook(
        PHLO_PATH,
        PHLO_KIND,
        "PHLO HTTP Request component (after a dial)",
        # PHLO only reads the status (2xx: the component's Success branch); an empty body has no
        # JSON keys that a later reply could lack (PHLO fails a reply missing fetched keys).
        Reply.EMPTY,
        "A PHLO reported how its dial ended: the key:value pairs its HTTP Request component "
        "sends, as JSON, a form or a query string, authenticated by PHLO_SECRET (a Bearer "
        "token, an X-Callstatus-Secret header or a `secret` query parameter) or a V3 signature.",
        _PHLO,
    ),
)

KINDS: tuple[str, ...] = tuple(webhook.kind for webhook in WEBHOOKS)
PATH_OF_KIND: dict[str, str] = {webhook.kind: webhook.path for webhook in WEBHOOKS}

# Plivo's V3 signature headers (receiver.signatures checks them).
SIGNATURE_HEADER = "X-Plivo-Signature-V3"
MA_SIGNATURE_HEADER = "X-Plivo-Signature-Ma-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

# Where a PHLO report carries PHLO_SECRET (besides `Authorization: Bearer …`): a header or a query
# parameter the user adds in the HTTP Request component. The parameter is never stored.
PHLO_SECRET_HEADER = "X-Callstatus-Secret"
PHLO_SECRET_PARAM = "secret"
