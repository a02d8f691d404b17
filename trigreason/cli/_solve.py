"""``trigreason solve`` and ``trigreason up``: the cluster from the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import nats
import typer
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.markup import escape

from trigreason.edge_cloud import EdgeCloud, EdgeCloudSpec, edge_cloud_stack
from trigreason.eval import grade, numeric_value
from trigreason.host import ServiceSettings
from trigreason.profiles import load_profile
from trigreason.proto import (
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    StepCommitted,
    TrigReasonError,
    decode_message,
    encode,
    event_subject,
)
from trigreason.services.runtime import (
    configure_logging,
    configure_tracing,
    on_stop_signals,
    run_event_loop,
    shutdown_tracing,
)
from trigreason.stack import RunningStack, StackSpec, embedded_stack

from ._app import app
from ._params import session_params
from ._policy_flags import policy_option, with_policy_flags

__all__ = ["graded"]

_D = SessionParams()
_S = TypeVar("_S")  # a running stack, either topology
Topology = Literal["single", "edge-cloud"]


async def _solve_on_bus(
    nats_url: str, question: str, params: SessionParams, *, show: Console | None
) -> tuple[str, list[StepCommitted], SessionFinished | SessionFailed]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        session_id = uuid.uuid4().hex
        sub = await js.subscribe(event_subject(session_id, ">"), ordered_consumer=True)
        await js.publish(
            event_subject(session_id, "requested"),
            encode(
                SessionRequested(
                    session_id=session_id, question=question, params=params, requested_at=time.time()
                )
            ),
            headers={"Nats-Msg-Id": f"{session_id}.requested"},
        )
        steps: list[StepCommitted] = []
        srm = lrm = 0
        status = show.status("waiting for the first step...") if show else None
        if status:
            status.start()
        try:
            async for msg in sub.messages:
                ev = decode_message(msg.data)
                if isinstance(ev, StepCommitted):
                    steps.append(ev)
                    srm += ev.tokens if ev.role == "srm" else 0
                    lrm += ev.tokens if ev.role == "lrm" else 0
                    if show:
                        ratio = srm / (srm + lrm) if srm + lrm else 0.0
                        colour = "green" if ev.role == "srm" else "magenta"
                        trig = f" {ev.trigger}" if ev.trigger else ""
                        show.print(
                            f"[bold {colour}]{ev.role.upper()}{trig}[/] step {ev.index} ({ev.tokens} tok, "
                            f"SRM ratio {ratio:.2f})\n{escape(ev.text)}\n"
                        )
                        if status:
                            status.update(f"step {ev.index + 1}...")
                elif isinstance(ev, SessionFinished | SessionFailed):
                    return session_id, steps, ev
        finally:
            if status:
                status.stop()
    finally:
        await nc.close()
    raise TrigReasonError("event stream ended before the session did")  # pragma: no cover


def graded(answer: str | None, expect: str) -> dict[str, Any]:
    """``expected`` and ``correct``: the answer graded against the reference as eval grades it (numbers as
    numbers, anything else with math-verify)."""
    kind = "numeric" if numeric_value(expect) is not None else "math"
    return {"expected": expect, "correct": grade(answer, expect, kind=kind)}


def _document(
    session_id: str, steps: list[StepCommitted], end: SessionFinished | SessionFailed
) -> dict[str, Any]:
    s = end.stats
    doc: dict[str, Any] = {
        "session_id": session_id,
        "answer": end.answer if isinstance(end, SessionFinished) else None,
        "end_reason": end.reason if isinstance(end, SessionFinished) else "failed",
        "steps": [
            {"index": c.index, "role": c.role, "text": c.text, "tokens": c.tokens, "trigger": c.trigger}
            for c in steps
        ],
        "stats": {
            "srm_tokens": s.srm_tokens,
            "lrm_tokens": s.lrm_tokens,
            "srm_wasted_tokens": s.srm_wasted_tokens,
            "srm_token_ratio": s.srm_token_ratio,
            "triggers": s.triggers,
            "lrm_calls": s.lrm_calls,
            "srm_calls": s.srm_calls,
            "wall_s": s.wall_s,
            "srm_backend_s": s.srm_backend_s,
            "lrm_backend_s": s.lrm_backend_s,
        },
    }
    if isinstance(end, SessionFailed):
        doc["error"] = {"code": end.code, "message": end.message}
    return doc


class _Interrupt:
    """SIGINT or SIGTERM cancels the command's task, once, so that what it started (the embedded stack) is
    torn down, within its own bounds, whether the command runs in the foreground or as a background job
    (SIGINT inherited ignored). Later signals while it tears down change nothing."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def install(self) -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_signal(sig: signal.Signals) -> None:
            if self.signal is None:
                self.signal = sig
                task.cancel()

        on_stop_signals(on_signal)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT).value


