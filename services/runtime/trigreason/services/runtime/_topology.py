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
    LRM_COMMAND_STREAM,
    LRM_OUTBOX_STREAM,
    SESSION_BUCKET,
    STREAMS,
    TIMER_STREAM,
    BackendLimits,
    ConfigError,
    ConsumerName,
    ConsumerSpec,
    Role,
    command_subject,
)

from ._settings import env_settings
from ._sites import (
    PLACED,
    Placement,
    check_site_name,
    command_subjects,
    consumer_filter,
    consumer_stream,
    lrm_command_sources,
    site_event_transform,
)
from ._tls import check_tls_files, tls_context

__all__ = ["BusSettings", "backend_limits", "consumer_spec", "ensure_topology", "publish_backend_limits"]


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
    "nats_domain": "TRIGREASON_NATS_DOMAIN",
    "nats_tls_ca": "TRIGREASON_NATS_TLS_CA",
    "nats_tls_cert": "TRIGREASON_NATS_TLS_CERT",
    "nats_tls_key": "TRIGREASON_NATS_TLS_KEY",
    "nats_tls_handshake_first": "TRIGREASON_NATS_TLS_HANDSHAKE_FIRST",
}
_TLS_PREFIX = "TRIGREASON_NATS_TLS_"


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
    # TLS (docs/sites.md): the CA that signed the server's certificate, this client's certificate and key
    # (servers that verify clients ask for them), and whether TLS starts before NATS' INFO (the server's
    # `handshake_first` must match). Any of them, or a tls:// URL, turns TLS on.
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = field(default=None, repr=False)
    nats_tls_handshake_first: bool = False
    # The JetStream domain named in every JetStream request ($JS.<domain>.API): required across leaf
    # nodes, where a bare $JS.API is another site's or no one's. An edge's domain is its site name.
    nats_domain: str | None = None
    # Where this service runs (docs/sites.md): `single` (one site, everything here), `edge` (a leaf-node
    # site: everything but the LRM workers) or `cloud` (the hub: the LRM workers of `edge_sites`).
    placement: Placement = "single"
    # An edge's name: its JetStream domain and its token in the cloud's subjects (TRIGREASON_SITE).
    site: str | None = None
    # The cloud: the edge sites whose LRM commands its workers take (TRIGREASON_EDGE_SITES=a,b).
    edge_sites: tuple[str, ...] = ()
    # The cloud: how long a worker keeps trying to hand a result to a site it cannot reach (a partition)
    # before it lets JetStream redeliver the command.
    site_publish_timeout_s: float = 600.0

    @property
    def tls(self) -> bool:
        urls = [u.strip() for u in self.nats_url.split(",")]
        return any(u.startswith("tls://") for u in urls) or any(
            v is not None for v in (self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key)
        )

    @property
    def domain(self) -> str | None:
        """The JetStream domain named in requests (an edge's: its site name)."""
        if self.nats_domain is None and self.placement == "edge":
            return self.site
        return self.nats_domain

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
        if self.tls:
            options["tls"] = tls_context(
                ca=self.nats_tls_ca, cert=self.nats_tls_cert, key=self.nats_tls_key, prefix=_TLS_PREFIX
            )
            options["tls_handshake_first"] = self.nats_tls_handshake_first
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
        tls_files = {"ca": self.nats_tls_ca, "cert": self.nats_tls_cert, "key": self.nats_tls_key}
        check_tls_files(**tls_files, prefix=_TLS_PREFIX)
        if self.nats_domain is not None:
            check_site_name(self.nats_domain, "TRIGREASON_NATS_DOMAIN")
        if self.placement == "edge":
            if self.site is None:
                raise ConfigError("TRIGREASON_PLACEMENT=edge needs TRIGREASON_SITE (the edge's name)")
            check_site_name(self.site, "TRIGREASON_SITE")
            if self.nats_domain is not None and self.nats_domain != self.site:
                raise ConfigError(
                    f"TRIGREASON_NATS_DOMAIN={self.nats_domain!r}: an edge's JetStream domain is its site "
                    f"name ({self.site!r})"
                )
        if self.placement == "cloud":
            if not self.edge_sites:
                raise ConfigError("TRIGREASON_PLACEMENT=cloud needs TRIGREASON_EDGE_SITES (its edge sites)")
            for site in self.edge_sites:
                check_site_name(site, "TRIGREASON_EDGE_SITES")
            if self.nats_domain is not None and self.nats_domain in self.edge_sites:
                raise ConfigError(f"TRIGREASON_NATS_DOMAIN={self.nats_domain!r} is an edge site's domain")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> BusSettings:
        """``TRIGREASON_<FIELD>`` for each field (``TRIGREASON_ACK_WAIT_S``, ...), except the names in
        ``_ENV_NAMES``; flags in ``overrides``."""
        return env_settings(cls, env, prefix="TRIGREASON_", names=_ENV_NAMES, overrides=overrides)


