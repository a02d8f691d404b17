"""The pure core of the WAN emulator: when does a chunk of bytes leave the link?

No I/O, no clock and no random numbers of its own: the caller passes the time a chunk arrived and a uniform
draw for its jitter, and gets back the time it must be delivered. One ``LinkState`` per direction of the WAN
(shared by every connection going that way, as a real access link is); one ``last_departure`` per
connection and direction (so a stream's bytes never overtake each other, while different connections never
wait for one another's delay).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["LinkState", "PartitionMode", "WanSettings", "depart_at", "one_way_delay_s"]

PartitionMode = Literal["blackhole", "reset"]


class WanSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the emulated WAN does. Read from ``TRIGREASON_WAN_*``; every field can change at run time.

    ``rtt_ms`` is the round trip: each direction adds half of it. ``jitter_ms`` is the width of the spread
    of each chunk's one-way delay (uniform in ``±jitter_ms / 2``, so round trips vary by up to
    ``±jitter_ms``, like netem's uniform jitter); a chunk never overtakes an earlier one of its stream.
    ``mbit`` caps each direction's bandwidth (megabits per second, shared by all connections; 0 is no cap).
    ``partition_mode``: ``blackhole`` (the default) holds all traffic until the partition heals, as a real
    WAN outage does (packets vanish, nothing tells the ends), so clients must notice by their own timeouts
    and keep-alives; ``reset`` closes every connection with a TCP reset and resets new ones at once.
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    mbit: float = 0.0
    partitioned: bool = False
    partition_mode: PartitionMode = "blackhole"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "jitter_ms", "mbit"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.jitter_ms > self.rtt_ms:
            raise ValueError(f"jitter_ms ({self.jitter_ms}) must not exceed rtt_ms ({self.rtt_ms})")


class LinkState(msgspec.Struct, frozen=True):
    """One direction of the link: until when its bandwidth is taken by chunks already sent."""

    busy_until: float = 0.0


def one_way_delay_s(settings: WanSettings, draw: float) -> float:
    """Half the round trip plus this chunk's jitter; ``draw`` is uniform in [0, 1)."""
    return max(0.0, (settings.rtt_ms + settings.jitter_ms * (draw - 0.5)) / 2000.0)


def depart_at(
    link: LinkState,
    settings: WanSettings,
    *,
    now: float,
    nbytes: int,
    draw: float,
    last_departure: float,
) -> tuple[LinkState, float]:
    """The link after ``nbytes`` arriving at ``now`` were put on the wire, and when they reach the far end.

    With a bandwidth cap the chunk waits for the chunks before it to be serialised, then takes
    ``nbytes * 8 / bandwidth`` itself; it then travels for the one-way delay (with its jitter). It never
    leaves before the previous chunk of its own stream (``last_departure``).
    """
    start = now
    if settings.mbit > 0:
        start = max(now, link.busy_until) + nbytes * 8 / (settings.mbit * 1e6)
        link = LinkState(busy_until=start)
    return link, max(start + one_way_delay_s(settings, draw), last_departure)
