"""The WAN emulator: a TCP proxy with round-trip delay, jitter, a bandwidth cap and partitions, usable
in-process (``WanEmulator``) or as ``trigreason wan``; see docs/wan.md."""

from ._admin import start_admin
from ._link import LinkState, PartitionMode, WanSettings, depart_at, one_way_delay_s
from ._proxy import WanEmulator, WanRoute, WanStats

__all__ = [
    "LinkState",
    "PartitionMode",
    "WanEmulator",
    "WanRoute",
    "WanSettings",
    "WanStats",
    "depart_at",
    "one_way_delay_s",
    "start_admin",
]
