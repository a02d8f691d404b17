"""The JetStream layout of ``trigreason.proto`` (streams, consumers, bucket), created idempotently at
start-up by every service (any order, any replica)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
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
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from trigreason.proto import (
    BACKEND_BUCKET,
    COMMAND_STREAM,
    CONSUMERS,
    DEAD_LETTER_STREAM,
    EVENT_STREAM,
    KV_STREAM,
    SESSION_BUCKET,
    STREAMS,
    TIMER_STREAM,
    BackendLimits,
    ConfigError,
    Role,
)

from ._settings import env_settings

__all__ = ["BusSettings", "backend_limits", "ensure_topology", "publish_backend_limits"]


_INBOX_PREFIX = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


_MiB = 1024**2
_MAX_BYTES_FIELDS = {
    "events": "event_max_bytes",
    "sessions": "session_max_bytes",
    "commands": "command_max_bytes",
    "dead_letters": "dead_letter_max_bytes",
}
_DEFAULT_MAX_BYTES = {  # (file, memory)
    "events": (4096 * _MiB, 128 * _MiB),
    "sessions": (1024 * _MiB, 64 * _MiB),
    "commands": (512 * _MiB, 32 * _MiB),
    "dead_letters": (256 * _MiB, 8 * _MiB),
}


# Fields whose variable is not TRIGREASON_<FIELD>.
_ENV_NAMES = {
    "replicas": "TRIGREASON_NATS_REPLICAS",
    "storage": "TRIGREASON_NATS_STORAGE",
    "inbox_prefix": "TRIGREASON_NATS_INBOX_PREFIX",
    "backoff_s": "TRIGREASON_RETRY_BACKOFF_S",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class BusSettings:
    """How the streams are sized and how redelivery behaves. ``from_env`` reads ``TRIGREASON_*``."""

    nats_url: str = "nats://127.0.0.1:4222"
    replicas: int = 1
    # Retention: a session's events and its snapshot expire together, so a session either answers in
    # full or is gone (404); sizes are bounded so a busy cluster cannot fill the NATS store. JetStream
    # reserves each stream's max_bytes in the server's store, so the defaults (None) depend on the
    # storage: 5.75 GiB in all on file (the chart's 10 Gi volume), 232 MiB in memory.
    event_max_age_s: float = 7 * 24 * 3600.0
    event_max_bytes: int | None = None  # file 4 GiB, memory 128 MiB
    session_max_bytes: int | None = None  # file 1 GiB, memory 64 MiB
    command_max_bytes: int | None = None  # file 512 MiB, memory 32 MiB
    dead_letter_max_age_s: float = 30 * 24 * 3600.0
    dead_letter_max_bytes: int | None = None  # file 256 MiB, memory 8 MiB
    max_message_bytes: int = 1024**2  # NATS' default max_payload
    duplicate_window_s: float = 120.0
    ack_wait_s: float = 30.0  # workers send in_progress more often than this during long generations
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)  # nak delays after a failed attempt
    storage: Literal["file", "memory"] = "file"
    # Credentials (one NATS user per service in a deployment, see infra/nats/auth.conf): user and password,
    # or a token, or a .creds file (JWT + NKey seed); none by default.
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_token: str | None = field(default=None, repr=False)
    nats_creds: str | None = None
    # Replies (JetStream API answers, pulled messages) arrive under this prefix; a per-service prefix lets
    # the server's permissions keep one service from reading another's replies.
    inbox_prefix: str = "_INBOX"

    def max_bytes(self, kind: str) -> int:
        """The byte limit of the ``events``, ``sessions``, ``commands`` or ``dead_letters`` store."""
        value: int | None = getattr(self, _MAX_BYTES_FIELDS[kind])
        if value is not None:
            return value
        file_bytes, memory_bytes = _DEFAULT_MAX_BYTES[kind]
        return file_bytes if self.storage == "file" else memory_bytes

    def connect_options(self) -> dict[str, Any]:
        """Credentials and inbox prefix as keyword arguments of ``nats.connect``."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.nats_user is not None:
            options["user"] = self.nats_user
            options["password"] = self.nats_password
        if self.nats_token is not None:
            options["token"] = self.nats_token
        if self.nats_creds is not None:
            options["user_credentials"] = self.nats_creds
        return options

    def __post_init__(self) -> None:
        if (self.nats_user is None) != (self.nats_password is None):
            raise ConfigError("TRIGREASON_NATS_USER and TRIGREASON_NATS_PASSWORD go together")
        if self.nats_token is not None and self.nats_user is not None:
            raise ConfigError("set TRIGREASON_NATS_TOKEN or TRIGREASON_NATS_USER/PASSWORD, not both")
        if not _INBOX_PREFIX.fullmatch(self.inbox_prefix):
            raise ConfigError(
                f"TRIGREASON_NATS_INBOX_PREFIX={self.inbox_prefix!r}: subject tokens, no wildcards"
            )
        if self.replicas < 1 or self.max_deliver < 1 or not self.ack_wait_s > 0:
            raise ConfigError("replicas and max_deliver must be >= 1, ack_wait_s > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> BusSettings:
        """``TRIGREASON_<FIELD>`` for each field (``TRIGREASON_ACK_WAIT_S``, ...), except the names in
        ``_ENV_NAMES``; flags in ``overrides``."""
        return env_settings(cls, env, prefix="TRIGREASON_", names=_ENV_NAMES, overrides=overrides)


def _retention(stream: str) -> RetentionPolicy:
    return RetentionPolicy.WORK_QUEUE if STREAMS[stream].work_queue else RetentionPolicy.LIMITS


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
            subjects=list(STREAMS[COMMAND_STREAM].subjects),
            retention=_retention(COMMAND_STREAM),
            storage=storage,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
            max_bytes=settings.max_bytes("commands"),
            max_msg_size=settings.max_message_bytes,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=TIMER_STREAM,
            subjects=list(STREAMS[TIMER_STREAM].subjects),
            retention=_retention(TIMER_STREAM),
            storage=storage,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
            max_msgs_per_subject=1,  # one deadline per session
            max_age=settings.event_max_age_s,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=EVENT_STREAM,
            subjects=list(STREAMS[EVENT_STREAM].subjects),
            retention=_retention(EVENT_STREAM),
            storage=storage,
            num_replicas=settings.replicas,
            max_age=settings.event_max_age_s,
            duplicate_window=settings.duplicate_window_s,
            max_bytes=settings.max_bytes("events"),
            max_msg_size=settings.max_message_bytes,
            discard=DiscardPolicy.OLD,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=list(STREAMS[DEAD_LETTER_STREAM].subjects),
            retention=_retention(DEAD_LETTER_STREAM),
            storage=storage,
            num_replicas=settings.replicas,
            max_age=settings.dead_letter_max_age_s,
            max_bytes=settings.max_bytes("dead_letters"),
            discard=DiscardPolicy.OLD,
        ),
    )
    for spec in CONSUMERS.values():
        config = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait_s,
            max_deliver=spec.max_deliver if spec.max_deliver is not None else settings.max_deliver,
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
    bucket = KeyValueConfig(
        bucket=SESSION_BUCKET,
        history=1,
        storage=storage,
        replicas=settings.replicas,
        ttl=settings.event_max_age_s,  # a snapshot lives as long as the session's events
        max_bytes=settings.max_bytes("sessions"),
        max_value_size=settings.max_message_bytes,
    )
    try:
        return await js.create_key_value(bucket)
    except BadRequestError:
        # Exists with other limits (an older deployment): bring its retention and sizes up to date.
        info = await js.stream_info(KV_STREAM)
        stream = info.config
        stream.max_age = bucket.ttl
        stream.max_bytes = bucket.max_bytes
        stream.max_msg_size = bucket.max_value_size
        await js.update_stream(stream)
        return await js.key_value(SESSION_BUCKET)


