"""Prometheus metrics of the cluster: one registry per process, served on ``/metrics``.

Names follow Prometheus' conventions (base units, ``_total`` on counters, which prometheus_client appends,
``_seconds``); labels are few-valued (policy, role, kind, outcome, code, consumer, site), never a session id.
Every sample carries the process's ``site`` (``TRIGREASON_SITE``), so one Prometheus can watch several
sites. Histograms of session and handling times carry the trace id as an exemplar, which only the
OpenMetrics exposition shows (``Accept: application/openmetrics-text``). docs/operations.md lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as _OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as _openmetrics_latest

__all__ = ["LrmPrices", "ServiceMetrics", "SiteRegistry", "exposition", "trace_exemplar"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Sessions run for seconds to many minutes (a CPU LRM writes ~10 tokens/s).
_SESSION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
_PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class LrmPrices:
    """What the LRM's tokens cost, USD per million (defaults: the edge-cloud model's, trigreason.eval)."""

    input_usd_per_m: float = 0.55
    cached_input_usd_per_m: float = 0.14
    output_usd_per_m: float = 2.19

    def cost_usd(self, *, prompt: int, cached: int, output: int) -> float:
        cached = min(cached, prompt)
        return (
            (prompt - cached) * self.input_usd_per_m
            + cached * self.cached_input_usd_per_m
            + output * self.output_usd_per_m
        ) / 1e6


class SiteRegistry(CollectorRegistry):
    """A registry whose every sample also carries ``site=<site>`` (prometheus_client has no constant
    labels per registry; adding them at collection keeps each metric's own label names unchanged)."""

    def __init__(self, site: str = "default") -> None:
        super().__init__()
        self.site = site

    def collect(self) -> Iterable[Metric]:
        for family in super().collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [s._replace(labels={**s.labels, "site": self.site}) for s in family.samples]
            yield labelled


def trace_exemplar() -> dict[str, str] | None:
    """The current span's trace id as an exemplar (None outside a sampled span)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return {"trace_id": format(ctx.trace_id, "032x")}


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and content type of ``/metrics``: OpenMetrics (with exemplars) when the scraper asks for
    it, else Prometheus' text format."""
    if accept and "application/openmetrics-text" in accept:
        return _openmetrics_latest(registry), _OPENMETRICS_TYPE  # type: ignore[no-untyped-call]
    return _text_latest(registry), CONTENT_TYPE_LATEST


class ServiceMetrics:
    """What every bus-driven service may record; each records its own part."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        site: str = "default",
        prices: LrmPrices | None = None,
    ) -> None:
        self.registry = registry or SiteRegistry(site)
        self.prices = prices or LrmPrices()
        r = self.registry
        # -- sessions (orchestrator) --
        self.sessions_started = Counter(
            "trigreason_sessions_started", "sessions started", ["policy"], registry=r
        )
        self.sessions = Counter(
            "trigreason_sessions_ended",
            "sessions ended, by outcome (finished, failed) and code (the failure code, or why it finished)",
            ["policy", "outcome", "code"],
            registry=r,
        )
        self.first_step = Histogram(
            "trigreason_session_first_step_seconds",
            "time from the request to the first committed step",
            ["policy"],
            buckets=_SESSION_BUCKETS,
            registry=r,
        )
        self.session_duration = Histogram(
            "trigreason_session_duration_seconds",
            "time from the request to the terminal event",
            ["policy", "outcome"],
            buckets=_SESSION_BUCKETS,
            registry=r,
        )
        self.sessions_in_flight = Gauge(
            "trigreason_sessions_in_flight",
            "sessions started and not ended (their deadline timers waiting on the timer stream)",
            registry=r,
        )
        self.steps = Counter("trigreason_steps_committed", "committed steps", ["policy", "role"], registry=r)
        self.triggers = Counter("trigreason_triggers_fired", "triggers fired", ["policy", "kind"], registry=r)
        self.srm_token_ratio = Histogram(
            "trigreason_srm_token_ratio",
            "SRM share of committed tokens per finished session",
            ["policy"],
            buckets=tuple(i / 10 for i in range(11)),
            registry=r,
        )
        self.srm_wasted_tokens = Counter(
            "trigreason_srm_wasted_tokens", "SRM tokens of discarded steps", ["policy"], registry=r
        )
        self.lrm_tokens = Counter(
            "trigreason_lrm_tokens",
            "LRM tokens billed: prompt (cached included), cached_prompt, output",
            ["policy", "kind"],
            registry=r,
        )
        self.lrm_cost = Counter(
            "trigreason_lrm_cost_usd",
            "LRM tokens at the configured prices (TRIGREASON_LRM_*_USD_PER_M)",
            ["policy"],
            registry=r,
        )
        # -- workers --
        self.step_latency = Histogram(
            "trigreason_step_seconds",
            "backend time per step",
            ["role", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_requests = Counter(
            "trigreason_backend_requests",
            "backend calls by result (ok, error: retried or failed)",
            ["role", "result"],
            registry=r,
        )
        self.time_per_output_token = Histogram(
            "trigreason_backend_time_per_output_token_seconds",
            "backend time per generated token",
            ["role"],
            buckets=_PER_TOKEN_BUCKETS,
            registry=r,
        )
        # -- trigger-evaluator --
        self.verdicts = Counter("trigreason_verdicts", "trigger-evaluator verdicts", ["decision"], registry=r)
        # -- the bus (every service) --
        self.handle_seconds = Histogram(
            "trigreason_handle_seconds",
            "time to handle one message, by consumer",
            ["consumer"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.handled = Counter(
            "trigreason_messages_handled",
            "messages handled, by consumer and outcome (ack, defer, retry, dead_letter)",
            ["consumer", "outcome"],
            registry=r,
        )
        self.redeliveries = Counter(
            "trigreason_redeliveries", "messages delivered again", ["consumer"], registry=r
        )
        self.consumer_lag = Gauge(
            "trigreason_consumer_pending",
            "messages waiting for a consumer or delivered and not yet acknowledged",
            ["stream", "consumer"],
            registry=r,
        )
        self.dead_letters = Counter(
            "trigreason_dead_letters",
            "messages dead-lettered, by subject template and reason",
            ["subject", "reason"],
            registry=r,
        )
