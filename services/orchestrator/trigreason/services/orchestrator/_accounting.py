"""Session accounting: raw counters kept in the snapshot, derived statistics computed on demand."""

from __future__ import annotations

import msgspec

from trigreason.proto import BackendTimings, Role, SessionSnapshot, SessionStats

__all__ = ["add_call", "add_trigger", "session_stats"]


def add_call(
    counters: SessionStats, role: Role, timings: BackendTimings, *, judge: bool = False, score: bool = False
) -> SessionStats:
    if role == "srm":
        return msgspec.structs.replace(
            counters,
            srm_calls=counters.srm_calls + 1,
            srm_backend_s=counters.srm_backend_s + timings.backend_s,
            srm_prompt_tokens=counters.srm_prompt_tokens + timings.prompt_tokens,
        )
    return msgspec.structs.replace(
        counters,
        lrm_calls=counters.lrm_calls + 1,
        judge_calls=counters.judge_calls + (1 if judge else 0),
        score_calls=counters.score_calls + (1 if score else 0),
        score_prompt_tokens=counters.score_prompt_tokens + (timings.prompt_tokens if score else 0),
        score_backend_s=counters.score_backend_s + (timings.backend_s if score else 0.0),
        lrm_backend_s=counters.lrm_backend_s + timings.backend_s,
        lrm_prompt_tokens=counters.lrm_prompt_tokens + timings.prompt_tokens,
        lrm_cached_prompt_tokens=counters.lrm_cached_prompt_tokens + timings.cached_prompt_tokens,
    )


def add_trigger(counters: SessionStats, kind: str) -> SessionStats:
    triggers = dict(counters.triggers)
    triggers[kind] = triggers.get(kind, 0) + 1
    return msgspec.structs.replace(counters, triggers=triggers)


def session_stats(state: SessionSnapshot) -> SessionStats:
    """The statistics users see: counters plus SRM token ratio and wall time."""
    c = state.counters
    committed = c.srm_tokens + c.lrm_tokens
    wall = max(0.0, state.last_event_at - state.requested_at) if state.requested_at else 0.0
    return msgspec.structs.replace(
        c,
        srm_token_ratio=(c.srm_tokens / committed) if committed else 0.0,
        wall_s=wall,
    )
