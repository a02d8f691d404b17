"""Which replica takes a session's step: a pure core, with no clock, no I/O and no randomness of its own.

Rendezvous (highest-random-weight) hashing ranks the replicas for each session id, the same in every
worker process, so consecutive steps of a session land on the replica whose prefix cache holds them
without sticky consumers. A replica is passed over, in that session's order, while it is ejected
(failing), overloaded (it answered 429) or saturated: bounded load (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", 2017) caps each replica at ``load_factor`` x the mean number of
steps in flight. A session returns to its first replica as soon as that one is fine again, because the
order never changes while the replica set does not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Choice",
    "FailureKind",
    "RerouteReason",
    "Router",
    "RouterSettings",
    "RoutingMode",
    "rendezvous_order",
]

RoutingMode = Literal["affinity", "round-robin"]
# Why a step did not go to its session's first replica.
RerouteReason = Literal["ejected", "overloaded", "saturated", "failed"]
FailureKind = Literal["error", "overloaded"]


def _weight(replica: str, key: str) -> int:
    # blake2b, not hash(): the same order in every process whatever PYTHONHASHSEED says.
    digest = hashlib.blake2b(f"{replica}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(key: str, replicas: Iterable[str]) -> list[str]:
    """``replicas`` ranked for ``key``, best first. Adding or removing a replica moves only the keys that
    rank it first (about 1/n of them); every other key keeps its order."""
    return sorted(replicas, key=lambda r: (_weight(r, key), r), reverse=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class RouterSettings:
    mode: RoutingMode = "affinity"
    load_factor: float = 1.25  # a replica takes more while its in-flight steps < load_factor x the mean
    eject_after: int = 2  # consecutive failed calls that eject a replica
    eject_s: float = 5.0  # the first ejection; doubles on each failed probe, up to eject_max_s
    eject_max_s: float = 60.0
    overload_s: float = 1.0  # pause after a 429 without Retry-After

    def __post_init__(self) -> None:
        if self.mode not in ("affinity", "round-robin"):
            raise ValueError(f"routing mode must be affinity or round-robin, got {self.mode!r}")
        if self.load_factor < 1.0:
            raise ValueError(f"load_factor must be >= 1, got {self.load_factor}")
        if self.eject_after < 1:
            raise ValueError(f"eject_after must be >= 1, got {self.eject_after}")
        if self.eject_s <= 0 or self.eject_max_s < self.eject_s:
            raise ValueError("eject_s must be > 0 and <= eject_max_s")
        if self.overload_s < 0:
            raise ValueError(f"overload_s must be >= 0, got {self.overload_s}")


@dataclass(slots=True)
class _Replica:
    in_flight: int = 0
    failures: int = 0  # consecutive
    ejected_until: float | None = None  # set while ejected; readmitted by a good probe or a good call
    ejections: int = 0  # consecutive, for the backoff
    overloaded_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Choice:
    replica: str
    first: str  # the session's first replica (for round-robin: the replica chosen)
    reason: RerouteReason | None  # why ``first`` was passed over; None when replica == first


@dataclass(slots=True)
class Router:
    """Replica states and the choice of a replica for each call. Every method takes the time it is
    called at; the caller owns the clock."""

    settings: RouterSettings = field(default_factory=RouterSettings)
    _replicas: dict[str, _Replica] = field(default_factory=dict)
    _next: int = 0  # round-robin position

    @property
    def replicas(self) -> list[str]:
        return list(self._replicas)

    def set_replicas(self, replicas: Sequence[str]) -> tuple[list[str], list[str]]:
        """Make the set ``replicas`` (states of the ones kept survive); returns (added, removed)."""
        wanted = list(dict.fromkeys(replicas))
        removed = [r for r in self._replicas if r not in wanted]
        added = [r for r in wanted if r not in self._replicas]
        for r in removed:
            del self._replicas[r]
        for r in added:
            self._replicas[r] = _Replica()
        return added, removed

    def available(self, replica: str, now: float) -> bool:
        state = self._replicas[replica]
        return not self._ejected(state, now) and state.overloaded_until <= now

    def ejected(self, replica: str, now: float) -> bool:
        return self._ejected(self._replicas[replica], now)

    def in_flight(self, replica: str) -> int:
        return self._replicas[replica].in_flight

    def choose(self, key: str | None, now: float, *, exclude: Iterable[str] = ()) -> Choice:
        """The replica for the next call of session ``key`` (None: no session, as round-robin), skipping
        ``exclude`` (the replicas that already failed this call) unless nothing else is left."""
        if not self._replicas:
            raise LookupError("no replicas")
        skip = set(exclude)
        if self.settings.mode == "round-robin" or key is None:
            return self._round_robin(now, skip)
        order = rendezvous_order(key, self._replicas)
        first = order[0]
        usable = [r for r in order if r not in skip and self.available(r, now)]
        if not usable:
            # Everything is failing: still try, in the session's order, the replica least recently known
            # bad (not yet failed in this call if possible): refusing would only fail the step sooner.
            left = [r for r in order if r not in skip] or order
            pick = left[0]
            return Choice(pick, first, None if pick == first else self._why(first, now, skip))
        bound = self._bound(len(usable))
        for r in usable:
            if self._replicas[r].in_flight < bound:
                return Choice(r, first, None if r == first else self._why(first, now, skip))
        pick = min(usable, key=lambda r: self._replicas[r].in_flight)  # all at the bound: least loaded
        return Choice(pick, first, None if pick == first else self._why(first, now, skip))

    def started(self, replica: str) -> None:
        if replica in self._replicas:
            self._replicas[replica].in_flight += 1

    def finished(self, replica: str, now: float, failure: FailureKind | None = None, *,
                 retry_after_s: float | None = None) -> bool:  # fmt: skip
        """Record the end of a call; returns True when this failure ejected the replica."""
        state = self._replicas.get(replica)
        if state is None:  # removed from the set meanwhile
            return False
        state.in_flight = max(0, state.in_flight - 1)
        if failure is None:
            self._readmit(state)
            return False
        if failure == "overloaded":
            state.overloaded_until = now + (
                self.settings.overload_s if retry_after_s is None else retry_after_s
            )
            return False
        state.failures += 1
        if state.failures >= self.settings.eject_after and not self._ejected(state, now):
            self._eject(state, now)
            return True
        return False

    def probed(self, replica: str, now: float, *, ok: bool) -> bool | None:
        """Record an active health probe. Returns True when it readmitted the replica, False when it
        ejected it (or kept it out longer), None when nothing changed."""
        state = self._replicas.get(replica)
        if state is None:
            return None
        if ok:  # alive; a 429's pause stands (the probe says nothing of the queue)
            if state.ejected_until is None:
                return None
            state.failures = 0
            state.ejections = 0
            state.ejected_until = None
            return True
        # A failed probe ejects at once: nothing was answered, so no step is at stake.
        self._eject(state, now)
        return False

    # -- internals ---------------------------------------------------------------------------------

    def _bound(self, n_usable: int) -> int:
        total = sum(s.in_flight for s in self._replicas.values())
        return max(1, math.ceil(self.settings.load_factor * (total + 1) / n_usable))

    def _why(self, replica: str, now: float, skip: set[str]) -> RerouteReason:
        state = self._replicas[replica]
        if replica in skip:
            return "failed"
        if self._ejected(state, now):
            return "ejected"
        if state.overloaded_until > now:
            return "overloaded"
        return "saturated"

    def _round_robin(self, now: float, skip: set[str]) -> Choice:
        names = list(self._replicas)
        n = len(names)
        for i in range(n):
            r = names[(self._next + i) % n]
            if r not in skip and self.available(r, now):
                self._next = (self._next + i + 1) % n
                return Choice(r, r, None)
        r = next((x for x in names if x not in skip), names[self._next % n])
        self._next = (self._next + 1) % n
        return Choice(r, r, None)

    @staticmethod
    def _ejected(state: _Replica, now: float) -> bool:
        # An ejection that has run out lets calls through again (half-open); a probe or a good call
        # readmits the replica for good, a failure ejects it again for longer.
        return state.ejected_until is not None and state.ejected_until > now

    def _eject(self, state: _Replica, now: float) -> None:
        wait = min(self.settings.eject_max_s, self.settings.eject_s * 2**state.ejections)
        state.ejected_until = now + wait
        state.ejections += 1
        state.failures = 0

    @staticmethod
    def _readmit(state: _Replica) -> None:
        state.failures = 0
        state.ejections = 0
        state.ejected_until = None
        state.overloaded_until = 0.0
