"""``trigreason eval`` without the command line: which policies, where they run, the matched random
baseline after them, and the rows a report is built from."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from trigreason.proto import ConfigError, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyRegistry, did_you_mean
from trigreason.services.worker.backends import make_backend
from trigreason.stack import StackSpec, inference_servers

from ._calibration import Progress, no_progress
from ._data import Problem
from ._matched import replaced_share
from ._rows import Row, read_rows
from ._run import Executor, GatewayExecutor, InProcessExecutor, complete_rows, run_eval

__all__ = [
    "check_policies",
    "check_via",
    "default_policies",
    "evaluate",
    "evaluated_policies",
    "open_executor",
    "stored_rows",
]


def default_policies(policies: PolicyRegistry) -> tuple[str, ...]:
    """What eval runs when no policy is named: the registered policies marked ``in_default_eval`` (the
    random baseline is not: it runs on request, ``--policies ...,random`` or --matched-random)."""
    return tuple(p.name for p in policies if p.in_default_eval)


def check_policies(
    wanted: Sequence[str],
    *,
    matched_random: bool,
    policies: PolicyRegistry | None = None,
    matched_to: str = "trigreason",
) -> list[str]:
    """``wanted`` when every name is a registered policy (ConfigError otherwise, with a suggestion)."""
    registry = policies or PolicyRegistry.from_env()
    unknown = [p for p in wanted if p not in registry]
    if unknown or not wanted:
        hint = did_you_mean(unknown[0], registry.names()) if unknown else ""
        raise ConfigError(f"unknown policy {unknown}{hint}; use {', '.join(registry.names())}")
    if matched_random and matched_to not in wanted:
        raise ConfigError(f"--matched-random compares with {matched_to}: add it")
    return list(wanted)


def evaluated_policies(policies: Sequence[str], *, matched_random: bool) -> list[str]:
    """The policies whose runs a finished evaluation holds."""
    return [*policies, "random"] if matched_random and "random" not in policies else list(policies)


def check_via(via: str) -> str:
    """``inproc`` or a gateway's URL (ConfigError otherwise)."""
    if via != "inproc" and not via.startswith(("http://", "https://")):
        raise ConfigError("use inproc or a gateway URL (http://...)")
    return via


@contextlib.asynccontextmanager
async def open_executor(
    via: str,
    *,
    srm_model: str,
    lrm_model: str,
    srm_url: str | None = None,
    lrm_url: str | None = None,
    env: Mapping[str, str] = os.environ,
    say: Callable[[str], None] = lambda _m: None,
) -> AsyncIterator[Executor]:
    """``inproc``: the in-process runner on two backends (URLs given, from the environment, or CPU
    servers started for the models); ``http(s)://...``: a running gateway."""
    if check_via(via) != "inproc":
        gateway = GatewayExecutor(via, token=env.get("TRIGREASON_API_TOKEN"))
        try:
            yield gateway
        finally:
            await gateway.aclose()
        return
    spec = StackSpec(
        srm_url=srm_url or env.get("TRIGREASON_SRM_URL"),
        lrm_url=lrm_url or env.get("TRIGREASON_LRM_URL"),
        srm_model=srm_model,
        lrm_model=lrm_model,
    )
    async with inference_servers(spec, say=say) as urls:
        srm = await make_backend(urls["srm"], name="srm")
        lrm = await make_backend(urls["lrm"], name="lrm")
        try:
            yield InProcessExecutor(srm, lrm)
        finally:
            await srm.aclose()
            await lrm.aclose()


async def evaluate(
    problems: list[Problem],
    policies: Sequence[str],
    *,
    samples: int,
    params: SessionParams,
    executor: Executor,
    out_dir: Path,
    concurrency: int = 1,
    matched_random: bool = False,
    matched_to: str = "trigreason",
    label: str = "eval",
    progress: Progress = no_progress,
    say: Callable[[str], None] = lambda _m: None,
) -> list[Row]:
    """Every policy's runs; with ``matched_random``, then the random baseline on the same problems and
    seeds at the share of SRM steps ``matched_to`` (TrigReason by default) replaced on them (its
    ``offload_p``)."""
    with progress(label) as on_progress:
        rows = await run_eval(
            problems, policies, samples=samples, params=params, executor=executor, out_dir=out_dir,
            concurrency=concurrency, on_progress=on_progress,
        )  # fmt: skip
    if not matched_random:
        return rows
    # The baseline hands the LRM as many SRM steps as the matched policy did on this data set.
    p = replaced_share(r.stats for r in rows if r.policy == matched_to)
    say(f"random baseline at offload_p {p:.3f} (the share of SRM steps {matched_to} replaced)")
    matched = msgspec.structs.replace(params, offload_p=p)
    with progress(f"{label} random") as on_progress:
        return rows + await run_eval(
            problems, ["random"], samples=samples, params=matched, executor=executor, out_dir=out_dir,
            concurrency=concurrency, on_progress=on_progress,
        )  # fmt: skip


def stored_rows(out_dir: Path, problems: list[Problem], policies: Sequence[str], samples: int) -> list[Row]:
    """The stored rows of the problems whose every run is done (ConfigError when there is none)."""
    results = out_dir / "results.jsonl"
    rows = complete_rows(read_rows(results), problems, list(policies), samples)
    if not rows:
        raise ConfigError(f"{results} has no problem with every run done")
    return rows
