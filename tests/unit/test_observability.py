"""Tracing set-up: spans only where something exports them, trace context passed on either way."""

from __future__ import annotations

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trigreason.services.runtime import configure_tracing

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _hop(env: dict[str, str], exporter: InMemorySpanExporter | None = None) -> dict[str, str]:
    """What a service does per message: extract the upstream context, work in a span, inject downstream."""
    provider = configure_tracing(
        service="test", env=env, extra_processor=SimpleSpanProcessor(exporter) if exporter else None
    )
    tracer = provider.get_tracer("trigreason")
    ctx = propagate.extract({"traceparent": UPSTREAM})
    out: dict[str, str] = {}
    with tracer.start_as_current_span("work", context=ctx):
        propagate.inject(out)
    provider.shutdown()
    return out


def test_without_an_exporter_no_span_is_recorded_and_the_context_passes_through() -> None:
    out = _hop({})
    assert out["traceparent"] == UPSTREAM  # the upstream span, unchanged: downstream traces stay connected


def test_with_an_exporter_the_span_is_recorded_as_a_child_of_the_upstream_span() -> None:
    exporter = InMemorySpanExporter()
    out = _hop({}, exporter)
    (span,) = exporter.get_finished_spans()
    assert span.name == "work"
    assert format(span.context.trace_id, "032x") == UPSTREAM.split("-")[1]
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == UPSTREAM.split("-")[2]
    # Downstream sees this span as its parent, in the same trace.
    assert out["traceparent"] == f"00-{UPSTREAM.split('-')[1]}-{format(span.context.span_id, '016x')}-01"


def test_otel_sdk_disabled_records_nothing_even_with_a_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # the SDK reads it from the process environment
    exporter = InMemorySpanExporter()
    _hop({"OTEL_SDK_DISABLED": "true"}, exporter)
    assert exporter.get_finished_spans() == ()
