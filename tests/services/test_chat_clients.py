"""Chat clients as people use them, against the running gateway (the embedded stack: a real nats-server,
the five services, the load simulator): LiteLLM's ``completion``, plain and streamed, with a system
message and a conversation; and EleutherAI's lm-evaluation-harness (``--model local-chat-completions``)
on a GSM8K task from this project's own data, whose scores agree with ``trigreason eval`` on the same
problems and settings.

Agreement: both send each problem's question alone (the harness's ``doc_to_text`` is the question, as
eval's is) with the same policy, parameters (one profile for the gateway and eval), temperature 0 and
budget, so the gateway renders the same prompts. The seeds differ (the harness sends one for every
request, eval one per problem), and the simulator's answer follows from the prompt's first paragraph: with
the raw prompt family that is the question alone, so each problem gets the same ``\\boxed{}`` answer
whatever the seed (on a real model, greedy decoding ignores the seed). The tolerance is therefore zero:
the same answer string per problem, and accuracies that differ only where the graders do (eval compares
numbers as numbers, the harness strings), which the test recomputes from the answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.containers import StackEndpoints
from tests.services.conftest import STACK_SIM
from trigreason.eval import grade
from trigreason.services.backend_sim import SimSettings, make_app, start_server
from trigreason.stack import StackSpec, embedded_stack

# LiteLLM fetches a model price list from GitHub on import unless told to use its packaged copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TASK = "trigreason_gsm8k"
PROBLEMS = 3
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a careful math tutor. Keep steps short."},
    {"role": "user", "content": "What is 3 + 3?"},
    {"role": "assistant", "content": "6"},
    {"role": "user", "content": [{"type": "text", "text": "And 3 + 4?"}]},
]


def _litellm_args(gateway_url: str) -> dict[str, Any]:
    return {
        "model": "openai/trigreason",
        "api_base": f"{gateway_url}/v1",
        "api_key": "none",
        "num_retries": 0,
    }


async def test_litellm_completion_with_a_system_message_and_a_conversation(
    service_stack: StackEndpoints,
) -> None:
    resp: Any = await litellm.acompletion(
        messages=CONVERSATION, temperature=0, max_tokens=512, **_litellm_args(service_stack.gateway_url)
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert "\\boxed{" in choice.message.content
    assert resp.usage.prompt_tokens > 0
    assert resp.model.endswith("trigreason")


async def test_litellm_streaming_with_a_system_message_and_a_conversation(
    service_stack: StackEndpoints,
) -> None:
    stream: Any = await litellm.acompletion(
        messages=CONVERSATION,
        temperature=0,
        max_tokens=512,
        stream=True,
        stop=["Question:"],
        **_litellm_args(service_stack.gateway_url),
    )
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "\\boxed{" in content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]


async def test_litellm_gets_a_422_naming_what_it_cannot_do(service_stack: StackEndpoints) -> None:
    # LiteLLM raises the gateway's 422 as its BadRequestError, with the status and the message.
    with pytest.raises(litellm.exceptions.BadRequestError, match="response_format: only") as info:
        await litellm.acompletion(
            messages=CONVERSATION,
            response_format={"type": "json_object"},
            **_litellm_args(service_stack.gateway_url),
        )
    status: int = info.value.status_code
    assert status == 422


async def _run(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    return text


def _harness_scores(out: Path) -> tuple[float, dict[str, str | None]]:
    """The harness's accuracy and each problem's filtered answer, by question."""
    (results,) = out.rglob("results_*.json")
    accuracy = float(json.loads(results.read_text())["results"][TASK]["exact_match,boxed"])
    (samples,) = out.rglob(f"samples_{TASK}_*.jsonl")
    answers: dict[str, str | None] = {}
    for line in samples.read_text().splitlines():
        row = json.loads(line)
        got = row["filtered_resps"][0]
        answers[row["doc"]["question"]] = got if got != "[invalid]" else None
    return accuracy, answers


@pytest.fixture
async def raw_stack(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The embedded stack on the simulator, its gateway's default parameters from a profile (the raw
    prompt family): (gateway URL, profile file)."""
    profile = tmp_path / "raw-prompts.json"
    profile.write_text(json.dumps({"params": {"srm_prompt": "raw", "lrm_prompt": "raw"}}))
    runner, sim = await start_server(
        make_app(SimSettings.from_env(STACK_SIM, host="127.0.0.1", port=0)), host="127.0.0.1", port=0
    )
    try:
        spec = StackSpec(srm_url=sim, lrm_url=sim, gateway_port=0)
        env = {**os.environ, "OTEL_SDK_DISABLED": "true", "TRIGREASON_PROFILE": str(profile)}
        async with embedded_stack(spec, tracer_provider=TracerProvider(), env=env) as running:
            assert running.gateway_url is not None
            yield running.gateway_url, profile
    finally:
        await runner.cleanup()