def _retention(stream: str) -> RetentionPolicy:
    return RetentionPolicy.WORK_QUEUE if STREAMS[stream].work_queue else RetentionPolicy.LIMITS


def consumer_spec(settings: BusSettings, consumer: ConsumerName) -> ConsumerSpec:
    """``CONSUMERS[consumer]`` as this placement has it (the cloud's LRM worker reads the sourced queue)."""
    spec = CONSUMERS[consumer]
    return ConsumerSpec(
        stream=consumer_stream(settings.placement, consumer, spec.stream),
        durable=spec.durable,
        subjects=consumer_filter(settings.placement, consumer, spec.subjects),
        max_deliver=spec.max_deliver,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another configuration (an older deployment): bring it up to date.
        await js.update_stream(config)


async def ensure_topology(js: JetStreamContext, settings: BusSettings) -> KeyValue:
    """Create or update the streams, consumers and the session bucket; returns the bucket."""
    storage = StorageType.FILE if settings.storage == "file" else StorageType.MEMORY
    if settings.placement == "cloud":
        await _ensure_cloud_streams(js, settings, storage)
    else:
        await _ensure_site_streams(js, settings, storage)
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
    placed = PLACED[settings.placement]
    for name in CONSUMERS:
        if placed is not None and name not in placed:
            continue
        spec = consumer_spec(settings, name)
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


async def _ensure_cloud_streams(js: JetStreamContext, settings: BusSettings, storage: StorageType) -> None:
    """The hub's LRM queue, sourced from each edge's outbox (docs/sites.md)."""
    await _ensure_stream(
        js,
        StreamConfig(
            name=LRM_COMMAND_STREAM,
            retention=RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
            max_bytes=settings.max_bytes("commands"),
            max_msg_size=settings.max_message_bytes,
            sources=lrm_command_sources(settings.edge_sites),
        ),
    )


async def _ensure_site_streams(js: JetStreamContext, settings: BusSettings, storage: StorageType) -> None:
    """One site's streams; an edge's keep LRM commands in the outbox and file the cloud's answers as
    local events."""
    edge = settings.placement == "edge"
    if edge:
        await _ensure_stream(
            js,
            StreamConfig(
                name=LRM_OUTBOX_STREAM,
                subjects=[command_subject("lrm")],
                retention=RetentionPolicy.LIMITS,
                storage=storage,
                num_replicas=settings.replicas,
                duplicate_window=settings.duplicate_window_s,
                max_age=settings.event_max_age_s,
                max_bytes=settings.max_bytes("commands"),
                max_msg_size=settings.max_message_bytes,
                discard=DiscardPolicy.OLD,
            ),
        )
    await _ensure_stream(
        js,
        StreamConfig(
            name=COMMAND_STREAM,
            subjects=command_subjects(settings.placement, STREAMS[COMMAND_STREAM].subjects),
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
    extra, transform = site_event_transform(settings.site) if edge and settings.site else ([], None)
    await _ensure_stream(
        js,
        StreamConfig(
            name=EVENT_STREAM,
            subjects=[*STREAMS[EVENT_STREAM].subjects, *extra],
            subject_transform=transform,
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
