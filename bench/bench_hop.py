"""The cost of one hop on the bus, warm and after idle gaps, on both event loops.

One real service process (``trigreason serve trigger-evaluator``) on a real nats-server; the benchmark
publishes an SRM ``StepGenerated`` (40 tokens) the way a worker does and waits for the ``Verdict``. A hop =
the step seen on the bus -> the verdict seen on the bus, by one subscriber: JetStream delivery to the
service, decoding, the trigger policy, the verdict's publish. Messages go one at a time with an idle gap
between them (0, 5, 20, 50 ms), so the figure shows what a hop costs when messages flow back to back and
what it costs when the processes have gone idle in between, which is the situation of a session whose
steps arrive every few hundred milliseconds. Each configuration runs with ``TRIGREASON_EVENT_LOOP``
``asyncio`` and ``uvloop``, alternating, in one run.

    uv run --frozen python bench/bench_hop.py [--quick] [--messages 200] [--gaps-ms 0,5,20,50] [--tracing-sdk]

No target of its own: it explains the per-step overhead of ``bench_overhead.py`` (three hops per SRM
step). Writes bench/results/hop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import nats
from _harness import (
    Processes,
    Status,
    console,
    percentiles,
    run_benchmark,
    service_env,
    session_params,
    start_service,
)
from nats.aio.msg import Msg
from rich.table import Table

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    GeneratedStep,
    StepGenerated,
    TriggerContext,
    encode,
    event_filter,
    subject_for,
)
from trigreason.services.runtime import BusSettings, ensure_topology

NAME = "hop"
LOOPS = ("asyncio", "uvloop")


def step(i: int, tag: str) -> StepGenerated:
    tokens = 40
    return StepGenerated(
        session_id=f"{tag}-{i}",
        command_id=f"{tag}-{i}.c3",
        step_index=3,
        role="srm",
        step=GeneratedStep(
            text="We add the two amounts: 3 + 4 = 7 apples in the basket now.",
            token_ids=tuple(range(tokens)),
            token_texts=tuple("t" for _ in range(tokens)),
            token_logprobs=tuple(-0.01 * (k % 7) for k in range(tokens)),
        ),
        context=TriggerContext(params=session_params(priming_steps=0)),
    )


async def measure_config(nc: Any, js: Any, tag: str, messages: int, gap_s: float) -> list[float]:
    seen: dict[str, float] = {}
    verdicts: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        now = time.perf_counter()
        parts = msg.subject.split(".")
        if not parts[2].startswith(f"{tag}-"):
            return
        seen[f"{parts[2]}.{parts[3]}"] = now
        if parts[3] == "verdict":
            verdicts.put_nowait(parts[2])

    sub = await nc.subscribe(event_filter("*"), cb=on_message)
    hops: list[float] = []
    with Status(f"{tag}", messages) as status:
        for i in range(messages):
            message = step(i, tag)
            await js.publish(
                subject_for(message), encode(message), headers={"Nats-Msg-Id": f"{message.command_id}.out"}
            )
            sid = await asyncio.wait_for(verdicts.get(), 10.0)
            hops.append(seen[f"{sid}.verdict"] - seen[f"{sid}.srm_step"])
            status.update(i + 1)
            if gap_s:
                await asyncio.sleep(gap_s)
    await sub.unsubscribe()
    return hops


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    gaps = [float(g) for g in args.gaps_ms.split(",")]
    configs: dict[str, dict[str, Any]] = {}
    async with LocalNatsServer() as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_topology(js, BusSettings(nats_url=server.url))
        for loop_kind in LOOPS:
            with Processes() as procs:
                env = {**service_env(server.url), "TRIGREASON_EVENT_LOOP": loop_kind}
                if args.tracing_sdk:
                    env.pop("OTEL_SDK_DISABLED")  # the default set-up: the SDK on, no exporter
                start_service(procs, "trigger-evaluator", "trigger-evaluator", env)
                await procs.wait_log(["trigger-evaluator"], "consuming")
                await measure_config(nc, js, f"warmup{loop_kind}", 20, 0.0)
                for gap in gaps:
                    tag = f"{loop_kind}g{gap:g}".replace(".", "_")
                    hops = await measure_config(nc, js, tag, args.messages, gap / 1000.0)
                    configs[f"{loop_kind} gap {gap:g} ms"] = {
                        "event_loop": loop_kind,
                        "gap_ms": gap,
                        "hop_ms": percentiles(hops, 1000.0),
                    }
        await nc.close()
    return {
        "settings": {
            "messages": args.messages,
            "gaps_ms": gaps,
            "loops": list(LOOPS),
            "tracing_sdk": args.tracing_sdk,
        },
        "configs": configs,
        "uvloop_over_asyncio_p50": {
            f"{gap:g}": configs[f"uvloop gap {gap:g} ms"]["hop_ms"]["p50"]
            / configs[f"asyncio gap {gap:g} ms"]["hop_ms"]["p50"]
            for gap in gaps
        },
    }


def report(doc: dict[str, Any]) -> None:
    table = Table(title="One hop (step seen -> verdict seen) through a trigger-evaluator process, ms")
    for col in ("event loop", "idle gap (ms)", "p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for cfg in doc["configs"].values():
        h = cfg["hop_ms"]
        table.add_row(
            cfg["event_loop"], f"{cfg['gap_ms']:g}", f"{h['p50']:.3f}", f"{h['p90']:.3f}", f"{h['p99']:.3f}"
        )
    console.print(table)
    ratios = ", ".join(f"gap {g} ms: {r:.2f}" for g, r in doc["uvloop_over_asyncio_p50"].items())
    console.print(f"uvloop / asyncio hop p50: {ratios}")
    gaps = doc["settings"]["gaps_ms"]
    warm = doc["configs"][f"uvloop gap {gaps[0]:g} ms"]["hop_ms"]["p50"]
    cold = doc["configs"][f"uvloop gap {gaps[-1]:g} ms"]["hop_ms"]["p50"]
    console.print(f"after a {gaps[-1]:g} ms idle gap a hop takes {cold / warm:.1f}x as long as back to back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 messages per configuration")
    parser.add_argument("--messages", type=int, default=None, help="messages per configuration (200)")
    parser.add_argument(
        "--tracing-sdk", action="store_true", help="OpenTelemetry SDK on, no exporter (the services default)"
    )
    parser.add_argument("--gaps-ms", default="0,5,20,50", help="idle gaps between messages (0,5,20,50)")
    args = parser.parse_args()
    args.messages = args.messages or (60 if args.quick else 200)
    run_benchmark(
        f"{NAME}-tracing-sdk" if args.tracing_sdk else NAME, measure, report, args, measured=measured
    )


def measured(doc: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, cfg in doc["configs"].items():
        out[f"{label}: hops"] = cfg["hop_ms"]["n"]
        out[f"{label}: hop p50"] = cfg["hop_ms"]["p50"]
    return out


if __name__ == "__main__":
    main()
