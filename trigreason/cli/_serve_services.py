"""``trigreason serve gateway|orchestrator|trigger-evaluator|srm-worker|lrm-worker``."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from trigreason.host import ServiceName, ServiceSettings, run_service, stop_on_signals
from trigreason.proto import Role, TrigReasonError
from trigreason.services.runtime import configure_logging, configure_tracing, run_event_loop
from trigreason.services.worker import backend_from_env
from trigreason.services.worker.backends import Backend, BackendSettings

from ._app import serve_app
from ._shutdown import shutdown_tracing

__all__: list[str] = []

_NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server [env: TRIGREASON_NATS_URL]")]
_Concurrency = Annotated[
    int | None,
    typer.Option(min=1, help="Messages worked on at once per replica [env: TRIGREASON_CONCURRENCY]"),
]


def _run(name: ServiceName, *, nats_url: str | None, concurrency: int | None, backend_url: str | None = None,
         host: str | None = None, port: int | None = None, log_level: str = "INFO",
         profile: str | None = None) -> None:  # fmt: skip
    env = dict(os.environ)
    if profile is not None:
        env["TRIGREASON_PROFILE"] = profile
    overrides: dict[str, object] = {}
    if concurrency is not None:
        overrides["concurrency"] = concurrency
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if nats_url is not None:
        env["TRIGREASON_NATS_URL"] = nats_url
    try:
        settings = ServiceSettings.from_env(env, **overrides)
        BackendSettings.from_env(env)  # a bad TRIGREASON_BACKEND_* fails here, before anything starts
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(service=name, level=log_level)
    provider = configure_tracing(service=name, env=env)

    async def backend_factory(role: Role) -> Backend:
        # --backend-url, else TRIGREASON_<ROLE>_URL; TRIGREASON_BACKEND_* (timeouts, retries) either way.
        if backend_url:
            env[f"TRIGREASON_{role.upper()}_URL"] = backend_url
        return await backend_from_env(role, env)()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_service(
            name, settings, stop=stop, tracer_provider=provider, backend_factory=backend_factory
        )

    try:
        run_event_loop(main, env=env)
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        shutdown_tracing(provider)


@serve_app.command("gateway")
def serve_gateway(
    nats_url: _NatsUrl = None,
    host: Annotated[str | None, typer.Option(help="[env: TRIGREASON_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[env: TRIGREASON_PORT, default 8080]")] = None,
    log_level: str = "INFO",
    profile: Annotated[
        str | None, typer.Option(help="default session parameters from a profile [env: TRIGREASON_PROFILE]")
    ] = None,
) -> None:
    """The HTTP gateway: sessions, SSE events, OpenAI-compatible chat."""
    _run("gateway", nats_url=nats_url, concurrency=None, host=host, port=port, log_level=log_level,
         profile=profile)  # fmt: skip


@serve_app.command("orchestrator")
def serve_orchestrator(
    nats_url: _NatsUrl = None, concurrency: _Concurrency = None, log_level: str = "INFO"
) -> None:
    """The session-orchestrator (stateless; run any number)."""
    _run("orchestrator", nats_url=nats_url, concurrency=concurrency, log_level=log_level)


@serve_app.command("trigger-evaluator")
def serve_trigger_evaluator(
    nats_url: _NatsUrl = None, concurrency: _Concurrency = None, log_level: str = "INFO"
) -> None:
    """The trigger-evaluator (stateless; run any number)."""
    _run("trigger-evaluator", nats_url=nats_url, concurrency=concurrency, log_level=log_level)


def _worker(
    role: Role, nats_url: str | None, backend_url: str | None, concurrency: int | None, log_level: str
) -> None:
    url = backend_url or os.environ.get(f"TRIGREASON_{role.upper()}_URL")
    _run(f"{role}-worker", nats_url=nats_url, concurrency=concurrency, backend_url=url, log_level=log_level)  # type: ignore[arg-type]


@serve_app.command("srm-worker")
def serve_srm_worker(
    backend_url: Annotated[
        str | None, typer.Option(help="SRM inference server [env: TRIGREASON_SRM_URL]")
    ] = None,
    nats_url: _NatsUrl = None,
    concurrency: _Concurrency = None,
    log_level: str = "INFO",
) -> None:
    """An SRM worker (scale out: every replica shares one consumer)."""
    _worker("srm", nats_url, backend_url, concurrency, log_level)


@serve_app.command("lrm-worker")
def serve_lrm_worker(
    backend_url: Annotated[
        str | None, typer.Option(help="LRM inference server [env: TRIGREASON_LRM_URL]")
    ] = None,
    nats_url: _NatsUrl = None,
    concurrency: _Concurrency = None,
    log_level: str = "INFO",
) -> None:
    """An LRM worker (generation and SpecReason judging)."""
    _worker("lrm", nats_url, backend_url, concurrency, log_level)
