"""Logs and traces for every service: structlog (JSON off a terminal) with trace and span ids in each
line; OpenTelemetry from the standard ``OTEL_*`` variables, or a console exporter for local runs."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import NoOpTracer, Tracer

__all__ = ["configure_logging", "configure_tracing", "shutdown_tracing"]


def _add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def configure_logging(*, service: str, level: str = "INFO", json_logs: bool | None = None) -> None:
    as_json = (not sys.stderr.isatty()) if json_logs is None else json_logs
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


class _ServiceTracerProvider(TracerProvider):
    """Hands out a no-op tracer until a span processor is added.

    Spans that no processor exports still cost 0.06-0.2 ms per hop on the bus (bench_hop.py --tracing-sdk); a
    no-op tracer skips them and still passes the incoming trace context on (its spans carry the parent's
    context), so a service without an exporter keeps the traces of the others connected.
    """

    _exporting = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self._exporting = True

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return super().get_tracer(*args, **kwargs) if self._exporting else NoOpTracer()


def configure_tracing(
    *, service: str, env: Mapping[str, str], extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """A tracer provider for ``service``; exporters chosen by the environment.

    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) turns on OTLP over HTTP;
    ``TRIGREASON_TRACE_CONSOLE=1`` prints spans; ``OTEL_SDK_DISABLED=true`` keeps tracing off.
    """
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", f"trigreason-{service}")})
    provider = _ServiceTracerProvider(resource=resource)
    if env.get("OTEL_SDK_DISABLED", "").lower() != "true":
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if env.get("TRIGREASON_TRACE_CONSOLE", "") in ("1", "true"):
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    return provider


# How long a process waits at exit for the spans still buffered: an OTLP exporter retries an unreachable
# collector for about 10 s, longer than a stop may take.
_TRACING_SHUTDOWN_S = 1.5


def shutdown_tracing(provider: TracerProvider, timeout_s: float = _TRACING_SHUTDOWN_S) -> None:
    """``provider.shutdown()`` (exports the spans still buffered), given at most ``timeout_s``: spans that
    an unreachable collector would not take by then are dropped rather than hold up the exit."""
    worker = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():  # not again at exit (the provider registers its shutdown with atexit)
        atexit.unregister(provider.shutdown)
