"""The session view of ``GET /v1/sessions/{id}``: a projection of the session's events.

The gateway reads the session's event stream (``trig.evt.<session>.>``), never the orchestrator's private
state, so the orchestrator can change its snapshot freely. ``session_view`` folds the events, in stream
order, into the view (``SessionView``): pure and synchronous.

- the request gives the question, the conversation it ends (system messages and earlier turns, context
  apart from the steps), the policy and the parameters;
- each committed step counts once (a redelivery outside JetStream's duplicate window can publish one twice:
  the first of an index is kept);
- the first terminal event (finished or failed) ends the session: its answer, reason and statistics are the
  view's, and what comes after it is ignored;
- while the session runs, the statistics are what the events tell: committed tokens and steps per role, the
  SRM token ratio and the wall time up to the latest event that carries a time;
- a session is ``queued`` until anything but its request is on the stream, then ``running``.
"""

from __future__ import annotations

from collections.abc import Iterable

from trigreason.proto import (
    ChatTurn,
    JudgeScored,
    Message,
    MessageDeadLettered,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    SessionStats,
    StepCommitted,
    StepFailed,
    StepGenerated,
    Verdict,
    flat_params,
)

from ._responses import SessionStatus, SessionView, ViewStep

__all__ = ["SessionProjection", "session_view"]

_Timed = StepGenerated | StepFailed | JudgeScored | Verdict | MessageDeadLettered


class SessionProjection:
    """The fold: ``apply`` each event in stream order, then ``view``."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.request: SessionRequested | None = None
        self.steps: dict[int, StepCommitted] = {}
        self.end: SessionFinished | SessionFailed | None = None
        self.started = False  # anything but the request is on the stream
        self.last_at = 0.0  # the latest time an event carries

    def apply(self, event: Message | None) -> None:
        """Fold one event in; ``None`` (an undecodable event) and events of another session change nothing."""
        if event is None or event.session_id != self.session_id or self.end is not None:
            return
        if isinstance(event, SessionRequested):
            if self.request is None:
                self.request = event
            return
        self.started = True
        if isinstance(event, StepCommitted):
            self.steps.setdefault(event.index, event)
        elif isinstance(event, SessionFinished | SessionFailed):
            self.end = event
        elif isinstance(event, _Timed):
            self.last_at = max(self.last_at, event.at)

    def status(self) -> SessionStatus:
        if isinstance(self.end, SessionFinished):
            return "finished"
        if isinstance(self.end, SessionFailed):
            return "failed"
        return "running" if self.started else "queued"

    def stats(self) -> SessionStats:
        if self.end is not None:
            return self.end.stats
        tokens = {"srm": 0, "lrm": 0}
        steps = {"srm": 0, "lrm": 0}
        for step in self.steps.values():
            tokens[step.role] += step.tokens
            steps[step.role] += 1
        committed = tokens["srm"] + tokens["lrm"]
        requested_at = self.request.requested_at if self.request is not None else 0.0
        return SessionStats(
            srm_tokens=tokens["srm"],
            lrm_tokens=tokens["lrm"],
            srm_steps=steps["srm"],
            lrm_steps=steps["lrm"],
            srm_token_ratio=tokens["srm"] / committed if committed else 0.0,
            wall_s=max(0.0, self.last_at - requested_at) if requested_at else 0.0,
        )

    def view(self) -> SessionView | None:
        """The view; None when no event of the session is known (unknown or expired)."""
        if self.request is None and not self.started:
            return None
        view = SessionView(
            session_id=self.session_id,
            status=self.status(),
            answer=self.end.answer if isinstance(self.end, SessionFinished) else None,
            end_reason=(
                self.end.reason
                if isinstance(self.end, SessionFinished)
                else self.end.code
                if isinstance(self.end, SessionFailed)
                else None
            ),
            steps=[
                ViewStep(index=s.index, role=s.role, text=s.text, tokens=s.tokens, trigger=s.trigger)
                for _, s in sorted(self.steps.items())
            ],
            stats=self.stats(),
        )
        if self.request is not None:  # an expired request leaves the rest of the view
            view.question = self.request.question
            # The conversation apart from the steps: earlier turns are context, the question its last user
            # turn (a lone question is the conversation of one turn).
            turns = self.request.messages or (ChatTurn(role="user", content=self.request.question),)
            view.conversation = list(turns)
            view.policy = self.request.params.policy
            view.params = flat_params(self.request.params)
        return view


def session_view(session_id: str, events: Iterable[Message | None]) -> SessionView | None:
    """The view of ``session_id`` from its events in stream order; None when there is none of them."""
    projection = SessionProjection(session_id)
    for event in events:
        projection.apply(event)
    return projection.view()
