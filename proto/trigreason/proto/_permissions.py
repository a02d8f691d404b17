"""Who may do what on the bus: one NATS user per service, allowed only its own subjects.

Derived from the vocabulary in ``_subjects.py`` and rendered (``tests/deploy/nats_auth.py``,
``make nats-auth``) into ``infra/nats/auth.conf`` and the chart's NATS values; anything that writes a NATS
server configuration (an embedded stack, a site's accounts) calls ``service_permissions`` too.

Least privilege that still works (docs/deploy.md explains each line):

- data plane: each service publishes only the subjects it produces, pulls only from its own durable
  consumer (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``), acknowledges only that consumer's messages
  (``$JS.ACK.<stream>.<consumer>.>``) and dead-letters only what that consumer consumes;
- replies: each service has its own inbox prefix (``TRIGREASON_NATS_INBOX_PREFIX=_INBOX.<service>``) and may
  subscribe to nothing else, so no service can read the JetStream replies, and so the pulled messages, of
  another one (a shared ``_INBOX.>`` would let the gateway read the workers' commands);
- control plane: every service creates the layout idempotently at start-up (``ensure_topology``), so
  each may create, update and inspect exactly the project's streams, the KV bucket's stream and the
  durable consumers, by name; nothing may delete or purge a stream or a consumer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from ._subjects import (
    BACKEND_BUCKET,
    BACKEND_KV_STREAM,
    CONSUMERS,
    EVENT_STREAM,
    KV_STREAM,
    SESSION_BUCKET,
    STREAMS,
    ConsumerName,
    command_subject,
    dead_letter_subject,
    event_filter,
    timer_subject,
)

__all__ = [
    "BUS_SERVICES",
    "CONSUMES",
    "JS_API",
    "PRODUCES",
    "BusService",
    "inbox_prefix",
    "js_api",
    "nats_authorization",
    "password_variable",
    "render_nats_conf",
    "service_permissions",
]

# The services that talk to the bus, each as its own NATS user.
BusService = Literal["gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"]
BUS_SERVICES: Final[tuple[BusService, ...]] = (
    "gateway",
    "orchestrator",
    "trigger-evaluator",
    "srm-worker",
    "lrm-worker",
)

JS_API: Final = "$JS.API"

# What each service publishes to the streams. Every service that consumes also tells a session when it
# dead-letters one of its messages.
PRODUCES: Final[Mapping[BusService, tuple[str, ...]]] = {
    "gateway": (event_filter("requested"),),
    "orchestrator": (
        command_subject("srm"),
        command_subject("lrm"),
        event_filter("committed"),
        event_filter("finished"),
        event_filter("failed"),
        timer_subject("*"),  # the session's deadline timer
        event_filter("dead_lettered"),
    ),
    # a JudgeStep under SpecReason
    "trigger-evaluator": (event_filter("verdict"), command_subject("lrm"), event_filter("dead_lettered")),
    "srm-worker": (event_filter("srm_step"), event_filter("step_failed"), event_filter("dead_lettered")),
    "lrm-worker": (
        event_filter("lrm_step"),
        event_filter("judged"),
        event_filter("step_failed"),
        event_filter("dead_lettered"),
    ),
}
# The consumers each service pulls from (the orchestrator also runs the deadline timers).
CONSUMES: Final[Mapping[BusService, tuple[ConsumerName, ...]]] = {
    "gateway": (),
    "orchestrator": ("orchestrator", "orchestrator-timer"),
    "trigger-evaluator": ("trigger-evaluator",),
    "srm-worker": ("srm-worker",),
    "lrm-worker": ("lrm-worker",),
}


def js_api(domain: str | None = None) -> str:
    """The JetStream API prefix a client publishes to: ``$JS.<domain>.API`` when it names a domain."""
    return JS_API if domain is None else f"$JS.{domain}.API"


def inbox_prefix(service: str) -> str:
    """The service's own reply subjects (``TRIGREASON_NATS_INBOX_PREFIX``)."""
    return f"_INBOX.{service}"


def password_variable(service: str) -> str:
    """The environment variable a NATS server reads the service's password from."""
    return service.upper().replace("-", "_") + "_NATS_PASSWORD"


