"""The JetStream layout, created idempotently at start-up by every service (any order, any replica)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from trigreason.core import ConfigError
from trigreason.proto import COMMAND_STREAM, DEAD_LETTER_STREAM, EVENT_STREAM, SESSION_BUCKET

__all__ = ["CONSUMERS", "BusSettings", "ConsumerSpec", "ensure_topology"]


@dataclass(frozen=True, kw_only=True, slots=True)
class BusSettings:
    """How the streams are sized and how redelivery behaves. ``from_env`` reads ``TRIGREASON_*``."""

    nats_url: str = "nats://127.0.0.1:4222"
    replicas: int = 1
    event_max_age_s: float = 7 * 24 * 3600.0
    dead_letter_max_age_s: float = 30 * 24 * 3600.0
    duplicate_window_s: float = 120.0
    ack_wait_s: float = 30.0  # workers send in_progress more often than this during long generations
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)  # nak delays after a failed attempt
    storage: str = "file"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BusSettings:
        def num(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a number") from exc

        defaults = cls()
        storage = env.get("TRIGREASON_NATS_STORAGE", defaults.storage)
        if storage not in ("file", "memory"):
            raise ConfigError(f"TRIGREASON_NATS_STORAGE={storage!r}: use file or memory")
        return cls(
            nats_url=env.get("TRIGREASON_NATS_URL", defaults.nats_url),
            replicas=int(num("TRIGREASON_NATS_REPLICAS", defaults.replicas)),
            event_max_age_s=num("TRIGREASON_EVENT_MAX_AGE_S", defaults.event_max_age_s),
            ack_wait_s=num("TRIGREASON_ACK_WAIT_S", defaults.ack_wait_s),
            max_deliver=int(num("TRIGREASON_MAX_DELIVER", defaults.max_deliver)),
            storage=storage,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerSpec:
    stream: str
    durable: str
    subjects: tuple[str, ...]


# One durable pull consumer per role, shared by all of that role's replicas: adding replicas scales it.
CONSUMERS: Mapping[str, ConsumerSpec] = {
    "srm-worker": ConsumerSpec(stream=COMMAND_STREAM, durable="srm-worker", subjects=("trig.cmd.srm",)),
    "lrm-worker": ConsumerSpec(stream=COMMAND_STREAM, durable="lrm-worker", subjects=("trig.cmd.lrm",)),
    "orchestrator": ConsumerSpec(
        stream=EVENT_STREAM,
        durable="orchestrator",
        subjects=(
            "trig.evt.*.requested",
            "trig.evt.*.lrm_step",
            "trig.evt.*.verdict",
            "trig.evt.*.step_failed",
        ),
    ),
    "trigger-evaluator": ConsumerSpec(
        stream=EVENT_STREAM,
        durable="trigger-evaluator",
        subjects=("trig.evt.*.srm_step", "trig.evt.*.judged"),
    ),
}


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another configuration (an older deployment): bring it up to date.
        await js.update_stream(config)


async def ensure_topology(js: JetStreamContext, settings: BusSettings) -> KeyValue:
    """Create or update the streams, consumers and the session bucket; returns the bucket."""
    storage = StorageType.FILE if settings.storage == "file" else StorageType.MEMORY
    await _ensure_stream(
        js,
        StreamConfig(
            name=COMMAND_STREAM,
            subjects=["trig.cmd.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=EVENT_STREAM,
            subjects=["trig.evt.>"],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=settings.replicas,
            max_age=settings.event_max_age_s,
            duplicate_window=settings.duplicate_window_s,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=["trig.dlq.>"],
            retention=RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=settings.replicas,
            max_age=settings.dead_letter_max_age_s,
            discard=DiscardPolicy.OLD,
        ),
    )
    for spec in CONSUMERS.values():
        config = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            # No server-side backoff: it would replace ack_wait as the redelivery timer of in-flight
            # messages (a long generation would be redelivered after backoff[0]). Failed messages are
            # nak'ed with a delay from `backoff_s` by the consumer loop instead.
            max_ack_pending=-1,
        )
        if len(spec.subjects) == 1:
            config.filter_subject = spec.subjects[0]
        else:
            config.filter_subjects = list(spec.subjects)
        await js.add_consumer(spec.stream, config)
    try:
        return await js.key_value(SESSION_BUCKET)
    except Exception:
        return await js.create_key_value(
            KeyValueConfig(bucket=SESSION_BUCKET, history=1, storage=storage, replicas=settings.replicas)
        )
