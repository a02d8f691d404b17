"""Each per-service image's package set, installed and measured without a Docker engine.

For every Dockerfile target, the same ``uv sync --frozen --no-dev --no-editable --package <member>`` as the
image's build stage (bytecode compiled, as the images do), into an empty venv; then its distributions and
the size of its site-packages. The base image (python:3.11-slim-bookworm, and libgomp1 for tgi-cpu) comes
on top of that and is the same for every image.

    make package-sets                                                          # a table and the package lists
    uv run --frozen --no-sync python -m tests.deploy.package_sets --markdown   # the table for docs/deploy.md

The tgi-cpu image's llama-cpp-python is built from source when uv's cache has no wheel for it (minutes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.deploy.service_images import IMAGES, Image, PackageSet, build_venv, measure

CLI = Image("cli", "trigreason", "trigreason.cli")  # the default target: the whole user-facing package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown only")
    parser.add_argument("--no-cli", action="store_true", help="leave out the cli image")
    parser.add_argument("images", nargs="*", help="Dockerfile targets (default: all)")
    args = parser.parse_args()
    images = [*IMAGES, *([] if args.no_cli else [CLI])]
    if args.images:
        images = [i for i in images if i.target in args.images]
    sets: list[PackageSet] = []
    with tempfile.TemporaryDirectory(prefix="trigreason-package-sets-") as tmp:
        for image in images:
            started = time.perf_counter()
            venv = Path(tmp) / image.target
            build_venv(image, venv, compile_bytecode=True)
            sets.append(measure(image, venv))
            print(f"{image.name}: built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.markdown:
        print("| image | packages | size (MB) | heavy packages |")
        print("|---|---|---|---|")
        for s in sets:
            print(
                f"| `{s.image.name}` | {len(s.distributions)}: {_names(s)} | {s.size_mb:.1f} | {_heavy(s)} |"
            )
        return 0
    width = max(len(s.image.name) for s in sets)
    print(f"{'image':<{width}}  wheels  size (MB)")
    for s in sets:
        print(f"{s.image.name:<{width}}  {len(s.distributions):>6}  {s.size_mb:>9.1f}")
    for s in sets:
        print(f"\n{s.image.name} ({len(s.distributions)}):")
        for dist in s.distributions:
            print(f"  {dist}")
    return 0


def _names(s: PackageSet) -> str:
    return ", ".join(d.split("==", 1)[0] for d in s.distributions)


def _heavy(s: PackageSet) -> str:
    names = {d.split("==", 1)[0] for d in s.distributions}
    found = [n for n in ("llama-cpp-python", "numpy", "matplotlib") if n in names]
    return ", ".join(found) or "none"


if __name__ == "__main__":
    sys.exit(main())