async def publish_backend_limits(js: JetStreamContext, settings: BusSettings, limits: BackendLimits) -> None:
    """A worker's inference-server limits, under its role's key (the bucket created on first use)."""
    bucket = KeyValueConfig(
        bucket=BACKEND_BUCKET,
        history=1,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        replicas=settings.replicas,
        max_bytes=1024 * 1024,
        max_value_size=4096,
    )
    try:
        kv = await js.create_key_value(bucket)
    except BadRequestError:  # exists (with other limits): it is only ever written by key
        kv = await js.key_value(BACKEND_BUCKET)
    await kv.put(limits.role, msgspec.json.encode(limits))


async def backend_limits(js: JetStreamContext, roles: tuple[Role, ...]) -> dict[Role, BackendLimits]:
    """What the workers published of ``roles``' inference servers (a role whose workers published
    nothing, or an unreadable value, is absent)."""
    try:
        kv = await js.key_value(BACKEND_BUCKET)
    except NotFoundError:
        return {}
    out: dict[Role, BackendLimits] = {}
    for role in roles:
        try:
            entry = await kv.get(role)
        except KeyNotFoundError:
            continue
        if entry.value:
            try:
                out[role] = msgspec.json.decode(entry.value, type=BackendLimits)
            except msgspec.DecodeError:
                continue
    return out
