"""The runtime every service shares: the bus (publish with trace context and deterministic ids, consume
with an explicit acknowledgement policy and dead letters), the JetStream topology, observability,
metrics, the event loop and process helpers, and TGI's wire format (both TGI servers use it)."""

from ._bus import Ack, Bus, Defer, Delivery, consume
from ._eventloop import EventLoopKind, event_loop_kind
from ._eventloop import run as run_event_loop
from ._host import (
    ConsumerBinding,
    ConsumerService,
    HostSettings,
    close_bus,
    consumer_service,
    run_bounded,
    serve_consumers,
    service_main,
    stop_on_signals,
)
from ._http import cleanup_within, start_server
from ._metrics import LrmPrices, ServiceMetrics, SiteRegistry, exposition, trace_exemplar
from ._observability import configure_logging, configure_tracing, shutdown_tracing
from ._process import STOP_SIGNALS, die_with_parent, on_stop_signals, stop_processes
from ._settings import env_settings, env_variable
from ._sites import CloudLink, Placement
from ._tgi import (
    TgiBadRequest,
    TgiChecked,
    TgiDetails,
    TgiParameters,
    TgiPrefillToken,
    TgiRequest,
    TgiResponse,
    TgiStreamDetails,
    TgiStreamResponse,
    TgiToken,
    check_tgi_request,
    decode_tgi_request,
    encode_tgi,
    tgi_sse_event,
)
from ._topology import BusSettings, backend_limits, consumer_spec, ensure_topology, publish_backend_limits

__all__ = [
    "STOP_SIGNALS",
    "Ack",
    "Bus",
    "BusSettings",
    "CloudLink",
    "ConsumerBinding",
    "ConsumerService",
    "Defer",
    "Delivery",
    "EventLoopKind",
    "HostSettings",
    "LrmPrices",
    "Placement",
    "ServiceMetrics",
    "SiteRegistry",
    "TgiBadRequest",
    "TgiChecked",
    "TgiDetails",
    "TgiParameters",
    "TgiPrefillToken",
    "TgiRequest",
    "TgiResponse",
    "TgiStreamDetails",
    "TgiStreamResponse",
    "TgiToken",
    "backend_limits",
    "check_tgi_request",
    "cleanup_within",
    "close_bus",
    "configure_logging",
    "configure_tracing",
    "consume",
    "consumer_service",
    "consumer_spec",
    "decode_tgi_request",
    "die_with_parent",
    "encode_tgi",
    "ensure_topology",
    "env_settings",
    "env_variable",
    "event_loop_kind",
    "exposition",
    "on_stop_signals",
    "publish_backend_limits",
    "run_bounded",
    "run_event_loop",
    "serve_consumers",
    "service_main",
    "shutdown_tracing",
    "start_server",
    "stop_on_signals",
    "stop_processes",
    "tgi_sse_event",
    "trace_exemplar",
]