_Model = Annotated[str, typer.Option(help="srm, lrm, tiny, a GGUF path or hf://REPO/FILE")]


@app.command()
@with_policy_flags
def solve(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question to solve.")],
    policy: policy_option() = _D.policy,  # type: ignore[valid-type]
    max_tokens: Annotated[int, typer.Option(help="committed-token budget")] = _D.max_tokens,
    step_max_tokens: Annotated[int, typer.Option(help="per-step token cap")] = _D.step_max_tokens,
    temperature: float = _D.temperature,
    top_p: Annotated[float, typer.Option(help="nucleus sampling (used when temperature > 0)")] = _D.top_p,
    seed: int = _D.seed,
    srm_model: _Model = "srm",
    lrm_model: _Model = "lrm",
    srm_url: Annotated[str | None, typer.Option(help="existing SRM server [env: TRIGREASON_SRM_URL]")] = None,
    lrm_url: Annotated[str | None, typer.Option(help="existing LRM server [env: TRIGREASON_LRM_URL]")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="a running cluster's NATS [env: TRIGREASON_NATS_URL]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    profile: Annotated[
        str | None, typer.Option(help="parameters from a profile (name or path; see trigreason calibrate)")
    ] = None,
    expect: Annotated[
        str | None,
        typer.Option(help="the reference answer: graded as `trigreason eval` grades, shown right or wrong"),
    ] = None,
) -> None:
    """Solve one question; with nothing configured, on the embedded stack (local NATS, CPU models).

    Each policy parameter has its flag (see `trigreason policies`); one that is not the chosen policy's is
    checked and ignored."""
    params = session_params(
        ctx,
        profile,
        {
            "policy": policy, "max_tokens": max_tokens, "step_max_tokens": step_max_tokens,
            "temperature": temperature, "top_p": top_p, "seed": seed,
        },
    )  # fmt: skip
    env = os.environ
    nats_url = nats_url or env.get("TRIGREASON_NATS_URL")
    srm_url = srm_url or env.get("TRIGREASON_SRM_URL")
    lrm_url = lrm_url or env.get("TRIGREASON_LRM_URL")
    err = Console(stderr=True)
    show = None if as_json else Console()
    configure_logging(service="cli", level=env.get("TRIGREASON_LOG_LEVEL", "WARNING"))
    provider = configure_tracing(service="cli", env=env)
    interrupt = _Interrupt()

    async def main() -> tuple[str, list[StepCommitted], SessionFinished | SessionFailed]:
        interrupt.install()
        if nats_url:
            return await _solve_on_bus(nats_url, question, params, show=show)
        spec = StackSpec(srm_url=srm_url, lrm_url=lrm_url, srm_model=srm_model, lrm_model=lrm_model)
        async with embedded_stack(
            spec, tracer_provider=provider, env=env, say=lambda m: err.print(f"[dim]{m}[/]")
        ) as stack:
            return await _solve_on_bus(stack.nats_url, question, params, show=show)

    try:
        session_id, steps, end = run_event_loop(main, env=os.environ)
    except TrigReasonError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("interrupted")
        raise typer.Exit(interrupt.exit_code) from None
    finally:
        shutdown_tracing(provider)
    doc = _document(session_id, steps, end)
    if expect is not None:
        doc.update(graded(doc["answer"], expect))
    if as_json:
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        assert show is not None
        st = doc["stats"]
        verdict = ""
        if expect is not None:
            verdict = (
                "  [bold green]right[/]"
                if doc["correct"]
                else f"  [bold red]wrong[/] (expected {escape(expect)})"
            )
        show.print(f"[bold]answer:[/] {escape(str(doc['answer']))}{verdict}  ({doc['end_reason']})")
        show.print(
            f"SRM tokens {st['srm_tokens']}, LRM tokens {st['lrm_tokens']}, SRM token ratio "
            f"{st['srm_token_ratio']:.2f}, wasted SRM tokens {st['srm_wasted_tokens']}, "
            f"LRM calls {st['lrm_calls']}, "
            f"triggers {st['triggers']}, wall {st['wall_s']:.1f}s"
        )
    if isinstance(end, SessionFailed):
        raise typer.Exit(1)


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option(help="gateway port [env: TRIGREASON_PORT, default 8080]")
    ] = None,
    srm_model: _Model = "srm",
    lrm_model: _Model = "lrm",
    srm_url: Annotated[str | None, typer.Option(help="existing SRM server [env: TRIGREASON_SRM_URL]")] = None,
    lrm_url: Annotated[str | None, typer.Option(help="existing LRM server [env: TRIGREASON_LRM_URL]")] = None,
    nats_url: Annotated[str | None, typer.Option(help="existing NATS [env: TRIGREASON_NATS_URL]")] = None,
    profile: Annotated[
        str | None, typer.Option(help="gateway defaults from a profile [env: TRIGREASON_PROFILE]")
    ] = None,
    topology: Annotated[
        Topology,
        typer.Option(help="single: one site; edge-cloud: edge leaf node(s) and a cloud hub (docs/sites.md)"),
    ] = "single",
    sites: Annotated[
        str, typer.Option(help="edge-cloud: the edge sites, comma-separated (each its own gateway)")
    ] = "edge",
    lrm_workers: Annotated[int, typer.Option(help="edge-cloud: LRM workers in the cloud", min=1)] = 1,
    wan_rtt_ms: Annotated[float, typer.Option(help="edge-cloud: the WAN's round trip", min=0)] = 0.0,
    wan_jitter_ms: Annotated[float, typer.Option(help="edge-cloud: the WAN's jitter", min=0)] = 0.0,
    wan_mbit: Annotated[float, typer.Option(help="edge-cloud: the WAN's bandwidth (0: no cap)", min=0)] = 0.0,
) -> None:
    """The whole stack with the gateway, until Ctrl-C or SIGTERM.

    Every service reads the environment as `trigreason serve NAME` does (TRIGREASON_API_TOKENS,
    TRIGREASON_PROFILE, the bus settings, ...); the flags override it. `--topology edge-cloud` runs a cloud
    hub and edge leaf nodes over mutual TLS through an emulated WAN (docs/sites.md)."""
    # The gateway's and the services' settings come from here, as `serve gateway` builds them.
    env = dict(os.environ)
    if profile is not None:
        env["TRIGREASON_PROFILE"] = profile
    if env.get("TRIGREASON_PROFILE"):
        try:
            load_profile(env["TRIGREASON_PROFILE"], env=env)
        except TrigReasonError as exc:
            raise typer.BadParameter(exc.message, param_hint="--profile") from exc
    err = Console(stderr=True)
    try:
        gateway_port = port if port is not None else ServiceSettings.from_env(env).host.port
    except TrigReasonError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    if topology == "edge-cloud":
        _up_edge_cloud(
            env,
            err,
            EdgeCloudArgs(
                sites=tuple(s.strip() for s in sites.split(",") if s.strip()),
                lrm_workers=lrm_workers,
                srm_url=srm_url or env.get("TRIGREASON_SRM_URL"),
                lrm_url=lrm_url or env.get("TRIGREASON_LRM_URL"),
                srm_model=srm_model,
                lrm_model=lrm_model,
                gateway_port=gateway_port,
                wan_rtt_ms=wan_rtt_ms,
                wan_jitter_ms=wan_jitter_ms,
                wan_mbit=wan_mbit,
                nats_url=nats_url,
            ),
        )
        return
    spec = StackSpec(
        nats_url=nats_url or env.get("TRIGREASON_NATS_URL"),
        srm_url=srm_url or env.get("TRIGREASON_SRM_URL"),
        lrm_url=lrm_url or env.get("TRIGREASON_LRM_URL"),
        srm_model=srm_model,
        lrm_model=lrm_model,
        gateway_port=gateway_port,
    )

    def ready(stack: RunningStack) -> None:
        err.print(f"[bold green]ready[/]: gateway {stack.gateway_url}, NATS {stack.nats_url} (Ctrl-C stops)")

    _run_until_interrupted(
        env,
        err,
        lambda provider, say: embedded_stack(spec, tracer_provider=provider, env=env, say=say),
        ready,
    )


