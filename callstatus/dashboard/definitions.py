"""What each KPI means, word for word from ARCHITECTURE "Metrics", shown on hover."""

from __future__ import annotations

CALLS = (
    "Call legs that started in the range (view `calls`: one row per call leg seen on "
    "answer, fallback, hangup, ring or machine_detection)."
)
CALL_ANSWER_RATE = (
    "Call answer rate = answered calls / calls that ended (from `calls`). An inbound call is "
    "answered by our own XML, so for inbound calls this is near 100% by construction: use the "
    "dial answer rate there."
)
DIAL_ANSWER_RATE = (
    "Dial answer rate = dials with dial_status = 'completed' / all dials (from `dials`): did an "
    "agent pick up. The headline figure for inbound traffic."
)
B_LEG_ANSWER_RATE = (
    "B-leg answer rate = answered B legs / B legs (from `dial_legs`). Legs that lost the race "
    "(another simultaneous leg answered first, code 9000) count as B legs and are shown apart."
)
ACD = "ACD (average call duration) = mean duration_s of answered calls (from `calls`)."
BUSY = "Busy % = calls with outcome 'busy' / calls that ended (from `calls`)."
NO_ANSWER = "No-answer % = calls with outcome 'no-answer' / calls that ended (from `calls`)."
FAILED = "Failed % = calls with outcome 'failed' / calls that ended (from `calls`)."
ABANDONED = (
    "Abandoned while ringing = dialled A legs where no B leg answered and a B leg was canceled "
    "(the caller hung up while the Dial rang) / A legs that dialled (from `dial_legs`)."
)
DELTA = "Change against the previous range of the same length."
