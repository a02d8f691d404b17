"""``trigreason wan``: the WAN emulator in the foreground (see docs/wan.md)."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Annotated

import typer

from trigreason.proto import TrigReasonError
from trigreason.services.runtime import cleanup_within, env_settings, run_event_loop, stop_on_signals

from ._app import app

__all__ = ["parse_route"]


def parse_route(text: str) -> tuple[str, int, str, int]:
    """``[LISTEN_HOST:]LISTEN_PORT=UPSTREAM_HOST:UPSTREAM_PORT`` as its four parts."""
    listen, sep, upstream = text.partition("=")
    up_host, colon, up_port = upstream.rpartition(":")
    l_host, _, l_port = listen.rpartition(":")
    if not sep or not colon or not up_host:
        raise typer.BadParameter(f"{text!r}: use [LISTEN_HOST:]LISTEN_PORT=UPSTREAM_HOST:UPSTREAM_PORT")
    try:
        return l_host or "127.0.0.1", int(l_port), up_host, int(up_port)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: the ports must be numbers") from exc


@app.command("wan")
def wan_command(
    route: Annotated[
        list[str],
        typer.Option(
            "--route",
            help="[LISTEN_HOST:]LISTEN_PORT=UPSTREAM_HOST:UPSTREAM_PORT (repeat: all share one link)",
        ),
    ],
    rtt_ms: Annotated[
        float | None, typer.Option(min=0.0, help="Round-trip delay added [env: TRIGREASON_WAN_RTT_MS]")
    ] = None,
    jitter_ms: Annotated[
        float | None,
        typer.Option(min=0.0, help="Round trips vary by up to ± this [env: TRIGREASON_WAN_JITTER_MS]"),
    ] = None,
    mbit: Annotated[
        float | None,
        typer.Option(min=0.0, help="Bandwidth cap per direction, 0 = none [env: TRIGREASON_WAN_MBIT]"),
    ] = None,
    partition_mode: Annotated[
        str | None,
        typer.Option(help="blackhole (hold traffic; default) or reset [env: TRIGREASON_WAN_PARTITION_MODE]"),
    ] = None,
    partitioned: Annotated[
        bool | None, typer.Option("--partitioned/--connected", help="Start with the link cut")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Jitter's seed [env: TRIGREASON_WAN_SEED]")] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="Accept TLS with this certificate (PEM) and forward plain TCP")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="The certificate's key (PEM)")] = None,
    tls_client_ca: Annotated[
        str | None, typer.Option(help="Require client certificates signed by this CA (mutual TLS)")
    ] = None,
    admin_port: Annotated[
        int | None,
        typer.Option(help="Serve the admin endpoint on 127.0.0.1:PORT (0: any free port; default: none)"),
    ] = None,
) -> None:
    """Emulate a WAN: forward TCP ports with a round-trip delay, jitter, a bandwidth cap and partitions.
    SIGUSR1 cuts the link, SIGUSR2 heals it; the admin endpoint changes anything at run time."""
    from trigreason.wan import WanEmulator, WanRoute, WanSettings, start_admin

    tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_client_ca": tls_client_ca}
    for option, path in tls.items():
        if path is not None and not os.access(path, os.R_OK):
            typer.echo(f"error: --{option.replace('_', '-')} {path}: no such readable file", err=True)
            raise typer.Exit(2)
    try:
        routes = [
            WanRoute(
                listen_host=lh,
                listen_port=lp,
                upstream_host=uh,
                upstream_port=up,
                tls_cert=tls_cert,
                tls_key=tls_key,
                tls_client_ca=tls_client_ca,
            )
            for lh, lp, uh, up in map(parse_route, route)
        ]
        for r in routes:
            r.ssl_context()
    except (ValueError, ssl.SSLError) as exc:
        typer.echo(f"error: --tls-cert/--tls-key/--tls-client-ca: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        settings = env_settings(
            WanSettings,
            os.environ,
            prefix="TRIGREASON_WAN_",
            overrides={
                "rtt_ms": rtt_ms,
                "jitter_ms": jitter_ms,
                "mbit": mbit,
                "partition_mode": partition_mode,
                "partitioned": partitioned,
                "seed": seed,
            },
        )
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        wan = WanEmulator(routes, settings)
        try:
            await wan.start()
        except OSError as exc:
            raise TrigReasonError(f"cannot listen: {exc.strerror or exc}") from exc
        wan.install_signal_handlers()
        admin = None
        try:
            for (host, port), r in zip((wan.address(i) for i in range(len(routes))), routes, strict=True):
                typer.echo(f"wan: {host}:{port} -> {r.upstream_host}:{r.upstream_port}")
            if admin_port is not None:
                admin, url = await start_admin(wan, port=admin_port)
                typer.echo(f"wan admin: {url}/wan")
            typer.echo(f"wan pid {os.getpid()}: SIGUSR1 cuts the link, SIGUSR2 heals it")
            await stop.wait()
        finally:
            if admin is not None:
                await cleanup_within(admin, 1.0)
            await wan.stop()

    try:
        run_event_loop(main, env=dict(os.environ))
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
