"""The CPU inference server's and the simulator's image entry points (``python -m
trigreason.services.tgi_cpu`` / ``.backend_sim``): configured from the environment, a bad setting is one
line and exit status 2, SIGTERM and SIGINT stop them within a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from trigreason.services.tgi_cpu.models import cached_model

STOP_WITHIN_S = 5.0


def _start(module: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, "TRIGREASON_LOG_LEVEL": "INFO", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_listening(proc: subprocess.Popen[str], timeout: float) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "listening" in line:
            return lines
    proc.kill()
    raise AssertionError(f"not listening within {timeout} s:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> float:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_WITHIN_S * 2)
    finally:
        proc.kill()
    return time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_simulator_serves_until_a_stop_signal(sig: signal.Signals) -> None:
    proc = _start("trigreason.services.backend_sim", {"TRIGREASON_SIM_PORT": "0"})
    lines = _wait_listening(proc, timeout=30)
    assert "http://127.0.0.1:" in lines[-1]
    assert _stop(proc, sig) < STOP_WITHIN_S
    assert proc.returncode == 0


@pytest.mark.slow
def test_the_cpu_server_serves_until_sigterm() -> None:
    if cached_model("tiny") is None:
        pytest.skip("the tiny model is not cached (trigreason models pull tiny)")
    proc = _start(
        "trigreason.services.tgi_cpu", {"TRIGREASON_TGI_CPU_MODEL": "tiny", "TRIGREASON_TGI_CPU_PORT": "0"}
    )
    _wait_listening(proc, timeout=120)
    assert _stop(proc, signal.SIGTERM) < STOP_WITHIN_S
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("module", "env", "message"),
    [
        ("trigreason.services.backend_sim", {"TRIGREASON_SIM_PORT": "eighty"}, "TRIGREASON_SIM_PORT"),
        ("trigreason.services.backend_sim", {"TRIGREASON_SIM_STEP_TOKENS": "many"}, "step length"),
        ("trigreason.services.backend_sim", {"TRIGREASON_LOG_LEVEL": "LOUD"}, "TRIGREASON_LOG_LEVEL"),
        ("trigreason.services.tgi_cpu", {"TRIGREASON_TGI_CPU_CTX": "big"}, "TRIGREASON_TGI_CPU_CTX"),
        ("trigreason.services.tgi_cpu", {"TRIGREASON_TGI_CPU_MODEL": "/nowhere/m.gguf"}, "/nowhere/m.gguf"),
    ],
)
def test_a_bad_setting_is_one_line_and_status_2(module: str, env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_one_line_and_status_2() -> None:
    first = _start("trigreason.services.backend_sim", {"TRIGREASON_SIM_PORT": "0"})
    try:
        url = _wait_listening(first, timeout=30)[-1]
        port = url.split("http://127.0.0.1:", 1)[1].split()[0].split("/")[0].rstrip(")\"',")
        result = subprocess.run(
            [sys.executable, "-m", "trigreason.services.backend_sim"],
            env={**os.environ, "TRIGREASON_SIM_PORT": port},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    finally:
        _stop(first, signal.SIGTERM)