async def test_the_harness_agrees_with_trigreason_eval(raw_stack: tuple[str, Path], tmp_path: Path) -> None:
    gateway, profile = raw_stack
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    await _run(
        [
            str(BIN / "trigreason"), "eval", "--dataset", "gsm8k", "--limit", str(PROBLEMS),
            "--policies", "trigreason,lrm-only", "--via", gateway, "--temperature", "0",
            "--max-tokens", "1024", "--profile", str(profile), "--out", str(tmp_path / "eval"),
        ],
        env,
        ROOT,
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    for policy in ("trigreason", "lrm-only"):
        out = tmp_path / f"harness-{policy}"
        await _run(
            [
                str(BIN / "lm_eval"), "--model", "local-chat-completions",
                "--model_args",
                f"model={policy},base_url={gateway}/v1/chat/completions,num_concurrent=1,max_retries=1,"
                "tokenized_requests=False",
                "--apply_chat_template", "--include_path", "examples/lm_eval", "--tasks", TASK,
                "--limit", str(PROBLEMS), "--output_path", str(out), "--log_samples",
            ],
            env,
            ROOT,
        )  # fmt: skip
        accuracy, answers = _harness_scores(out)
        ours = {r["question"]: r for r in rows if r["policy"] == policy}
        assert len(ours) == len(answers) == PROBLEMS
        assert all(not r["failed"] for r in ours.values()), ours
        # The same answer to each problem...
        assert {q: r["answer"] for q, r in ours.items()} == answers
        # ... so the same accuracy, but where the graders differ (numbers as numbers against strings).
        eval_accuracy = sum(r["correct"] for r in ours.values()) / PROBLEMS
        as_strings = (
            sum(answers[q] is not None and answers[q] == r["gold"] for q, r in ours.items()) / PROBLEMS
        )
        assert accuracy == pytest.approx(as_strings)
        assert eval_accuracy == pytest.approx(
            sum(grade(answers[q], r["gold"], kind="numeric") for q, r in ours.items()) / PROBLEMS
        )
        print(f"{policy}: harness exact_match {accuracy:.3f}, trigreason eval accuracy {eval_accuracy:.3f}")


async def test_a_request_beyond_the_servers_limits_is_refused_up_front(service_stack: StackEndpoints) -> None:
    """The workers publish their server's /info limits on the bus; the gateway refuses judge_top_n 40 (the
    simulator, like TGI, takes at most 20 top tokens) with a 422 naming it and the limit, not a 502 later."""
    body = {"question": "What is 3 + 4?", "policy": "specreason", "params": {"judge_top_n": 40}}
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the workers publish in the background at start; the gateway reads every 5 s
            async with http.post(f"{service_stack.gateway_url}/v1/sessions", json=body) as resp:
                if resp.status == 422:
                    error = (await resp.json())["error"]
                    break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the gateway never refused judge_top_n 40")
        assert error["code"] == "beyond_backend_limit"
        assert error["message"].startswith("params.judge_top_n: 40 is beyond what the LRM inference server")
        assert "max_top_n_tokens 20" in error["message"]
        body["params"] = {"judge_top_n": 20}
        async with http.post(f"{service_stack.gateway_url}/v1/sessions", json=body) as resp:
            assert resp.status == 202, await resp.text()


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two CPU inference servers and the harness's start, on a shared machine
async def test_the_clients_on_the_tiny_real_model(tmp_path: Path) -> None:
    """Once on a real model (the tiny one, greedy, through the CPU inference server): the openai SDK
    streamed and LiteLLM with a system message and a conversation get answers, and the harness agrees with
    ``trigreason eval`` answer by answer (greedy decoding ignores the seeds)."""
    import openai

    spec = StackSpec(srm_model="tiny", lrm_model="tiny", gateway_port=0)
    env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
    async with embedded_stack(spec, tracer_provider=TracerProvider(), env=env) as running:
        gateway = running.gateway_url
        assert gateway is not None
        budget = {"temperature": 0, "max_tokens": 48}
        client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="none", max_retries=0)
        stream: Any = await client.chat.completions.create(
            model="lrm-only",
            messages=CONVERSATION,  # type: ignore[arg-type]
            stream=True,
            temperature=0,
            max_tokens=48,
        )
        chunks = [c async for c in stream if c.choices]
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
        await client.close()
        resp: Any = await litellm.acompletion(messages=CONVERSATION, **budget, **_litellm_args(gateway))
        assert resp.choices[0].message.content.strip()
        assert resp.usage.prompt_tokens > 20  # the whole conversation, through the chat template

        hf = {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        run_env = {**env, **hf}
        await _run(
            [
                str(BIN / "trigreason"), "eval", "--dataset", "gsm8k", "--limit", "1",
                "--policies", "lrm-only", "--via", gateway, "--temperature", "0", "--max-tokens", "48",
                "--out", str(tmp_path / "eval"),
            ],
            run_env,
            ROOT,
        )  # fmt: skip
        out = tmp_path / "harness"
        await _run(
            [
                str(BIN / "lm_eval"), "--model", "local-chat-completions",
                "--model_args",
                f"model=lrm-only,base_url={gateway}/v1/chat/completions,num_concurrent=1,max_retries=1,"
                "tokenized_requests=False",
                "--apply_chat_template", "--include_path", "examples/lm_eval", "--tasks", TASK,
                "--gen_kwargs", "max_gen_toks=48", "--limit", "1", "--output_path", str(out), "--log_samples",
            ],
            run_env,
            ROOT,
        )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    accuracy, answers = _harness_scores(out)
    assert {r["question"]: r["answer"] for r in rows} == answers
    eval_accuracy = sum(r["correct"] for r in rows) / len(rows)
    print(f"tiny model, lrm-only: harness exact_match {accuracy:.3f}, eval accuracy {eval_accuracy:.3f}")
