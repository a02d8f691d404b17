"""``trigreason serve gateway|orchestrator|trigger-evaluator|srm-worker|lrm-worker``: each runs the service's
own entry point (``main``, what its image runs as ``python -m trigreason.services.<service>``), with the
flags as overrides of the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer

from trigreason.profiles import load_profile
from trigreason.proto import Role
from trigreason.services import gateway, orchestrator, trigger_evaluator, worker

from ._app import serve_app

__all__: list[str] = []

_NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server [env: TRIGREASON_NATS_URL]")]
_Concurrency = Annotated[
    int | None,
    typer.Option(min=1, help="Messages worked on at once per replica [env: TRIGREASON_CONCURRENCY]"),
]
_LogLevel = Annotated[
    str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR [env: TRIGREASON_LOG_LEVEL]")
]


def _run(main: Callable[..., int], *, nats_url: str | None, log_level: str | None,
         env_overrides: Mapping[str, str] | None = None, **host: Any) -> None:  # fmt: skip
    """The environment with the flags on top, then the service's ``main``; its exit status is ours."""
    env = dict(os.environ)
    if nats_url is not None:
        env["TRIGREASON_NATS_URL"] = nats_url
    if log_level is not None:
        env["TRIGREASON_LOG_LEVEL"] = log_level
    env.update(env_overrides or {})
    code = main(env, **{k: v for k, v in host.items() if v is not None})
    if code:
        raise typer.Exit(code)


@serve_app.command("gateway")
def serve_gateway(
    nats_url: _NatsUrl = None,
    host: Annotated[str | None, typer.Option(help="[env: TRIGREASON_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[env: TRIGREASON_PORT, default 8080]")] = None,
    log_level: _LogLevel = None,
    profile: Annotated[
        str | None, typer.Option(help="default session parameters from a profile [env: TRIGREASON_PROFILE]")
    ] = None,
) -> None:
    """The HTTP gateway: sessions, SSE events, OpenAI-compatible chat."""

    def main(env: Mapping[str, str], **host: Any) -> int:
        # Profiles by name (or file), as the CLI knows them; the image reads a file only.
        return gateway.main(env, load_profile=lambda ref: load_profile(ref, env=env), **host)

    profile_env = {"TRIGREASON_PROFILE": profile} if profile is not None else None
    _run(main, nats_url=nats_url, log_level=log_level, env_overrides=profile_env, host=host, port=port)


@serve_app.command("orchestrator")
def serve_orchestrator(
    nats_url: _NatsUrl = None, concurrency: _Concurrency = None, log_level: _LogLevel = None
) -> None:
    """The session-orchestrator (stateless; run any number)."""
    _run(orchestrator.main, nats_url=nats_url, log_level=log_level, concurrency=concurrency)


@serve_app.command("trigger-evaluator")
def serve_trigger_evaluator(
    nats_url: _NatsUrl = None, concurrency: _Concurrency = None, log_level: _LogLevel = None
) -> None:
    """The trigger-evaluator (stateless; run any number)."""
    _run(trigger_evaluator.main, nats_url=nats_url, log_level=log_level, concurrency=concurrency)


def _worker(
    role: Role, nats_url: str | None, backend_url: str | None, concurrency: int | None, log_level: str | None
) -> None:
    # --backend-url, else TRIGREASON_<ROLE>_URL; TRIGREASON_BACKEND_* (timeouts, retries) either way.
    url_env = {f"TRIGREASON_{role.upper()}_URL": backend_url} if backend_url else None

    def main(env: Mapping[str, str], **host: Any) -> int:
        return worker.main(role, env, **host)

    _run(main, nats_url=nats_url, log_level=log_level, env_overrides=url_env, concurrency=concurrency)


@serve_app.command("srm-worker")
def serve_srm_worker(
    backend_url: Annotated[
        str | None, typer.Option(help="SRM inference server [env: TRIGREASON_SRM_URL]")
    ] = None,
    nats_url: _NatsUrl = None,
    concurrency: _Concurrency = None,
    log_level: _LogLevel = None,
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
    log_level: _LogLevel = None,
) -> None:
    """An LRM worker (generation and SpecReason judging)."""
    _worker("lrm", nats_url, backend_url, concurrency, log_level)