def _topology(api: str) -> list[str]:
    """``ensure_topology``: every service creates the layout idempotently at start-up."""
    subjects: list[str] = []
    for stream in STREAMS:
        subjects += [f"{api}.STREAM.CREATE.{stream}", f"{api}.STREAM.UPDATE.{stream}"]
    subjects += [
        f"{api}.STREAM.INFO.{KV_STREAM}",
        f"{api}.STREAM.CREATE.{KV_STREAM}",
        f"{api}.STREAM.UPDATE.{KV_STREAM}",  # retention and sizes of a bucket from an older release
    ]
    subjects += [f"{api}.CONSUMER.DURABLE.CREATE.{c.stream}.{c.durable}" for c in CONSUMERS.values()]
    return subjects


def _consumer(service: BusService, api: str) -> list[str]:
    """Pull, acknowledge, watch the lag of, and dead-letter from the service's own durable consumers."""
    subjects: list[str] = []
    for name in CONSUMES[service]:
        spec = CONSUMERS[name]
        subjects += [
            f"{api}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
            f"{api}.CONSUMER.INFO.{spec.stream}.{spec.durable}",
            f"$JS.ACK.{spec.stream}.{spec.durable}.>",
            *(dead_letter_subject(s) for s in spec.subjects),
        ]
    return subjects


def _extra(service: BusService, api: str) -> list[str]:
    if service == "gateway":
        return [
            f"{api}.STREAM.NAMES",  # which stream holds trig.evt.<session>.> (js.subscribe asks)
            f"{api}.CONSUMER.CREATE.{EVENT_STREAM}",  # ordered (ephemeral) consumers for SSE replay
            f"$JS.FC.{EVENT_STREAM}.>",  # their flow-control replies
            # does the session exist, its stored request, its last event (GET /v1/sessions/{id} is a
            # projection of the events up to it; the gateway never reads the orchestrator's snapshots)
            f"{api}.STREAM.MSG.GET.{EVENT_STREAM}",
            # the inference servers' limits the workers published (BackendLimits), read-only
            f"{api}.STREAM.INFO.{BACKEND_KV_STREAM}",
            f"{api}.DIRECT.GET.{BACKEND_KV_STREAM}.>",
            f"{api}.STREAM.MSG.GET.{BACKEND_KV_STREAM}",
        ]
    if service in ("srm-worker", "lrm-worker"):
        # its inference server's limits (BackendLimits under its role's key), in a bucket it may create
        role = service.removesuffix("-worker")
        return [
            f"{api}.STREAM.INFO.{BACKEND_KV_STREAM}",
            f"{api}.STREAM.CREATE.{BACKEND_KV_STREAM}",
            f"$KV.{BACKEND_BUCKET}.{role}",
        ]
    if service == "orchestrator":
        # snapshots, compare-and-set; is an outbox's event on the stream already (after a crash)
        return [
            f"{api}.DIRECT.GET.{KV_STREAM}.>",
            f"{api}.STREAM.MSG.GET.{KV_STREAM}",
            f"$KV.{SESSION_BUCKET}.>",
            f"{api}.STREAM.MSG.GET.{EVENT_STREAM}",
        ]
    return []


def service_permissions(
    service: BusService, *, api: str = JS_API, inbox: str | None = None
) -> dict[str, Any]:
    """The NATS ``permissions`` block of ``service``'s user: what it may publish, where it reads replies.

    ``api`` is the JetStream API prefix its client uses (``js_api(domain)`` across a leaf node), ``inbox``
    its reply prefix (default ``inbox_prefix(service)``)."""
    return {
        "publish": {
            "allow": [*PRODUCES[service], *_consumer(service, api), *_extra(service, api), *_topology(api)]
        },
        "subscribe": {"allow": [f"{inbox or inbox_prefix(service)}.>"]},
    }


def nats_authorization(
    services: Iterable[BusService] = BUS_SERVICES,
    *,
    password: Callable[[BusService], str] = lambda s: f"<< ${password_variable(s)} >>",
    permissions: Callable[[BusService], dict[str, Any]] = service_permissions,
) -> dict[str, Any]:
    """A NATS ``authorization`` block with one user per service; passwords by default read from the
    server's environment (``password_variable``)."""
    return {"users": [{"user": s, "password": password(s), "permissions": permissions(s)} for s in services]}


def render_nats_conf(key: str, block: Mapping[str, Any]) -> str:
    """``key: block`` in NATS configuration syntax, as the NATS Helm chart renders ``config.merge``: JSON,
    with ``<< $VAR >>`` unquoted (a variable read from the server's environment)."""
    body = json.dumps(block, indent=2)
    return f"{key}: " + re.sub(r'"<< (.*?) >>"', r"\1", body) + "\n"
