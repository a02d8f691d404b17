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

import msgspec

from trigreason.proto import SessionStats

__all__ = ["EdgeCloudModel", "edge_cloud"]


class EdgeCloudModel(msgspec.Struct, kw_only=True, frozen=True):
    lrm_input_usd_per_m: float = 0.55
    lrm_cached_input_usd_per_m: float = 0.14
    lrm_output_usd_per_m: float = 2.19
    srm_usd_per_m: float = 0.0
    round_trip_s: float = 0.25

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def edge_cloud(stats: SessionStats, model: EdgeCloudModel) -> tuple[float, float]:
    """``(latency_s, api_cost_usd)`` of one session from its statistics."""
    latency = stats.srm_backend_s + stats.lrm_backend_s + stats.lrm_calls * model.round_trip_s
    prompt = stats.lrm_prompt_tokens
    cached = min(prompt, stats.lrm_cached_prompt_tokens)
    # Every LRM generation is committed; each judge or scoring call adds its one generated token (a
    # scoring call's prefill of the step is in the prompt tokens, its time and round trip in the LRM's).
    output = stats.lrm_tokens + stats.judge_calls + stats.score_calls
    srm = stats.srm_tokens + stats.srm_wasted_tokens
    cost = (
        (prompt - cached) * model.lrm_input_usd_per_m
        + cached * model.lrm_cached_input_usd_per_m
        + output * model.lrm_output_usd_per_m
        + srm * model.srm_usd_per_m
    ) / 1e6
    return latency, cost
