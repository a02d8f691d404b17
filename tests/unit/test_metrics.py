"""The metrics registry: the site label on every sample, and trace ids as exemplars in OpenMetrics only."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.trace import TracerProvider

from trigreason.proto import ConfigError
from trigreason.services.runtime import HostSettings, LrmPrices, ServiceMetrics, exposition


def test_every_sample_carries_the_site() -> None:
    metrics = HostSettings.from_env({"TRIGREASON_SITE": "edge-1"}).metrics()
    metrics.steps.labels("trigreason", "srm").inc()
    metrics.consumer_lag.labels("TRIG_CMD", "srm-worker").set(3)
    body, content_type = exposition(metrics.registry, None)
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'trigreason_steps_committed_total{policy="trigreason",role="srm",site="edge-1"} 1.0' in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    assert all('site="edge-1"' in line for line in samples)


def test_histograms_carry_the_trace_id_only_in_openmetrics() -> None:
    metrics = ServiceMetrics()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("decide") as span:
        from trigreason.services.runtime import trace_exemplar

        exemplar = trace_exemplar()
        metrics.first_step.labels("trigreason").observe(1.7, exemplar)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert exemplar == {"trace_id": trace_id}
    body, content_type = exposition(metrics.registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    line = next(x for x in body.decode().splitlines() if 'le="2.5"' in x and "first_step" in x)
    assert re.search(r'# \{trace_id="' + trace_id + r'"\} 1\.7', line), line
    plain, _ = exposition(metrics.registry, "text/plain")
    assert trace_id not in plain.decode()


def test_no_exemplar_outside_a_span() -> None:
    from trigreason.services.runtime import trace_exemplar

    assert trace_exemplar() is None


def test_prices() -> None:
    prices = LrmPrices(input_usd_per_m=1.0, cached_input_usd_per_m=0.5, output_usd_per_m=2.0)
    assert prices.cost_usd(prompt=1000, cached=400, output=100) == pytest.approx((600 + 200 + 200) / 1e6)
    with pytest.raises(ConfigError, match="TRIGREASON_SITE"):
        HostSettings(site="two words")
    with pytest.raises(ConfigError, match="LRM_OUTPUT_USD_PER_M"):
        HostSettings(lrm_output_usd_per_m=-1)
