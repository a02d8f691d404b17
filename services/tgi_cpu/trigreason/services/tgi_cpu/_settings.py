"""Settings of ``trigreason serve tgi-cpu``: ``TRIGREASON_TGI_CPU_*`` variables, overridden by flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trigreason.proto import ConfigError
from trigreason.services.runtime import env_settings

__all__ = ["TgiCpuSettings"]

_PREFIX = "TRIGREASON_TGI_CPU_"


@dataclass(frozen=True, kw_only=True, slots=True)
class TgiCpuSettings:
    model: str = "tiny"  # a default model name (tiny, srm, lrm), a GGUF path, or hf://REPO/FILE
    host: str = "127.0.0.1"
    port: int = 8081
    ctx: int = 4096  # context window: prompt + new tokens of one request
    threads: int | None = None  # None: every CPU this process may run on
    batch: int = 512  # prompt tokens per llama_decode call
    # Requests waiting while one generates; one more gets 429 with Retry-After.
    max_queue: int = 16
    retry_after_s: int = 1
    max_stop_sequences: int = 4  # TGI's default
    max_top_n_tokens: int = 20  # TGI defaults to 5; judges read a 0-9 score from the top tokens
    default_max_new_tokens: int = 100  # TGI's default when a request names none
    prefix_reuse: bool = True  # off only to measure what it saves
    # Sequences kept in the K/V cache (sharing ctx): interleaved sessions keep each other's prefixes.
    cache_slots: int = 4

    def __post_init__(self) -> None:
        for name in (
            "port",
            "ctx",
            "batch",
            "retry_after_s",
            "max_stop_sequences",
            "default_max_new_tokens",
            "cache_slots",
        ):
            if getattr(self, name) < 1 and not (name == "port" and self.port == 0):
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.max_top_n_tokens < 0:
            raise ConfigError(f"max_top_n_tokens must be >= 0, got {self.max_top_n_tokens}")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> TgiCpuSettings:
        """Read ``TRIGREASON_TGI_CPU_<FIELD>`` (e.g. ``TRIGREASON_TGI_CPU_MAX_QUEUE``); overrides that are
        None (a flag not given) leave the value from the environment."""
        return env_settings(cls, env, prefix=_PREFIX, overrides=overrides)
