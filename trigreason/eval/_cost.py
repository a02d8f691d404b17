"""The edge-cloud model: the SRM runs on the user's machine, the LRM behind a paid remote API.

Latency = measured SRM backend time + measured LRM backend time + one network round trip per LRM call
(the modelled part). Cost = LRM input tokens at the input price (the prefix the provider has cached at the
cached price) + LRM output tokens at the output price + SRM tokens at the local price.

Default prices are DeepSeek's published API prices for its reasoning model (deepseek-reasoner, USD per
million tokens: input 0.55 on a cache miss, 0.14 on a cache hit, output 2.19; api-docs.deepseek.com,
"Models & Pricing", 2025): a real reasoning-model API with prefix caching, as the paper's setting assumes.
The round trip (0.25 s) is a typical time to first token of a hosted API from a client in another region;
the local SRM costs nothing per token (hardware already owned). Every figure can be overridden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EdgeCloudModel", "edge_cloud"]


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeCloudModel:
    lrm_input_usd_per_m: float = 0.55
    lrm_cached_input_usd_per_m: float = 0.14
    lrm_output_usd_per_m: float = 2.19
    srm_usd_per_m: float = 0.0
    round_trip_s: float = 0.25

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def edge_cloud(stats: dict[str, Any], model: EdgeCloudModel) -> tuple[float, float]:
    """``(latency_s, api_cost_usd)`` of one session from its statistics."""
    lrm_calls = int(stats.get("lrm_calls", 0))
    latency = float(stats.get("srm_backend_s", 0.0)) + float(stats.get("lrm_backend_s", 0.0))
    latency += lrm_calls * model.round_trip_s
    prompt = int(stats.get("lrm_prompt_tokens", 0))
    cached = min(prompt, int(stats.get("lrm_cached_prompt_tokens", 0)))
    # Every LRM generation is committed; each judge call adds its one scored token.
    output = int(stats.get("lrm_tokens", 0)) + int(stats.get("judge_calls", 0))
    srm = int(stats.get("srm_tokens", 0)) + int(stats.get("srm_wasted_tokens", 0))
    cost = (
        (prompt - cached) * model.lrm_input_usd_per_m
        + cached * model.lrm_cached_input_usd_per_m
        + output * model.lrm_output_usd_per_m
        + srm * model.srm_usd_per_m
    ) / 1e6
    return latency, cost
