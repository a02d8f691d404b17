"""The one error type of model provisioning; ``code`` says what went wrong."""

from __future__ import annotations

from trigreason.proto import TrigReasonError

__all__ = ["ModelError"]


class ModelError(TrigReasonError):
    """A model could not be provisioned. Codes:

    ``model_not_found`` (unknown name, missing file, 404 on the hub), ``model_not_in_index`` (a package or
    version the index does not have), ``model_part_missing``, ``model_hash_mismatch`` (a wheel or the
    joined file), ``model_size_mismatch``, ``model_disk_full``, ``model_download_failed`` (network,
    retryable), ``model_unauthorized`` (the hub wants a token), ``model_bad_index`` (an unreadable page
    or wheel), ``model_io_error`` (a local write failed).
    """

    code = "model_error"
