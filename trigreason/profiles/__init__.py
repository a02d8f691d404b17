"""Named parameter profiles: what ``trigreason calibrate`` writes and ``solve``, ``eval`` and the gateway
accept with ``--profile`` (``TRIGREASON_PROFILE`` for the gateway).

A profile is a JSON file ``{"name": str, "params": {SessionParams fields...}, ...}``; extra keys (how it was
calibrated) are kept for people and ignored here. ``--profile`` takes a path, or a name looked up in
``$TRIGREASON_PROFILE_DIR``, then the user's config dir (``~/.config/trigreason/profiles``), then the
profiles shipped with the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from trigreason.proto import ConfigError
from trigreason.services.gateway import profile_file

__all__ = ["load_profile", "profile_dirs", "user_profile_path"]


def user_profile_path(name: str) -> Path:
    return Path(platformdirs.user_config_dir("trigreason")) / "profiles" / f"{name}.json"


def profile_dirs(env: Mapping[str, str]) -> list[Path]:
    dirs = [Path(env["TRIGREASON_PROFILE_DIR"])] if env.get("TRIGREASON_PROFILE_DIR") else []
    dirs.append(user_profile_path("x").parent)
    dirs.append(Path(str(resources.files("trigreason.profiles"))))
    return dirs


def load_profile(ref: str, *, env: Mapping[str, str]) -> dict[str, Any]:
    """The parameter overrides of profile ``ref`` (a path or a name), validated against SessionParams."""
    path = Path(ref)
    if not path.is_file():
        if "/" in ref or ref.endswith(".json"):
            raise ConfigError(f"profile file {ref} does not exist")
        candidates = [d / f"{ref}.json" for d in profile_dirs(env)]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ConfigError(
                f"no profile named {ref!r} (looked in {', '.join(str(c.parent) for c in candidates)})"
            )
        path = found
    return profile_file(str(path))  # read and checked as the gateway reads a profile file
