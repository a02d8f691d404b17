"""The gateway's up-front check against the inference servers' published limits (pure)."""

from __future__ import annotations

import json

import pytest

from trigreason.proto import BackendLimits, SessionParams
from trigreason.services.gateway import HttpError, check_limits

LRM = BackendLimits(role="lrm", max_top_n_tokens=20, max_total_tokens=4096, backend="tgi:http://lrm")
SRM = BackendLimits(role="srm", max_top_n_tokens=5, max_total_tokens=2048)


def _refused(params: SessionParams, where: str = "params") -> tuple[str, str]:
    with pytest.raises(HttpError) as caught:
        check_limits(params, {"srm": SRM, "lrm": LRM}, where)
    assert caught.value.status == 422
    assert caught.value.text is not None
    error = json.loads(caught.value.text)["error"]
    return error["code"], error["message"]


def test_a_judge_top_n_beyond_the_lrm_servers_limit_is_refused_naming_both() -> None:
    code, message = _refused(SessionParams(policy="specreason", judge_top_n=40), "trigreason.params")
    assert code == "beyond_backend_limit"
    assert message.startswith("trigreason.params.judge_top_n: 40 is beyond")
    assert "max_top_n_tokens 20" in message
    assert "LRM inference server (tgi:http://lrm)" in message


def test_a_step_cap_beyond_a_servers_total_is_refused() -> None:
    code, message = _refused(SessionParams(policy="srm-only", step_max_tokens=2048))
    assert code == "beyond_backend_limit"
    assert "params.step_max_tokens: 2048" in message
    assert "max_total_tokens 2048" in message
    assert "at most 2047" in message


def test_within_the_limits_or_without_them_nothing_is_refused() -> None:
    check_limits(SessionParams(policy="specreason", judge_top_n=20), {"srm": SRM, "lrm": LRM})
    # Only SpecReason asks for top tokens, only the roles a policy calls count, unknown limits refuse nothing.
    check_limits(SessionParams(policy="trigreason", judge_top_n=40), {"srm": SRM, "lrm": LRM})
    check_limits(SessionParams(policy="lrm-only", step_max_tokens=3000), {"srm": SRM, "lrm": LRM})
    check_limits(SessionParams(policy="specreason", judge_top_n=100, step_max_tokens=4096), {})
