"""A service that exports no traces makes no spans, but passes the trace context it receives on: what it
publishes (and what the worker sends its backend) carries the incoming ``traceparent`` unchanged, so the
traces of the services that do export stay connected through it."""

from __future__ import annotations

import asyncio

import nats
from opentelemetry.trace import NoOpTracer

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.proto import (
    SessionParams,
    SessionRequested,
    encode,
    event_subject,
    session_events,
)

FINAL = step("So \\boxed{7}.")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_services_without_an_exporter_pass_the_trace_context_on(cluster: Cluster) -> None:
    cluster.tracer = NoOpTracer()  # what a service gets when nothing exports its spans
    srm, lrm = ScriptedBackend("srm", default=FINAL), ScriptedBackend("lrm", default=FINAL)
    await start_all(cluster, srm, lrm)
    nc = await nats.connect(cluster.server.url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(session_events("tp1"), ordered_consumer=True)
        request = SessionRequested(
            session_id="tp1", question="What is 3 + 4?", params=SessionParams(priming_steps=1)
        )
        headers = {"Nats-Msg-Id": "tp1.requested", "traceparent": TRACEPARENT, "tracestate": "vendor=1"}
        await js.publish(event_subject("tp1", "requested"), encode(request), headers=headers)
        seen: list[tuple[str, dict[str, str]]] = []
        while not any(kind == "finished" for kind, _ in seen):
            msg = await asyncio.wait_for(sub.next_msg(), timeout=20)
            seen.append((msg.subject.rsplit(".", 1)[1], dict(msg.headers or {})))
    finally:
        await nc.close()
    published = [(kind, h) for kind, h in seen if kind != "requested"]
    assert {kind for kind, _ in published} >= {"committed", "finished"}
    for kind, h in published:  # the orchestrator's, the workers', the evaluator's: each hop passed it on
        assert h.get("traceparent") == TRACEPARENT, kind
        assert h.get("tracestate") == "vendor=1", kind
    sent = [r.headers for r in [*srm.requests, *lrm.requests]]
    assert sent
    assert all(h is not None and h.get("traceparent") == TRACEPARENT for h in sent)
