"""A CPU inference server speaking Hugging Face TGI's protocol, on llama.cpp (``trigreason serve tgi-cpu``).

``LlamaEngine`` generates with per-token log-probabilities, top-n tokens, stop sequences and K/V prefix
reuse; ``make_app`` puts TGI's HTTP routes in front of it (``/generate``, ``/generate_stream``, ``/``,
``/info``, ``/health``, ``/metrics``).
"""

from ._engine import (
    FinishReason,
    Generation,
    LlamaEngine,
    PrefillToken,
    SamplingParams,
    StreamToken,
    TokenInfo,
    available_cpus,
)
from ._errors import EngineError, GenerationCancelled, InputValidationError, Overloaded
from ._main import main
from ._model_ref import resolve_model_path
from ._server import make_app, start_server
from ._settings import TgiCpuSettings

__all__ = [
    "EngineError",
    "FinishReason",
    "Generation",
    "GenerationCancelled",
    "InputValidationError",
    "LlamaEngine",
    "Overloaded",
    "PrefillToken",
    "SamplingParams",
    "StreamToken",
    "TgiCpuSettings",
    "TokenInfo",
    "available_cpus",
    "main",
    "make_app",
    "resolve_model_path",
    "start_server",
]
