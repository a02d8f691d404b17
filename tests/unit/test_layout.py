"""The layout README.md ("Layout") describes, and the import graph running one way: the services and their
runtime on top, the pure core logic below them, the wire contract (proto) at the bottom.

Read from the source with ``ast`` (nothing is imported), so a violation names the file and the line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("runtime", "gateway", "orchestrator", "trigger_evaluator", "worker", "tgi_cpu", "backend_sim")
# The pure core: decide/transitions, the trigger policies, what a worker reports. Stdlib, msgspec and proto.
PURE = {
    "orchestrator": ("_handlers", "transitions", "_accounting", "_answers", "_prompts"),
    "trigger_evaluator": (
        "_evaluator",
        "policies._registry",
        "policies._signals",
        "policies._builtin",
        "policies._trigreason",
        "policies._specreason",
        "policies._random",
        "policies._endpoints",
        "policies",
    ),
    "worker": ("_results",),
}
# The policy registry is pure and shared: the orchestrator and the gateway read it too.
POLICIES = "trigreason.services.trigger_evaluator.policies"
USER_FACING = ("cli", "eval", "runner", "stack", "profiles", "host", "nats_server", "datasets", "wan")


def _package_dir(service: str) -> Path:
    return ROOT / "services" / service / "trigreason" / "services" / service


def _module_name(path: Path) -> str:
    """``trigreason.…`` for a file of the root package or of a workspace member."""
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "proto":
        parts = parts[1:]
    elif parts[0] == "services":
        parts = parts[2:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``; relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from pkg import _private` names a private module too
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if a.name.startswith("_")]
    return found


def _files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py"))


def _third_party_or_stdlib(name: str) -> bool:
    return not name.startswith("trigreason")


def test_the_top_level_is_the_documented_one() -> None:
    for entry in ("proto", "services", "infra", "k8s", "tests", "pyproject.toml", "README.md"):
        assert (ROOT / entry).exists(), entry
    for service in SERVICES:
        assert (_package_dir(service) / "__init__.py").is_file(), service
        assert (ROOT / "services" / service / "pyproject.toml").is_file(), service
    assert (ROOT / "proto" / "trigreason" / "proto" / "_v1.py").is_file()
    # Moved, not copied; and `trigreason` is a PEP 420 namespace package shared by the members.
    assert not (ROOT / "trigreason" / "services").exists()
    assert not (ROOT / "trigreason" / "proto").exists()
    for portion in [ROOT, ROOT / "proto", *(ROOT / "services" / s for s in SERVICES)]:
        assert not (portion / "trigreason" / "__init__.py").exists(), portion
    assert not any(
        (ROOT / "services" / s / "trigreason" / "services" / "__init__.py").exists() for s in SERVICES
    )


def test_proto_depends_on_msgspec_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"msgspec"}
    for path in _files(ROOT / "proto"):
        for line, name in _imports(path):
            top = name.split(".")[0]
            assert top in allowed or name.startswith("trigreason.proto"), f"{path}:{line} imports {name}"


@pytest.mark.parametrize("service", sorted(PURE))
def test_the_pure_core_imports_only_proto(service: str) -> None:
    allowed = set(sys.stdlib_module_names) | {"msgspec"}
    for module in PURE[service]:
        rel = module.replace(".", "/")
        path = _package_dir(service) / (f"{rel}/__init__.py" if module == "policies" else f"{rel}.py")
        for line, name in _imports(path):
            own = name.removeprefix(f"trigreason.services.{service}.") in PURE[service]
            shared = name == POLICIES or name.startswith(POLICIES + ".")
            assert name.split(".")[0] in allowed or name.startswith("trigreason.proto") or own or shared, (
                f"{path}:{line} imports {name}: the pure core is stdlib, msgspec and proto only"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_proto_the_runtime_and_itself_only(service: str) -> None:
    allowed: tuple[str, ...] = (
        "trigreason.proto",
        "trigreason.services.runtime",
        f"trigreason.services.{service}",
        POLICIES,
    )
    for path in _files(_package_dir(service)):
        for line, name in _imports(path):
            if _third_party_or_stdlib(name):
                continue
            assert name.startswith(allowed), f"{path}:{line} imports {name}"


def test_no_module_imports_another_packages_private_module() -> None:
    paths = _files(ROOT / "trigreason", ROOT / "proto", ROOT / "services", ROOT / "tests", ROOT / "bench")
    for path in paths:
        module = _module_name(path) if not path.is_relative_to(ROOT / "tests") else "tests"
        for line, name in _imports(path):
            if not name.startswith("trigreason."):
                continue
            parts = name.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])  # the package whose private module this is
                    assert module == owner or module.startswith(owner + "."), (
                        f"{path}:{line} imports {name}, private to {owner}"
                    )
                    break


def test_nothing_imports_bare_services_or_proto() -> None:
    for path in _files(
        ROOT / "trigreason", ROOT / "proto", ROOT / "services", ROOT / "tests", ROOT / "bench"
    ):
        for line, name in _imports(path):
            assert name.split(".")[0] not in ("services", "proto"), f"{path}:{line} imports {name}"


def test_services_never_import_the_user_facing_package() -> None:
    for path in _files(ROOT / "proto", ROOT / "services"):
        for line, name in _imports(path):
            parts = name.split(".")
            assert not (parts[0] == "trigreason" and len(parts) > 1 and parts[1] in USER_FACING), (
                f"{path}:{line} imports {name}"
            )


def test_no_reference_to_a_design_document_outside_the_repository() -> None:
    """Code and docs point to documents in the repository (README.md, docs/), never to a DESIGN one."""
    offenders = []
    for folder in ("trigreason", "proto", "services", "tests", "bench", "docs", "infra", "k8s"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".md") or path == Path(__file__):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "DESIGN" in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}")
    offenders += [f"README.md:{n}" for n, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1)
                  if "DESIGN" in line]  # fmt: skip
    assert not offenders, offenders
