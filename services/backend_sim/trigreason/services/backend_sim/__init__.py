"""Load simulator speaking TGI's protocol, for benchmarks of the bus only: its text has the shape of
reasoning steps (lengths, log-probabilities, hesitations, final answers) but no meaning, so it never
stands in for a model in correctness tests."""

from ._main import main
from ._model import SimGeneration, SimParams, SimToken, Simulator
from ._server import make_app, start_server
from ._settings import SimSettings, StepLength

__all__ = [
    "SimGeneration",
    "SimParams",
    "SimSettings",
    "SimToken",
    "Simulator",
    "StepLength",
    "main",
    "make_app",
    "start_server",
]
