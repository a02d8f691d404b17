"""Several replicas of one role's inference server behind the one ``Backend`` interface.

A session's steps go to the replica that holds its prefix (``_routing``); a step whose replica fails is
sent on to the next one in that session's order at once. Replicas come from a URL list or a DNS name
resolved again every ``resolve_interval_s`` (a Kubernetes headless Service: one address per ready pod).
Health is passive (failed calls eject a replica) and active (``GET /health`` every
``probe_interval_s`` readmits it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import structlog
from opentelemetry import trace
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trigreason.proto import BackendError, BackendTimings, ConfigError

from ._detect import detect_protocol
from ._http import BackendSettings, HttpClient
from ._interface import Backend, Generation, GenerationRequest, JudgeResult, ScoreResult
from ._routing import Router, RouterSettings, rendezvous_order

__all__ = ["PoolStats", "ReplicaPool", "ReplicaSource", "ReplicaStats", "parse_backend_url"]

_log = structlog.get_logger("trigreason.backends")
_T = TypeVar("_T", Generation, JudgeResult, ScoreResult)
Resolver = Callable[[str, int], Awaitable[list[str]]]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplicaStats:
    steps: int
    prompt_tokens: int
    cached_prompt_tokens: int
    failures: int
    ejections: int
    up: bool  # in the set and not ejected
    # Time inside the replica's calls and the tokens they generated (a judge call counts one).
    backend_s: float = 0.0
    output_tokens: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolStats:
    """What a pool did since it started."""

    replicas: dict[str, ReplicaStats]
    affinity_hits: int  # steps served by their session's first replica
    affinity_misses: int
    reroutes: dict[str, int]  # steps sent past their session's first replica, by reason

    @property
    def affinity_hit_ratio(self) -> float | None:
        n = self.affinity_hits + self.affinity_misses
        return self.affinity_hits / n if n else None


@dataclass(frozen=True, slots=True)
class ReplicaSource:
    """Where a role's replicas are: fixed ``urls``, or ``dns`` = (scheme, host, port, path) resolved to one
    replica per address."""

    urls: tuple[str, ...] = ()
    dns: tuple[str, str, int, str] | None = None

    @property
    def single(self) -> str | None:
        """The URL when this is one fixed server (no pool needed)."""
        return self.urls[0] if self.dns is None and len(self.urls) == 1 else None

    def describe(self) -> str:
        if self.dns is not None:
            scheme, host, port, path = self.dns
            return f"dns+{scheme}://{host}:{port}{path}"
        return ",".join(self.urls)


def parse_backend_url(spec: str) -> ReplicaSource:
    """``http://a:8080`` (one server), ``http://a:8080,http://b:8080`` (one replica each) or
    ``dns+http://name:8080`` (every address ``name`` resolves to, at that port)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError("backend URL is empty")
    if parts[0].startswith("dns+"):
        if len(parts) > 1:
            raise ConfigError(
                f"a dns+ URL names every replica itself; give it alone, not in a list: {spec!r}"
            )
        split = urlsplit(parts[0].removeprefix("dns+"))
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(f"use dns+http://HOST:PORT, got {parts[0]!r}")
        port = split.port or (443 if split.scheme == "https" else 80)
        return ReplicaSource(dns=(split.scheme, split.hostname, port, split.path.rstrip("/")))
    for url in parts:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"backend URL must start with http://, https:// or dns+http://, got {url!r}")
    return ReplicaSource(urls=tuple(u.rstrip("/") for u in dict.fromkeys(parts)))


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _replica_url(scheme: str, address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address  # IPv6
    return f"{scheme}://{host}:{port}{path}"


class ReplicaPool:
    """One role's replicas as one ``Backend``. Build it with ``make_backend``; close it with ``aclose``."""

    def __init__(
        self,
        source: ReplicaSource,
        *,
        make_adapter: Callable[[str, Literal["tgi", "openai"], BackendSettings, str | None], Backend],
        protocol: Literal["auto", "tgi", "openai"] = "auto",
        settings: BackendSettings,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = _resolve,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name or f"pool:{source.describe()}"
        self.source = source
        self.settings = settings
        self.protocol = protocol
        self._make_adapter = make_adapter
        # Each replica makes one attempt per call: the pool's own loop retries, on the next replica.
        self._replica_settings = dataclasses.replace(settings, max_attempts=1)
        self._clock = clock
        self._resolver = resolver
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.router = Router(
            RouterSettings(
                mode=settings.routing,
                load_factor=settings.load_factor,
                eject_after=settings.eject_after,
                eject_s=settings.eject_s,
                eject_max_s=max(60.0, settings.eject_s),
            )
        )
        self._backends: dict[str, Backend] = {}
        self._probes: dict[str, HttpClient] = {}
        self._retired: list[tuple[float, _Closable]] = []  # removed replicas, closed once their calls end
        self._tasks: list[asyncio.Task[None]] = []
        # What the metrics and ``stats()`` report.
        self._steps: Counter[str] = Counter()
        self._prompt_tokens: Counter[str] = Counter()
        self._cached_tokens: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._ejections: Counter[str] = Counter()
        self._reroutes: Counter[str] = Counter()
        self._affinity: Counter[Literal["hit", "miss"]] = Counter()
        self._backend_s: defaultdict[str, float] = defaultdict(float)
        self._output_tokens: Counter[str] = Counter()

    # -- life --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the replicas (resolving the name once) and, for ``auto``, the protocol they speak; then keep
        probing and re-resolving them in the background. Raises ``BackendError`` (retryable) when no
        replica answers the protocol question, as one unreachable server would."""
        if self.source.dns is not None:
            await self._refresh()
        else:
            self._set(list(self.source.urls))
        if self.protocol == "auto":
            self.protocol = await self._detect()
        if self.source.dns is not None:
            self._tasks.append(
                asyncio.create_task(self._every(self.settings.resolve_interval_s, self._refresh))
            )
        self._tasks.append(asyncio.create_task(self._every(self.settings.probe_interval_s, self._probe_all)))

    async def _detect(self) -> Literal["tgi", "openai"]:
        last: BackendError | None = None
        for url in self.router.replicas:
            try:
                return await detect_protocol(url, settings=self.settings)
            except BackendError as exc:
                if not exc.retryable:
                    raise
                last = exc
        raise last or BackendError(
            f"{self.name}: {self.source.describe()} has no replicas",
            code="backend_unavailable",
            retryable=True,
        )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for backend in [*self._backends.values(), *(b for _, b in self._retired)]:
            await backend.aclose()
        for probe in self._probes.values():
            await probe.aclose()
        self._backends.clear()
        self._retired.clear()
        self._probes.clear()

    @property
    def replicas(self) -> list[str]:
        return self.router.replicas

    # -- the Backend interface ---------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._route(request.affinity_key, lambda b: b.generate(request))

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> JudgeResult:
        return await self._route(affinity_key, lambda b: b.judge(prompt, top_n=top_n, headers=headers))

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> ScoreResult:
        # Routed by the session like its steps: the replica holding the session's prefix reads the step.
        return await self._route(affinity_key, lambda b: b.score(prompt, continuation, headers=headers))

    async def _route(self, key: str | None, call: Callable[[Backend], Awaitable[_T]]) -> _T:
        await self._wait_for_replicas()
        failed: set[str] = set()
        last: BackendError | None = None
        rounds = 0
        attempts = self.settings.max_attempts + len(self.router.replicas) - 1
        for _ in range(attempts):
            choice = self.router.choose(key, self._clock(), exclude=failed)
            if choice.reason is not None:
                self._reroutes[choice.reason] += 1
            replica = choice.replica
            backend = self._backend(replica)
            self.router.started(replica)
            try:
                result = await call(backend)
            except BackendError as exc:
                if not exc.retryable:  # the server answered: it is up, and another would answer the same
                    self.router.finished(replica, self._clock())
                    raise
                kind: Literal["error", "overloaded"] = (
                    "overloaded" if exc.code == "backend_overloaded" else "error"
                )
                self._failures[replica] += 1
                if self.router.finished(replica, self._clock(), kind):
                    self._ejections[replica] += 1
                    _log.warning("replica ejected", pool=self.name, replica=replica, error=exc.message)
                failed.add(replica)
                last = exc
                if failed >= set(self.router.replicas):  # every replica failed this step: back off, again
                    failed.clear()
                    rounds += 1
                    cap = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (rounds - 1))
                    await self._sleep(self._rng.uniform(0.0, cap))
                continue
            except BaseException:
                self.router.finished(replica, self._clock())  # cancelled: says nothing of the replica
                raise
            self.router.finished(replica, self._clock())
            step = getattr(result, "step", None)  # a Generation; a judge or scoring call generates one token
            self._served(key, replica, result.timings, step.tokens if step is not None else 1)
            return result
        assert last is not None
        raise BackendError(
            f"{self.name}: no replica could serve the step ({attempts} attempts): {last.message}",
            code=last.code,
            retryable=True,
        )

    async def _wait_for_replicas(self) -> None:
        # A headless Service with no ready pod yet resolves to nothing: wait a little, then fail retryably
        # (the bus redelivers the step).
        waited = 0.0
        while not self.router.replicas:
            if waited >= self.settings.connect_timeout_s:
                raise BackendError(
                    f"{self.name}: {self.source.describe()} has no replicas",
                    code="backend_unavailable",
                    retryable=True,
                )
            await self._sleep(0.25)
            waited += 0.25
            if self.source.dns is not None and not self._tasks:
                await self._refresh()

    def _served(self, key: str | None, replica: str, timings: BackendTimings, output_tokens: int) -> None:
        self._steps[replica] += 1
        self._backend_s[replica] += timings.backend_s
        self._output_tokens[replica] += output_tokens
        self._prompt_tokens[replica] += timings.prompt_tokens
        self._cached_tokens[replica] += timings.cached_prompt_tokens
        if key is not None:
            home = rendezvous_order(key, self.router.replicas)[0]
            self._affinity["hit" if replica == home else "miss"] += 1
        trace.get_current_span().set_attribute("trigreason.replica", replica)

    # -- replicas ------------------------------------------------------------------------------------

    def _backend(self, url: str) -> Backend:
        backend = self._backends.get(url)
        if backend is None:
            assert self.protocol != "auto", "start() first"
            backend = self._make_adapter(url, self.protocol, self._replica_settings, f"{self.name}/{url}")
            self._backends[url] = backend
        return backend

    def _set(self, urls: list[str]) -> None:
        added, removed = self.router.set_replicas(urls)
        now = self._clock()
        for url in removed:
            backend = self._backends.pop(url, None)
            if backend is not None:
                self._retired.append((now, backend))
            probe = self._probes.pop(url, None)
            if probe is not None:
                self._retired.append((now, _ProbeCloser(probe)))
        if added or removed:
            _log.info(
                "replicas changed", pool=self.name, added=added, removed=removed, replicas=self.replicas
            )

    async def _close_retired(self) -> None:
        # A removed replica's calls may still run; by the per-attempt timeout they have all ended.
        now = self._clock()
        done = [b for t, b in self._retired if now - t > self.settings.timeout_s]
        self._retired = [(t, b) for t, b in self._retired if now - t <= self.settings.timeout_s]
        for backend in done:
            await backend.aclose()

    async def _refresh(self) -> None:
        assert self.source.dns is not None
        scheme, host, port, path = self.source.dns
        try:
            addresses = await self._resolver(host, port)
        except OSError as exc:  # keep what we had: a DNS hiccup is not every replica gone
            _log.warning("cannot resolve replicas", pool=self.name, host=host, error=str(exc))
            return
        if addresses:
            self._set([_replica_url(scheme, a, port, path) for a in addresses])
        elif self.router.replicas:
            _log.warning("name resolves to no address; keeping the replicas known", pool=self.name, host=host)
        await self._close_retired()

    async def _probe_all(self) -> None:
        urls = self.router.replicas
        results = await asyncio.gather(*(self._probe(url) for url in urls), return_exceptions=True)
        for url, ok in zip(urls, results, strict=True):
            changed = self.router.probed(url, self._clock(), ok=ok is True)
            if changed is True:
                _log.info("replica readmitted", pool=self.name, replica=url)
            elif changed is False and ok is not True:
                self._ejections[url] += 1
                _log.warning("replica failed its probe", pool=self.name, replica=url)

    async def _probe(self, url: str) -> bool:
        probe = self._probes.get(url)
        if probe is None:
            settings = dataclasses.replace(self.settings, max_attempts=1)
            probe = self._probes[url] = HttpClient(url, settings, name=f"probe:{url}")
        for path in ("/health", "/v1/models"):  # TGI, vLLM, SGLang, llama.cpp: /health; else the models list
            try:
                await probe.request("GET", path, timeout_s=self.settings.probe_timeout_s, max_attempts=1)
                return True
            except BackendError as exc:
                if exc.retryable:
                    return False  # unreachable, timed out or 5xx
        return False

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception as exc:  # a background chore never takes the worker down
                _log.warning("replica pool chore failed", pool=self.name, error=str(exc))

    # -- what it did ---------------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """Counts since start."""
        now = self._clock()
        known = sorted(set(self._steps) | set(self.router.replicas))
        return PoolStats(
            replicas={
                url: ReplicaStats(
                    steps=self._steps[url],
                    prompt_tokens=self._prompt_tokens[url],
                    cached_prompt_tokens=self._cached_tokens[url],
                    failures=self._failures[url],
                    ejections=self._ejections[url],
                    backend_s=self._backend_s[url],
                    output_tokens=self._output_tokens[url],
                    up=url in self.router.replicas and not self.router.ejected(url, now),
                )
                for url in known
            },
            affinity_hits=self._affinity["hit"],
            affinity_misses=self._affinity["miss"],
            reroutes=dict(self._reroutes),
        )

    def collector(self) -> Collector:
        """A Prometheus collector of this pool's counts, to register on a service's registry."""
        return _PoolCollector(self)


class _ProbeCloser:
    """A retired probe client, closed with the retired backends."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.aclose()


class _PoolCollector(Collector):
    def __init__(self, pool: ReplicaPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        stats = self._pool.stats()
        pool = self._pool.name
        per_replica: tuple[tuple[str, str, str], ...] = (
            ("steps", "trigreason_backend_steps", "steps served, per replica"),
            ("prompt_tokens", "trigreason_backend_prompt_tokens", "prompt tokens sent, per replica"),
            ("cached_prompt_tokens", "trigreason_backend_cached_prompt_tokens",
             "prompt tokens the replica had cached"),
            ("failures", "trigreason_backend_failures", "failed calls, per replica"),
            ("ejections", "trigreason_backend_ejections", "times a replica was ejected"),
            ("backend_s", "trigreason_backend_seconds", "time inside calls, per replica"),
            ("output_tokens", "trigreason_backend_output_tokens", "tokens generated, per replica"),
        )  # fmt: skip
        for field, metric, doc in per_replica:
            family = CounterMetricFamily(metric, doc, labels=["pool", "replica"])
            for url, counts in stats.replicas.items():
                family.add_metric([pool, url], float(getattr(counts, field)))
            yield family
        up = GaugeMetricFamily(
            "trigreason_backend_replica_up", "1 while a replica takes steps", labels=["pool", "replica"]
        )
        for url, counts in stats.replicas.items():
            up.add_metric([pool, url], 1.0 if counts.up else 0.0)
        yield up
        in_flight = GaugeMetricFamily(
            "trigreason_backend_in_flight", "calls open on a replica (its queue, seen from this worker)",
            labels=["pool", "replica"],
        )  # fmt: skip
        for url in self._pool.router.replicas:
            in_flight.add_metric([pool, url], float(self._pool.router.in_flight(url)))
        yield in_flight
        affinity = CounterMetricFamily(
            "trigreason_backend_affinity", "steps served by their session's first replica (hit) or not",
            labels=["pool", "result"],
        )  # fmt: skip
        affinity.add_metric([pool, "hit"], float(stats.affinity_hits))
        affinity.add_metric([pool, "miss"], float(stats.affinity_misses))
        yield affinity
        ratio = GaugeMetricFamily(
            "trigreason_backend_affinity_hit_ratio", "affinity hits over steps served", labels=["pool"]
        )
        ratio.add_metric([pool], stats.affinity_hit_ratio or 0.0)
        yield ratio
        reroutes = CounterMetricFamily(
            "trigreason_backend_reroutes", "steps sent past their session's first replica, by reason",
            labels=["pool", "reason"],
        )  # fmt: skip
        for reason in ("ejected", "overloaded", "saturated", "failed"):
            reroutes.add_metric([pool, reason], float(stats.reroutes.get(reason, 0)))
        yield reroutes
