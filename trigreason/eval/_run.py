"""``trigreason eval``: every problem under every policy with the same seeds, graded, written as it goes.

Runs go through an ``Executor``: the in-process runner on two backends (the no-bus baseline), or a
running cluster's gateway. ``DIR/results.jsonl`` gets one row per (problem, policy, sample) the moment it
finishes, so an interrupted run resumes where it stopped, and only with the parameters it was started
with: a stored run made with others is an error, never mixed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import aiohttp
import msgspec

from trigreason.proto import (
    BackendError,
    CommittedStep,
    ConfigError,
    SessionParams,
    SessionStats,
    TrigReasonError,
)
from trigreason.runner import run_session
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry
from trigreason.services.worker.backends import Backend

from ._data import Problem
from ._grading import grade
from ._rows import Row, StepRow, read_rows

__all__ = [
    "Executor",
    "GatewayExecutor",
    "InProcessExecutor",
    "OnProgress",
    "Outcome",
    "RunKey",
    "complete_rows",
    "run_eval",
    "seed_for",
]

RunKey = tuple[str, str, int]  # (problem id, policy, sample)
# Called once with ``row=None`` before the first run, then after each finished run: (row, done, total).
OnProgress = Callable[[Row | None, int, int], None]


class Outcome(msgspec.Struct, kw_only=True, frozen=True):
    session_id: str
    answer: str | None
    end_reason: str
    failed: bool
    steps: list[StepRow]
    stats: SessionStats
    error: str | None = None


class Executor(Protocol):
    async def solve(self, question: str, params: SessionParams, session_id: str) -> Outcome: ...


class InProcessExecutor:
    """The in-process runner: the same core as the cluster, no bus."""

    def __init__(self, srm: Backend, lrm: Backend) -> None:
        self._srm, self._lrm = srm, lrm

    async def solve(self, question: str, params: SessionParams, session_id: str) -> Outcome:
        res = await run_session(question, params, srm=self._srm, lrm=self._lrm, session_id=session_id)
        return Outcome(
            session_id=session_id,
            answer=res.answer,
            end_reason=res.end_reason,
            failed=res.failed,
            steps=[_step(s) for s in res.steps],
            stats=res.stats,
            error=res.error,
        )


class GatewayExecutor:
    """A running cluster: ``POST /v1/sessions``, then the session's event stream until it ends.

    The stream stays open through steps of any length (the gateway sends keep-alives); one that ends
    early, say when a gateway replica goes, is resumed with ``Last-Event-ID``. Each step index counts once
    and the first terminal event ends the session: a redelivered event is not a second step.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout_s: float = 3600.0, reconnects: int = 5
    ) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._reconnects = reconnects
        self._http: aiohttp.ClientSession | None = None

    async def solve(self, question: str, params: SessionParams, session_id: str) -> Outcome:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        body = {"question": question, "params": msgspec.to_builtins(params)}
        async with self._http.post(f"{self._url}/v1/sessions", json=body) as resp:
            if resp.status != 202:
                raise TrigReasonError(f"gateway: {resp.status} {await resp.text()}", code="gateway")
            sid: str = (await resp.json())["session_id"]
        steps: dict[int, StepRow] = {}
        last_id: str | None = None
        for attempt in range(self._reconnects + 1):
            if attempt:
                await asyncio.sleep(min(2.0**attempt / 4, 5.0))
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with self._http.get(f"{self._url}/v1/sessions/{sid}/events", headers=headers) as resp:
                    if resp.status != 200:
                        raise TrigReasonError(f"gateway: {resp.status} {await resp.text()}", code="gateway")
                    kind, event_id = "", None
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            event_id = line.removeprefix("id: ")
                        elif line.startswith("event: "):
                            kind = line.removeprefix("event: ")
                        elif line.startswith("data: "):
                            data = line.removeprefix("data: ")
                            if kind == "committed":
                                step = _step(msgspec.json.decode(data, type=CommittedStep))
                                steps.setdefault(step.index, step)
                            elif kind in ("finished", "failed"):
                                ended = msgspec.json.decode(data, type=_Ended)
                                return _outcome(sid, kind, ended, [steps[i] for i in sorted(steps)])
                        elif not line and event_id is not None:
                            last_id, event_id = event_id, None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                continue  # the stream broke: resume after the last event
        raise TrigReasonError(f"gateway: the event stream of {sid} ended early", code="gateway")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


class _Ended(msgspec.Struct, kw_only=True, frozen=True):
    """The data of a ``finished`` or ``failed`` event, as far as a run needs it."""

    answer: str | None = None
    reason: str = ""
    code: str = ""
    message: str = ""
    stats: SessionStats = SessionStats()


def _outcome(sid: str, kind: str, ended: _Ended, steps: list[StepRow]) -> Outcome:
    failed = kind == "failed"
    return Outcome(
        session_id=sid,
        answer=None if failed else ended.answer,
        end_reason="failed" if failed else ended.reason,
        failed=failed,
        steps=steps,
        stats=ended.stats,
        error=f"{ended.code}: {ended.message}" if failed else None,
    )


def _step(s: CommittedStep) -> StepRow:
    return StepRow(index=s.index, role=s.role, text=s.text, tokens=s.tokens, trigger=s.trigger)