def _run_until_interrupted(
    env: dict[str, str],
    err: Console,
    open_stack: Callable[[TracerProvider, Callable[[str], None]], AbstractAsyncContextManager[_S]],
    ready: Callable[[_S], None],
) -> None:
    """``up``'s lifetime, either topology: logging and tracing, the stack until Ctrl-C or SIGTERM
    ("stopped"), a TrigReasonError as a usage error (exit 2)."""
    configure_logging(service="up", level=env.get("TRIGREASON_LOG_LEVEL", "INFO"))
    provider = configure_tracing(service="up", env=env)
    interrupt = _Interrupt()

    async def main() -> None:
        interrupt.install()
        try:
            async with open_stack(provider, lambda m: err.print(f"[dim]{m}[/]")) as stack:
                ready(stack)
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            if interrupt.signal is None:
                raise

    try:
        run_event_loop(main, env=env)
        err.print("stopped")
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("stopped")
    except TrigReasonError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    finally:
        shutdown_tracing(provider)


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeCloudArgs:
    sites: tuple[str, ...]
    lrm_workers: int
    srm_url: str | None
    lrm_url: str | None
    srm_model: str
    lrm_model: str
    gateway_port: int
    wan_rtt_ms: float
    wan_jitter_ms: float
    wan_mbit: float
    nats_url: str | None


