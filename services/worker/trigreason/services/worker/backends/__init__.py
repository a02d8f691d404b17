"""Inference backends behind one async interface."""

from ._factory import BackendProtocol, detect_protocol, make_backend
from ._http import BackendSettings
from ._interface import Backend, Generation, GenerationRequest, JudgeResult, ScoreResult
from ._openai import OpenAIBackend
from ._pool import PoolStats, ReplicaPool, ReplicaSource, ReplicaStats, parse_backend_url
from ._routing import Router, RouterSettings, rendezvous_order
from ._tgi import TgiBackend

__all__ = [
    "Backend",
    "BackendProtocol",
    "BackendSettings",
    "Generation",
    "GenerationRequest",
    "JudgeResult",
    "OpenAIBackend",
    "PoolStats",
    "ReplicaPool",
    "ReplicaSource",
    "ReplicaStats",
    "Router",
    "RouterSettings",
    "ScoreResult",
    "TgiBackend",
    "detect_protocol",
    "make_backend",
    "parse_backend_url",
    "rendezvous_order",
]
