"""One way to start a server: ``trigreason serve NAME`` calls the same ``main`` as the service's image
(``python -m trigreason.services.<service>``), with its flags as overrides of the environment."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trigreason.cli import app
from trigreason.services import backend_sim, gateway, orchestrator, tgi_cpu, trigger_evaluator, worker

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ("gateway", "orchestrator", "trigger_evaluator", "worker", "tgi_cpu", "backend_sim")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append((args, kwargs))
        return 0


def _env_of(args: tuple[Any, ...]) -> Mapping[str, str]:
    envs = [a for a in args if isinstance(a, Mapping)]
    assert len(envs) == 1, args
    return envs[0]


@pytest.mark.parametrize(
    ("argv", "module", "overrides", "env"),
    [
        (["serve", "orchestrator", "--concurrency", "3"], orchestrator, {"concurrency": 3}, {}),
        (
            ["serve", "trigger-evaluator", "--nats-url", "nats://x:1", "--log-level", "DEBUG"],
            trigger_evaluator,
            {},
            {"TRIGREASON_NATS_URL": "nats://x:1", "TRIGREASON_LOG_LEVEL": "DEBUG"},
        ),
        (
            ["serve", "srm-worker", "--backend-url", "http://srm:1", "--concurrency", "2"],
            worker,
            {"concurrency": 2},
            {"TRIGREASON_SRM_URL": "http://srm:1"},
        ),
        (
            ["serve", "gateway", "--port", "0", "--profile", "local-qwen-coder"],
            gateway,
            {"port": 0},
            {"TRIGREASON_PROFILE": "local-qwen-coder"},
        ),
        (
            ["serve", "tgi-cpu", "--model", "tiny", "--threads", "1"],
            tgi_cpu,
            {"model": "tiny", "threads": 1},
            {},
        ),
        (["serve", "backend-sim", "--seed", "4"], backend_sim, {"seed": 4}, {}),
    ],
)
def test_serve_calls_the_images_entry_point(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    module: Any,
    overrides: dict[str, Any],
    env: dict[str, str],
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(module, "main", recorder)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    ((args, kwargs),) = recorder.calls
    extra = {k: v for k, v in kwargs.items() if k != "load_profile"}
    assert extra == overrides
    seen = _env_of(args)
    assert {k: seen.get(k) for k in env} == env
    if module is worker:
        assert args[0] == "srm"
    if module is gateway:
        assert callable(kwargs["load_profile"])  # profiles by name, as the CLI knows them


def test_an_entry_points_exit_status_is_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orchestrator, "main", lambda env, **_: 2)
    assert CliRunner().invoke(app, ["serve", "orchestrator"]).exit_code == 2


@pytest.mark.parametrize("service", ENTRY_POINTS)
def test_each_image_runs_its_packages_main(service: str) -> None:
    """``__main__.py`` does nothing but call ``main`` (so the CLI and the image cannot drift apart)."""
    path = ROOT / "services" / service / "trigreason" / "services" / service / "__main__.py"
    tree = ast.parse(path.read_text())
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert any(name == "main" for _, name in imported), imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "main" in calls
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert not defined, f"{path} defines {defined}: the entry point belongs in main"