def _up_edge_cloud(env: dict[str, str], err: Console, args: EdgeCloudArgs) -> None:
    """``up --topology edge-cloud``: trigreason.edge_cloud's stack until Ctrl-C or SIGTERM."""
    if args.nats_url:
        raise typer.BadParameter("edge-cloud starts its own hub and leaf nodes", param_hint="--nats-url")
    try:
        spec = EdgeCloudSpec(
            sites=args.sites,
            lrm_workers=args.lrm_workers,
            srm_url=args.srm_url,
            lrm_url=args.lrm_url,
            srm_model=args.srm_model,
            lrm_model=args.lrm_model,
            gateway_port=args.gateway_port,
            wan_rtt_ms=args.wan_rtt_ms,
            wan_jitter_ms=args.wan_jitter_ms,
            wan_mbit=args.wan_mbit,
        )
    except TrigReasonError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc

    def ready(stack: EdgeCloud) -> None:
        for site in stack.sites.values():
            err.print(
                f"[bold green]ready[/]: edge site {site.name}: gateway {site.gateway_url}, "
                f"NATS {site.nats_url} (leaf node, JetStream domain {site.name})"
            )
        err.print(f"cloud hub: NATS {stack.hub.url}; TLS material in {stack.tls.directory} (Ctrl-C stops)")

    _run_until_interrupted(
        env,
        err,
        lambda provider, say: edge_cloud_stack(spec, tracer_provider=provider, env=env, say=say),
        ready,
    )
