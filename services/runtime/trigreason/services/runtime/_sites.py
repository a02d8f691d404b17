"""Placement of a service between sites (docs/sites.md): the stream layout an edge or the cloud creates, and
the reply route a cloud worker answers an edge on. The subjects come from ``trigreason.proto`` (its
``_sites`` vocabulary); the bus (``_bus``) applies the route."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nats.aio.msg import Msg
from nats.js.api import ExternalStream, StreamSource, SubjectTransform

from trigreason.proto import (
    LRM_COMMAND_STREAM,
    LRM_OUTBOX_STREAM,
    ConfigError,
    ConsumerName,
    command_subject,
    session_events,
    site_commands,
    site_deliver_prefix,
    site_events,
    site_js_api,
    site_of_subject,
    site_subject,
)

__all__ = [
    "PLACED",
    "Placement",
    "ReplyRoute",
    "check_site_name",
    "command_subjects",
    "consumer_filter",
    "consumer_stream",
    "current_route",
    "lrm_command_sources",
    "route_of",
    "site_event_transform",
]

Placement = Literal["single", "edge", "cloud"]

_SITE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def check_site_name(site: str, variable: str) -> str:
    """A site name is one subject token and the site's JetStream domain: letters, digits, ``-``, ``_``."""
    if not _SITE.fullmatch(site):
        raise ConfigError(f"{variable}={site!r}: a site is 1-32 letters, digits, '-' or '_'")
    return site


def site_event_transform(site: str) -> tuple[list[str], SubjectTransform]:
    """The extra subjects of an edge's event stream and the transform that files them as local events."""
    return [site_events(site)], SubjectTransform(src=site_events(site), dest=session_events(">"))


def lrm_command_sources(sites: tuple[str, ...]) -> list[StreamSource]:
    """The cloud queue's sources: each edge's LRM outbox, through that edge's JetStream domain."""
    return [
        StreamSource(
            name=LRM_OUTBOX_STREAM,
            external=ExternalStream(api=site_js_api(site), deliver=site_deliver_prefix(site)),
            subject_transforms=[SubjectTransform(src=command_subject("lrm"), dest=site_commands(site))],
        )
        for site in sites
    ]


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where a cloud worker's answers to the message it handles go: the site it came from. ``raw`` is that
    message, so a publish that waits for the WAN can keep it alive."""

    site: str
    raw: Msg

    def subject(self, subject: str) -> str:
        return site_subject(self.site, subject)


_route: contextvars.ContextVar[ReplyRoute | None] = contextvars.ContextVar("trig_reply_route", default=None)


def current_route() -> ReplyRoute | None:
    return _route.get()


def route_of(raw: Msg) -> None:
    """Set the reply route of the task handling ``raw`` when it came from an edge site."""
    found = site_of_subject(raw.subject)
    _route.set(ReplyRoute(found[0], raw) if found is not None else None)


def consumer_stream(placement: Placement, consumer: ConsumerName, default: str) -> str:
    """The stream a consumer reads here: the cloud's LRM worker reads the queue sourced from the edges."""
    return LRM_COMMAND_STREAM if placement == "cloud" and consumer == "lrm-worker" else default


def consumer_filter(
    placement: Placement, consumer: ConsumerName, subjects: tuple[str, ...]
) -> tuple[str, ...]:
    return (site_commands("*"),) if placement == "cloud" and consumer == "lrm-worker" else subjects


# Which consumers exist where (the edge has no LRM worker; the cloud only LRM workers); None: all.
PLACED: Mapping[Placement, frozenset[ConsumerName] | None] = {
    "single": None,
    "edge": frozenset({"srm-worker", "orchestrator", "orchestrator-timer", "trigger-evaluator"}),
    "cloud": frozenset({"lrm-worker"}),
}


def command_subjects(placement: Placement, subjects: tuple[str, ...]) -> list[str]:
    """The command stream's subjects: at the edge the SRM's only (LRM commands go to the outbox)."""
    return [command_subject("srm")] if placement == "edge" else list(subjects)
