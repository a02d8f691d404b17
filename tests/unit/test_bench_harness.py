"""The benchmarks' guards against measuring nothing: requests built through the gateway's validation, and
the check that turns an empty measurement into a failing exit status (bench/_harness.py)."""

from __future__ import annotations

import asyncio
import importlib
import math
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from trigreason.proto import SessionParams

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_harness")
    finally:
        sys.path.remove(str(BENCH))


def test_session_params_checks_bounds_as_the_gateway_does(harness: ModuleType) -> None:
    ok = harness.session_params(policy="srm-only", max_steps=100_000, max_tokens=65_536)
    assert isinstance(ok, SessionParams)
    assert (ok.policy, ok.max_tokens) == ("srm-only", 65_536)
    # What bench_scaling once built by hand: every request was dead-lettered and it measured 0 steps.
    with pytest.raises(msgspec.ValidationError, match="max_tokens"):
        harness.session_params(policy="srm-only", max_tokens=1_000_000)
    with pytest.raises(msgspec.ValidationError):
        harness.session_params(policy="no-such-policy")


@pytest.mark.parametrize("value", [0, 0.0, -1.0, math.nan, math.inf, None, "12", True])
def test_an_empty_measurement_is_named(harness: ModuleType, value: object) -> None:
    assert harness.empty_measurements({"steps/s": 412.0, "bad": value}) == ["bad"]


def test_exit_if_empty_fails_only_on_an_empty_measurement(harness: ModuleType) -> None:
    harness.exit_if_empty({"steps/s": 412.0, "ratio": 3.9, "steps": 7})
    with pytest.raises(SystemExit) as info:
        harness.exit_if_empty({"steps/s": math.nan, "ratio": 3.9})
    assert info.value.code == 1


def test_submit_refuses_a_request_the_orchestrator_would_dead_letter(harness: ModuleType) -> None:
    bare = SessionParams(policy="srm-only", max_tokens=1_000_000)  # a bare Struct checks nothing
    with pytest.raises(Exception, match="max_tokens"):  # raised before anything is published
        asyncio.run(harness.submit(None, "s1", "What is 2 + 2?", bare))
