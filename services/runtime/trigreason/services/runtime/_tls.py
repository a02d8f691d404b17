"""TLS for NATS clients: a verifying context from the settings' files, with errors that name the setting."""

from __future__ import annotations

import os
import ssl

from trigreason.proto import ConfigError

__all__ = ["check_tls_files", "tls_context"]


def check_tls_files(*, ca: str | None, cert: str | None, key: str | None, prefix: str) -> None:
    """Each file named exists and is readable; a certificate comes with its key."""
    for name, path in (("CA", ca), ("CERT", cert), ("KEY", key)):
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"{prefix}{name}={path}: no such readable file")
    if (cert is None) != (key is None):
        raise ConfigError(f"{prefix}CERT and {prefix}KEY go together (a client certificate and its key)")


def tls_context(*, ca: str | None, cert: str | None, key: str | None, prefix: str) -> ssl.SSLContext:
    """Verifies the server against ``ca`` (else the system's roots) and presents ``cert``/``key`` if given."""
    check_tls_files(ca=ca, cert=cert, key=key, prefix=prefix)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{prefix}CA={ca}: not a PEM CA certificate ({exc})") from exc
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{prefix}CERT={cert} / {prefix}KEY: not a matching PEM certificate and key ({exc})"
            ) from exc
    return context
