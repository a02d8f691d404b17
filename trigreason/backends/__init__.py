"""Inference backends behind one async interface."""

from ._interface import Backend, Generation, GenerationRequest, JudgeResult
from ._scripted import ScriptedBackend

__all__ = ["Backend", "Generation", "GenerationRequest", "JudgeResult", "ScriptedBackend"]
