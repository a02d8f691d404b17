"""Prometheus metrics of the cluster: one registry per process, served on ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServiceMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    """What every service may record; each records its own part."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.steps = Counter("trigreason_steps_committed", "committed steps", ["role"], registry=r)
        self.triggers = Counter("trigreason_triggers_fired", "triggers fired", ["kind"], registry=r)
        self.sessions = Counter("trigreason_sessions_ended", "sessions ended", ["outcome"], registry=r)
        self.srm_token_ratio = Histogram(
            "trigreason_srm_token_ratio",
            "SRM share of committed tokens per finished session",
            buckets=tuple(i / 10 for i in range(11)),
            registry=r,
        )
        self.step_latency = Histogram(
            "trigreason_step_seconds",
            "backend time per step",
            ["role", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter("trigreason_verdicts", "trigger-evaluator verdicts", ["decision"], registry=r)
        self.consumer_lag = Gauge(
            "trigreason_consumer_pending",
            "messages waiting for this service's consumer",
            ["consumer"],
            registry=r,
        )
        self.dead_letters = Counter(
            "trigreason_dead_letters", "messages dead-lettered", ["consumer"], registry=r
        )
