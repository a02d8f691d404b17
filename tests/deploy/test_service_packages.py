"""Every per-service image's package set, without a Docker engine: each workspace member's locked
dependencies installed into an empty venv (what its Dockerfile target's ``uv sync --package`` installs),
its entry point found there, and the lean images (gateway, orchestrator, trigger-evaluator) free of
llama.cpp, numpy and matplotlib. The venvs come from uv's cache (offline when it can), a few seconds each.

The tgi-cpu venv is built without its ``llama`` extra (building llama.cpp takes minutes); that the image
gets llama-cpp-python is checked on the lock file instead, and the entry point imports llama.cpp only
when it loads a model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.service_images import (
    FORBIDDEN_DISTRIBUTIONS,
    FORBIDDEN_IN_LEAN,
    IMAGES,
    ROOT,
    Image,
    build_venv,
    locked_distributions,
)

pytestmark = pytest.mark.timeout(900)

# Run in the image's venv: import the service package, find (not run) its __main__, and report which of
# the heavy packages could be imported there.
_PROBE = """
import importlib, importlib.util, json, sys
module = sys.argv[1]
package = importlib.import_module(module)
main = importlib.util.find_spec(module + ".__main__")
print(json.dumps({
    "package": package.__file__,
    "main": main.origin if main else None,
    "importable": [n for n in sys.argv[2:] if importlib.util.find_spec(n) is not None],
}))
"""


@pytest.fixture(scope="module", params=IMAGES, ids=lambda image: image.target)
def image_venv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Image, Path]:
    image: Image = request.param
    venv = tmp_path_factory.mktemp(image.target) / "venv"
    build_venv(image, venv, with_extras=False)
    return image, venv


def test_each_image_holds_its_entry_point_and_no_more_than_it_needs(image_venv: tuple[Image, Path]) -> None:
    image, venv = image_venv
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _PROBE, image.module, *FORBIDDEN_IN_LEAN],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=venv,  # not the repository: nothing importable from the checkout
    )
    assert result.returncode == 0, f"{image.name}: {image.module} does not import:\n{result.stderr}"
    found = json.loads(result.stdout)
    # Imported from the venv's installed wheel, not from the source tree.
    assert str(venv) in found["package"]
    assert found["main"] is not None, f"{image.name}: no {image.module}.__main__"
    assert found["main"].startswith(str(venv))
    if image.lean:
        assert found["importable"] == [], f"{image.name} holds {found['importable']}"


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.target)
def test_the_lock_gives_the_lean_images_no_heavy_packages(image: Image) -> None:
    locked = locked_distributions(image)
    assert "msgspec" in locked  # the export did list the set
    heavy = locked & set(FORBIDDEN_DISTRIBUTIONS)
    if image.lean:
        assert not heavy, f"{image.name}: {sorted(heavy)}"
    if image.target == "tgi-cpu":
        assert "llama-cpp-python" in locked  # the `llama` extra: the image serves models
    if image.target != "tgi-cpu":
        assert "llama-cpp-python" not in locked


def test_every_service_member_has_an_image_and_an_entry_point() -> None:
    members = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")} - {"runtime"}
    assert {image.module.rsplit(".", 1)[1] for image in IMAGES} == members
    for image in IMAGES:
        folder = image.module.rsplit(".", 1)[1]
        main = ROOT / "services" / folder / "trigreason" / "services" / folder / "__main__.py"
        assert main.is_file(), main
        assert f'name = "{image.member}"' in (main.parents[3] / "pyproject.toml").read_text()
