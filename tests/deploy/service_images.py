"""The per-service images and their package sets, checked without a Docker engine.

Each image (a Dockerfile target) is built from one workspace member's locked dependencies:
``uv sync --frozen --no-dev --no-editable --package <member>``. The same command with
``UV_PROJECT_ENVIRONMENT=<empty folder>`` gives the package set an image would hold, so its entry point
can be imported and its size measured on a machine without Docker (tests/deploy/test_service_packages.py,
tests/deploy/package_sets.py, `make package-sets`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FORBIDDEN_DISTRIBUTIONS",
    "FORBIDDEN_IN_LEAN",
    "IMAGES",
    "ROOT",
    "WORKSPACE_MEMBERS",
    "Image",
    "PackageSet",
    "build_venv",
    "locked_distributions",
    "measure",
    "site_packages",
    "uv",
]

ROOT = Path(__file__).resolve().parents[2]

# What the lean images (gateway, orchestrator, trigger-evaluator) must not hold: import names and the
# distributions that bring them.
FORBIDDEN_IN_LEAN = ("llama_cpp", "numpy", "matplotlib")
FORBIDDEN_DISTRIBUTIONS = ("llama-cpp-python", "numpy", "matplotlib")


@dataclass(frozen=True, slots=True)
class Image:
    """One Dockerfile target: the image ``trigreason-<target>``."""

    target: str  # the Dockerfile target, e.g. "trigger-evaluator"
    member: str  # the workspace member it is built from, e.g. "trigreason-trigger-evaluator"
    module: str  # its entry point: python -m <module>
    extras: tuple[str, ...] = ()  # the member's extras the image installs
    lean: bool = False  # holds none of FORBIDDEN_IN_LEAN

    @property
    def name(self) -> str:
        return f"trigreason-{self.target}"


IMAGES = (
    Image("gateway", "trigreason-gateway", "trigreason.services.gateway", lean=True),
    Image("orchestrator", "trigreason-orchestrator", "trigreason.services.orchestrator", lean=True),
    Image(
        "trigger-evaluator",
        "trigreason-trigger-evaluator",
        "trigreason.services.trigger_evaluator",
        lean=True,
    ),
    Image("worker", "trigreason-worker", "trigreason.services.worker"),
    Image("tgi-cpu", "trigreason-tgi-cpu", "trigreason.services.tgi_cpu", extras=("llama",)),
    Image("backend-sim", "trigreason-backend-sim", "trigreason.services.backend_sim"),
)


# Every package of the uv workspace (the root and its members).
WORKSPACE_MEMBERS = (
    "trigreason",
    "trigreason-proto",
    "trigreason-runtime",
    *(image.member for image in IMAGES),
)


def uv() -> str:
    found = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if found is None:
        raise FileNotFoundError("uv is not on PATH (nor in ~/.local/bin)")
    return found


def _uv_env(venv: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    if venv is not None:
        env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    return env


def _extra_flags(extras: tuple[str, ...]) -> list[str]:
    return [flag for extra in extras for flag in ("--extra", extra)]


def build_venv(
    image: Image,
    venv: Path,
    *,
    with_extras: bool = True,
    compile_bytecode: bool = False,
    timeout: float = 900,
) -> None:
    """Install exactly ``image``'s locked package set into the new venv ``venv`` (the Dockerfile's
    ``uv sync``, but into this folder). From uv's cache when it can (offline), else from the index.
    ``compile_bytecode``: as the images do (``UV_COMPILE_BYTECODE=1``), for measuring their size."""
    command = [
        uv(),
        "sync",
        "--frozen",
        "--no-dev",
        "--no-editable",
        "--package",
        image.member,
        *(_extra_flags(image.extras) if with_extras else []),
        *(["--compile-bytecode"] if compile_bytecode else []),
        # uv reuses a wheel it built from a workspace folder until that folder's pyproject.toml changes:
        # without these, an edited source file would be tested as the cached, older wheel.
        *(flag for member in WORKSPACE_MEMBERS for flag in ("--reinstall-package", member)),
        "--python",
        sys.executable,
        "--quiet",
    ]
    result = None
    for offline in (["--offline"], []):
        result = subprocess.run(
            [*command, *offline],
            cwd=ROOT,
            env=_uv_env(venv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode == 0:
            return
    assert result is not None
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")


def locked_distributions(image: Image) -> set[str]:
    """The names of the third-party distributions that uv.lock gives ``image`` (``uv export --package``,
    nothing installed); the workspace members it also gets are left out."""
    result = subprocess.run(
        [
            uv(),
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--package",
            image.member,
            *_extra_flags(image.extras),
        ],
        cwd=ROOT,
        env=_uv_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = (line.strip() for line in result.stdout.splitlines())
    return {line.split("==", 1)[0] for line in lines if line and not line.startswith(("#", "-e", "."))}


@dataclass(frozen=True, slots=True)
class PackageSet:
    image: Image
    distributions: tuple[str, ...]  # name==version of what is installed in the venv
    site_packages_bytes: int

    @property
    def size_mb(self) -> float:
        return self.site_packages_bytes / 2**20


def site_packages(venv: Path) -> Path:
    (path,) = (venv / "lib").glob("python3*/site-packages")
    return path


def measure(image: Image, venv: Path) -> PackageSet:
    """What is installed in ``venv`` (built by :func:`build_venv`): distributions and the size on disk of
    its site-packages (``du``, bytecode included as the image compiles it)."""
    root = site_packages(venv)
    distributions = []
    for info in sorted(root.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        distributions.append(f"{name.lower().replace('_', '-')}=={version}")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return PackageSet(image, tuple(sorted(distributions)), size)
