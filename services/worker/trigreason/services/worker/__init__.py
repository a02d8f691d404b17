"""The SRM and LRM workers: one service, two roles.

A worker takes a ``GenerateStep`` (on the LRM also a ``JudgeStep``), calls its inference backend through
an adapter (``backends``: TGI and OpenAI-compatible servers) and publishes what came back. ``step_generated``,
``judge_scored`` and ``step_failed`` build those results, for the worker and the in-process runner alike.
"""

from ._results import judge_scored, step_failed, step_generated
from ._serve import backend_from_env, main, serve
from ._service import Worker

__all__ = ["Worker", "backend_from_env", "judge_scored", "main", "serve", "step_failed", "step_generated"]
