"""The bus vocabulary in proto: every message lands in a stream, every consumer reads from its stream, the
subjects parse back, and no code outside proto spells a subject of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trigreason.proto import (
    CONSUMERS,
    EVENT_KINDS,
    STREAMS,
    DeadlineReached,
    GenerateStep,
    Message,
    MessageDeadLettered,
    SessionRequested,
    command_subject,
    dead_letter_subject,
    event_filter,
    event_subject,
    parse_subject,
    session_events,
    subject_for,
    timer_subject,
)

ROOT = Path(__file__).resolve().parents[2]


def _matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(have) == len(want)


def _stream_of(subject: str) -> str:
    """The stream whose subjects match ``subject`` (NATS wildcards: ``*`` one token, ``>`` the rest)."""
    found = []
    for name, spec in STREAMS.items():
        for pattern in spec.subjects:
            if _matches(pattern, subject):
                found.append(name)
    assert len(found) == 1, (subject, found)
    return found[0]


def test_every_message_and_every_consumer_lands_in_exactly_one_stream() -> None:
    messages: list[Message] = [
        SessionRequested(session_id="s1", question="q"),
        GenerateStep(session_id="s1", command_id="c", step_index=0, role="srm", prompt="p", max_new_tokens=1),
        DeadlineReached(session_id="s1", deadline_at=1.0),
        MessageDeadLettered(session_id="s1", origin_subject=command_subject("srm"), reason="r"),
    ]
    streams = {_stream_of(subject_for(m)) for m in messages}
    assert streams == set(STREAMS) - {"TRIG_DLQ"}
    assert _stream_of(dead_letter_subject(event_subject("s1", "verdict"))) == "TRIG_DLQ"
    for kind in EVENT_KINDS:
        assert _stream_of(event_subject("s1", kind)) == "TRIG_EVT"
    for spec in CONSUMERS.values():
        for subject in spec.subjects:
            concrete = subject.replace("*", "s1").replace(">", "s1")
            assert _stream_of(concrete) == spec.stream, spec


def test_consumers_filter_on_known_event_kinds() -> None:
    for spec in CONSUMERS.values():
        for subject in spec.subjects:
            family, _, kind = parse_subject(subject)
            assert family in ("cmd", "evt", "timer")
            assert kind is None or kind in EVENT_KINDS


@pytest.mark.parametrize(
    ("subject", "parsed"),
    [
        (event_subject("s1", "verdict"), ("evt", "s1", "verdict")),
        (timer_subject("s1"), ("timer", "s1", None)),
        (command_subject("srm"), ("cmd", None, None)),
        (dead_letter_subject(event_subject("s1", "verdict")), ("dlq", None, None)),
        ("other.evt.s1.verdict", ("", None, None)),
    ],
)
def test_subjects_parse_back(subject: str, parsed: tuple[str, str | None, str | None]) -> None:
    assert parse_subject(subject) == parsed


def test_wildcards() -> None:
    assert event_filter("committed") == "trig.evt.*.committed"
    assert session_events("s1") == "trig.evt.s1.>"
    assert session_events(">") == "trig.evt.>"
    assert command_subject(">") == "trig.cmd.>"


# Tests spell subjects on purpose (they check the vocabulary from outside); the shipped code must not.
_SUBJECT_LITERAL = re.compile(r"""["'](trig\.(cmd|evt|timer|dlq)|\$JS\.|\$KV\.|KV_trig|TRIG_[A-Z]+["'])""")


def test_no_subject_literals_outside_proto() -> None:
    offenders = []
    for folder in ("services", "trigreason", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _SUBJECT_LITERAL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "name subjects through trigreason.proto:\n" + "\n".join(offenders)
