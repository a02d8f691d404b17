"""Span names follow OpenTelemetry's messaging conventions with low cardinality: each is named after its
subject's template (``publish trig.evt.{session}.committed``), the concrete subject is an attribute."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all, submit_and_wait
from tests.support import step
from trigreason.proto import SessionFinished, SessionParams

FINAL = step("So \\boxed{7}.")


async def test_span_names_are_subject_templates(cluster: Cluster) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cluster.tracer = provider.get_tracer("test")
    await start_all(cluster, ScriptedBackend("srm", default=FINAL), ScriptedBackend("lrm", default=FINAL))
    names: set[str] = set()
    for sid in ("alpha1", "beta22"):
        events = await submit_and_wait(
            cluster.server.url, sid, "What is 3 + 4?", SessionParams(priming_steps=1)
        )
        assert isinstance(events[-1], SessionFinished)
    spans = exporter.get_finished_spans()
    messaging = [s for s in spans if s.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER)]
    names = {s.name for s in messaging}
    assert not any("alpha1" in n or "beta22" in n for n in names), names  # no session id in any name
    assert "publish trig.evt.{session}.committed" in names
    assert "process trig.cmd.lrm" in names
    assert "process trig.timer.{session}" in names
    # The same operations for two sessions: the names do not grow with the number of sessions.
    assert len(names) <= 14
    for span in messaging:
        attrs = span.attributes or {}
        operation, template = span.name.split(" ", 1)
        assert attrs["messaging.operation.name"] == operation
        assert attrs["messaging.destination.template"] == template
        concrete = str(attrs["messaging.destination.name"])
        assert "{session}" not in concrete
        if "{session}" in template:
            assert concrete.split(".")[2] in ("alpha1", "beta22")
