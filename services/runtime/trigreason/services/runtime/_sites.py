"""Placement of a service between sites (docs/sites.md): the stream layout an edge or the cloud creates, and
the reply route a cloud worker answers an edge on. The subjects come from ``trigreason.proto`` (its
``_sites`` vocabulary); the bus (``_bus``) applies the route."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog
from nats.aio.client import Client as NatsClient
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
    site_ping,
    site_subject,
)

__all__ = [
    "PLACED",
    "CloudLink",
    "Placement",
    "ReplyRoute",
    "answer_pings",
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


async def answer_pings(nc: NatsClient) -> None:
    """In the cloud: answer the edges' ``trig.site.<site>.ping`` (one replica of the pool answers each), so
    an edge knows whether an LRM worker can be reached across the WAN."""

    async def pong(msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(b"ok")

    await nc.subscribe(site_ping("*"), queue="cloud-ping", cb=pong)


class CloudLink:
    """At an edge: whether the cloud answers. Asks ``trig.site.<site>.ping`` every ``interval_s``; after
    ``misses`` unanswered asks in a row the cloud is down (``on_down`` runs once per outage), after one
    answer it is up again. A blackholed WAN holds requests without a word, so a timeout is the only sign."""

    def __init__(
        self,
        nc: NatsClient,
        site: str,
        *,
        on_down: Callable[[], Awaitable[None]],
        interval_s: float = 1.0,
        timeout_s: float = 1.5,
        misses: int = 2,
    ) -> None:
        self._nc = nc
        self._subject = site_ping(site)
        self._on_down = on_down
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._misses = misses
        self.up = True
        self._log = structlog.get_logger("trigreason.sites").bind(site=site)

    async def run(self, stop: asyncio.Event) -> None:
        missed = 0
        while not stop.is_set():
            try:
                await self._nc.request(self._subject, b"", timeout=self._timeout_s)
                missed = 0
                if not self.up:
                    self._log.info("cloud_reachable")
                self.up = True
            except Exception:
                missed += 1
                if missed >= self._misses and self.up:
                    self.up = False
                    self._log.warning("cloud_unreachable", misses=missed)
                    with contextlib.suppress(Exception):
                        await self._on_down()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
