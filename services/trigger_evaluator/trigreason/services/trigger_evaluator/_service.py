"""The trigger-evaluator: the pure, stateless ``evaluate`` on SRM steps and judge scores."""

from __future__ import annotations

from trigreason.proto import ConsumerName, JudgeScored, JudgeStep, StepGenerated, TypedDecoder, Verdict
from trigreason.services.runtime import Ack, Bus, ConsumerBinding, Delivery, ServiceMetrics

from ._evaluator import evaluate
from .policies import PolicyRegistry

__all__ = ["TriggerEvaluator"]


class TriggerEvaluator:
    consumer: ConsumerName = "trigger-evaluator"

    def __init__(
        self, bus: Bus, metrics: ServiceMetrics | None = None, *, policies: PolicyRegistry | None = None
    ) -> None:
        self._bus = bus
        # The built-in policies and those named in TRIGREASON_POLICY_MODULES.
        self._policies = policies or PolicyRegistry.from_env()
        self._metrics = metrics or ServiceMetrics()
        self.decoder: TypedDecoder[StepGenerated | JudgeScored] = TypedDecoder(StepGenerated | JudgeScored)

    def bindings(self) -> tuple[ConsumerBinding, ...]:
        return (ConsumerBinding(self.consumer, self.decoder, self.handle),)

    async def aclose(self) -> None:
        return None

    async def handle(self, delivery: Delivery[StepGenerated | JudgeScored]) -> Ack:
        event = delivery.message
        with self._bus.span(
            "trigger-evaluator evaluate",
            attributes={"trigreason.session_id": event.session_id, "trigreason.step_index": event.step_index},
        ) as span:
            result = evaluate(event, self._policies)
            if isinstance(result, Verdict):
                span.set_attribute("trigreason.verdict", result.decision)
                span.set_attribute("trigreason.r_s", result.r_s)
                if result.reason:
                    span.set_attribute("trigreason.trigger", result.reason)
        if isinstance(result, JudgeStep):
            await self._bus.publish(result, msg_id=result.command_id)
        else:
            self._metrics.verdicts.labels(result.decision).inc()
            await self._bus.publish(result, msg_id=f"{result.candidate.command_id}.verdict")
        return "ack"