def complete_rows(rows: list[Row], problems: list[Problem], policies: list[str], samples: int) -> list[Row]:
    """The rows of the problems that have every (policy, sample) run, in problem order: a fair comparison
    of policies while a long evaluation is still under way."""
    have = {(r.problem_id, r.policy, r.sample): r for r in rows}
    out: list[Row] = []
    for p in problems:
        keys = [(p.id, pol, k) for k in range(samples) for pol in policies]
        if all(key in have for key in keys):
            out.extend(have[key] for key in keys)
    return out


def _check_stored(
    results: Path,
    existing: dict[RunKey, Row],
    wanted: list[tuple[Problem, str, int]],
    params: SessionParams,
    registry: PolicyRegistry,
) -> None:
    checked: set[str] = set()
    for problem, policy, sample in wanted:
        row = existing.get((problem.id, policy, sample))
        if row is None or policy in checked:
            continue
        checked.add(policy)  # one row per policy: a file is written by one command line
        expected = msgspec.structs.replace(
            params, policy=policy, seed=seed_for(problem.id, sample, params.seed)
        )
        now = _comparable(expected, registry)
        then = _comparable(row.params, registry)
        if now != then:
            diffs = [
                f"{k} {then.get(k, '-')!r} there, {now.get(k, '-')!r} now"
                for k in sorted(set(now) | set(then))
                if now.get(k) != then.get(k)
            ]
            raise ConfigError(
                f"{results} holds {policy} runs made with other parameters ({'; '.join(diffs[:4])}); "
                "resuming would mix them: give another --out, or the parameters they were made with"
            )


def _comparable(params: SessionParams, registry: PolicyRegistry) -> dict[str, object]:
    """The parameters that make a run what it is, flat: the policy's own parameters in their checked
    form (the random baseline's offload_p included), and the run's own seed."""
    with contextlib.suppress(PolicyError):  # a policy this registry lacks: compare as stored
        params = registry.normalise(params)
    flat = msgspec.to_builtins(params)
    own = flat.pop("policy_params", {})
    return {**flat, **{f"policy_params.{k}": v for k, v in own.items()}}


def _prepare(out_dir: Path) -> tuple[Path, dict[RunKey, Row]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.jsonl"
    return results, {(r.problem_id, r.policy, r.sample): r for r in read_rows(results)}


def seed_for(problem_id: str, sample: int, base_seed: int) -> int:
    """The same seed for a problem's sample under every policy, independent of run order."""
    digest = hashlib.sha256(f"{problem_id}#{sample}".encode()).digest()
    return (base_seed + int.from_bytes(digest[:6], "big")) % (2**63)


async def run_eval(
    problems: list[Problem],
    policies: Iterable[str],
    *,
    samples: int,
    params: SessionParams,
    executor: Executor,
    out_dir: Path,
    concurrency: int = 1,
    on_progress: OnProgress = lambda _row, _done, _total: None,
    registry: PolicyRegistry | None = None,
) -> list[Row]:
    """Run what ``out_dir/results.jsonl`` does not hold yet; return every row for these runs.

    A stored run of these problems and policies made with other parameters (``registry`` normalises
    both sides: a v1 row and its new form are the same) raises ``ConfigError`` before anything runs.
    ``on_progress(row, done, total)`` is called once with ``row=None`` before the first run, then after
    each finished run.
    """
    results, existing = _prepare(out_dir)
    wanted: list[tuple[Problem, str, int]] = [
        (p, policy, k) for p in problems for k in range(samples) for policy in policies
    ]
    _check_stored(results, existing, wanted, params, registry or PolicyRegistry.from_env())
    todo = [w for w in wanted if (w[0].id, w[1], w[2]) not in existing]
    done = len(wanted) - len(todo)
    on_progress(None, done, len(wanted))
    limit = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    new_rows: dict[RunKey, Row] = {}

    async def one(problem: Problem, policy: str, sample: int) -> None:
        nonlocal done
        async with limit:
            seed = seed_for(problem.id, sample, params.seed)
            run_params = msgspec.structs.replace(params, policy=policy, seed=seed)
            sid = f"eval-{hashlib.sha256(f'{problem.id}|{policy}|{sample}'.encode()).hexdigest()[:16]}"
            started = time.perf_counter()
            try:
                outcome = await executor.solve(problem.question, run_params, sid)
            except (BackendError, TrigReasonError, aiohttp.ClientError) as exc:
                outcome = Outcome(
                    session_id=sid, answer=None, end_reason="failed", failed=True, steps=[],
                    stats=SessionStats(), error=str(exc),
                )  # fmt: skip
            row = Row(
                problem_id=problem.id,
                policy=policy,
                sample=sample,
                seed=seed,
                question=problem.question,
                gold=problem.gold,
                answer=outcome.answer,
                correct=grade(outcome.answer, problem.gold, kind=problem.grade),
                end_reason=outcome.end_reason,
                failed=outcome.failed,
                error=outcome.error,
                session_id=outcome.session_id,
                run_s=time.perf_counter() - started,
                params=run_params,
                stats=outcome.stats,
                steps=outcome.steps,
            )
            line = msgspec.json.encode(row) + b"\n"
            async with lock:
                with results.open("ab") as f:
                    f.write(line)
                new_rows[(problem.id, policy, sample)] = row
                done += 1
                on_progress(row, done, len(wanted))

    await asyncio.gather(*(one(*w) for w in todo))
    return [existing.get((p.id, pol, k)) or new_rows[(p.id, pol, k)] for p, pol, k in wanted]
