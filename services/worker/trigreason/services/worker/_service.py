"""SRM and LRM workers: take a ``GenerateStep`` (or, on the LRM, a ``JudgeStep``), call the backend,
publish the result with an id derived from the command. Any number of replicas share one consumer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
import structlog
from nats.errors import MaxPayloadError
from opentelemetry.trace import SpanKind

from trigreason.proto import (
    BackendError,
    BackendLimits,
    ConsumerName,
    GenerateStep,
    JudgeScored,
    JudgeStep,
    Role,
    StepFailed,
    StepGenerated,
    TypedDecoder,
)
from trigreason.services.runtime import (
    Ack,
    Bus,
    ConsumerBinding,
    Delivery,
    ServiceMetrics,
    publish_backend_limits,
)

from ._results import judge_scored, step_failed, step_generated
from .backends import Backend, GenerationRequest

__all__ = ["Worker"]

_log = structlog.get_logger("trigreason.worker")


class Worker:
    def __init__(
        self,
        bus: Bus,
        role: Role,
        backend: Backend,
        *,
        clock: Callable[[], float] = time.time,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._bus = bus
        self._metrics = metrics or ServiceMetrics()
        self.role = role
        self.consumer: ConsumerName = "srm-worker" if role == "srm" else "lrm-worker"
        self._backend = backend
        self._clock = clock
        self._limits_task: asyncio.Task[BackendLimits | None] | None = None
        self.decoder: TypedDecoder[GenerateStep | JudgeStep] = (
            TypedDecoder(GenerateStep | JudgeStep) if role == "lrm" else TypedDecoder(GenerateStep)
        )

    def start_publishing_limits(self) -> None:
        """``publish_limits`` in the background: a slow or absent ``/info`` must not hold up the start."""
        self._limits_task = asyncio.create_task(self.publish_limits())

    async def publish_limits(self) -> BackendLimits | None:
        """Tell the bus what this worker's inference server accepts (TGI's ``GET /info``), so the gateway
        refuses a request beyond it up front; a server without ``/info`` (OpenAI-compatible, a pool of
        replicas) publishes nothing, and its own 4xx still fails the session with ``request_refused``."""
        info = getattr(self._backend, "info", None)
        if info is None:
            return None
        try:
            got: dict[str, object] = await info()
        except BackendError as exc:
            _log.warning("backend_limits_unknown", role=self.role, error=exc.message)
            return None

        def limit(name: str) -> int | None:
            value = got.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        limits = BackendLimits(
            role=self.role,
            max_top_n_tokens=limit("max_top_n_tokens"),
            max_input_tokens=limit("max_input_tokens"),
            max_total_tokens=limit("max_total_tokens"),
            max_stop_sequences=limit("max_stop_sequences"),
            backend=self._backend.name,
            at=self._clock(),
        )
        try:
            await publish_backend_limits(self._bus.js, self._bus.settings, limits)
        except (nats.errors.Error, TimeoutError) as exc:  # the servers still refuse what they refuse
            _log.warning("backend_limits_not_published", role=self.role, error=repr(exc))
            return None
        _log.info("backend_limits_published", **msgspec.structs.asdict(limits))
        return limits

    def bindings(self) -> tuple[ConsumerBinding, ...]:
        return (ConsumerBinding(self.consumer, self.decoder, self.handle),)

    async def aclose(self) -> None:
        """Close the backend's HTTP client (the worker owns its backend)."""
        if self._limits_task is not None:
            self._limits_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._limits_task
        await self._backend.aclose()

    async def handle(self, delivery: Delivery[GenerateStep | JudgeStep]) -> Ack:
        command = delivery.message
        # Keep the message ours while the backend works: long generations outlive the ack wait.
        heartbeat = asyncio.create_task(_keep_alive(delivery.keep_alive, self._bus.settings.ack_wait_s / 3))
        try:
            with self._bus.span(
                f"{self._backend.name} generate",
                kind=SpanKind.CLIENT,
                attributes={
                    "trigreason.session_id": command.session_id,
                    "trigreason.step_index": command.step_index,
                    "trigreason.role": self.role,
                    "trigreason.command": type(command).__name__,
                },
            ) as span:
                headers: dict[str, str] = {}
                self._bus.inject(headers)  # traceparent goes on to the inference server
                result: StepGenerated | JudgeScored | StepFailed
                try:
                    result = await self._call(command, headers)
                except BackendError as exc:
                    span.record_exception(exc)
                    self._metrics.backend_requests.labels(self.role, "error").inc()
                    if exc.retryable and delivery.delivered < self._bus.settings.max_deliver:
                        raise
                    result = step_failed(command, code=exc.code, message=exc.message, at=self._clock())
                if isinstance(result, StepGenerated | JudgeScored):
                    self._observe(result)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        try:
            await self._bus.publish(result, msg_id=f"{command.command_id}.out")
        except MaxPayloadError:
            # The backend's answer can never travel (it would fail the same on every retry): the step fails
            # at once, with a code that says why.
            await self._bus.publish(
                step_failed(
                    command,
                    code="result_too_large",
                    message=f"the backend's answer exceeds the bus's limit ({self._bus.nc.max_payload} B)",
                    at=self._clock(),
                ),
                msg_id=f"{command.command_id}.out",
            )
        return "ack"

    def _observe(self, result: StepGenerated | JudgeScored) -> None:
        m, exemplar = self._metrics, self._bus.exemplar()
        m.backend_requests.labels(self.role, "ok").inc()
        backend_s = result.timings.backend_s
        if isinstance(result, JudgeScored):
            kind = "score" if result.scored else "judge"
            m.step_latency.labels(self.role, kind).observe(backend_s, exemplar)
            return
        m.step_latency.labels(self.role, "generate").observe(backend_s, exemplar)
        if result.step.tokens > 0:
            m.time_per_output_token.labels(self.role).observe(backend_s / result.step.tokens, exemplar)

    async def _call(
        self, command: GenerateStep | JudgeStep, headers: dict[str, str]
    ) -> StepGenerated | JudgeScored:
        if isinstance(command, JudgeStep) and command.continuation:
            scored = await self._backend.score(
                command.prompt, command.continuation, headers=headers, affinity_key=command.session_id
            )
            return judge_scored(command, (), scored.timings, at=self._clock(), scored=scored.tokens)
        if isinstance(command, JudgeStep):
            judged = await self._backend.judge(
                command.prompt, top_n=command.top_n, headers=headers, affinity_key=command.session_id
            )
            return judge_scored(command, judged.top_logprobs, judged.timings, at=self._clock())
        gen = await self._backend.generate(
            GenerationRequest(
                prompt=command.prompt,
                max_new_tokens=command.max_new_tokens,
                stop=command.stop,
                temperature=command.temperature,
                top_p=command.top_p,
                seed=command.seed,
                headers=headers,
                affinity_key=command.session_id,  # a pool keeps the session on the replica holding its prefix
            )
        )
        return step_generated(command, gen.step, gen.timings, at=self._clock())


async def _keep_alive(tick: Callable[[], Awaitable[None]], every_s: float) -> None:
    while True:
        await asyncio.sleep(max(0.05, every_s))
        with contextlib.suppress(Exception):
            await tick()
