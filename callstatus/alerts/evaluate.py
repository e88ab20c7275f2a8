"""A rule's state after an evaluation: ok, pending, firing or no data, and what changed.

Pure: the previous status and the new evaluation in, the new status and the transition (if
any) out; callstatus/alerts/state.py keeps both in DuckDB and the job sends the messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from callstatus.alerts.model import Evaluation, Rule, RuleState


@dataclass(frozen=True)
class RuleStatus:
    """A rule's row in alert_state."""

    rule: str
    state: RuleState
    since: datetime  # when the rule entered `state`
    pending_since: datetime | None  # while pending: since when the condition holds
    value: float | None
    threshold: float | None
    volume: int | None
    evaluated_at: datetime


@dataclass(frozen=True)
class Transition:
    """A row of alert_transitions: a rule's state changed."""

    at: datetime
    rule: str
    from_state: RuleState
    to_state: RuleState
    value: float | None
    threshold: float | None

    @property
    def message(self) -> Literal["firing", "resolved"] | None:
        """The message it sends: one when the rule starts firing, one when it stops."""
        if self.to_state == "firing":
            return "firing"
        if self.from_state == "firing":
            return "resolved"
        return None


def advance(
    previous: RuleStatus | None, rule: Rule, evaluation: Evaluation
) -> tuple[RuleStatus, Transition | None]:
    """The rule's status after `evaluation`, and the transition when its state changed.

    - no verdict (no data, or under min_volume): `no data`; but a firing rule stays firing,
      since nothing shows it recovered (it resolves only once the metric is back);
    - the condition holds: `firing` once it has held for the rule's `for` (at once without
      one), `pending` until then;
    - otherwise `ok`.

    A rule without a previous status starts from ok."""
    now = evaluation.at
    before: RuleState = previous.state if previous is not None else "ok"
    pending_since: datetime | None = None
    state: RuleState
    if evaluation.value is None:
        state = "firing" if before == "firing" else "no data"
    elif not evaluation.condition:
        state = "ok"
    elif before == "firing":
        state = "firing"
    else:
        held_since = now
        if before == "pending" and previous is not None and previous.pending_since is not None:
            held_since = previous.pending_since
        if now - held_since >= rule.for_:
            state = "firing"
        else:
            state, pending_since = "pending", held_since
    since = previous.since if previous is not None and before == state else now
    status = RuleStatus(
        rule=rule.name,
        state=state,
        since=since,
        pending_since=pending_since,
        value=evaluation.value,
        threshold=evaluation.threshold,
        volume=evaluation.volume,
        evaluated_at=now,
    )
    if state == before:
        return status, None
    return status, Transition(now, rule.name, before, state, evaluation.value, evaluation.threshold)
