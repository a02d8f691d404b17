"""``python -m trigreason.services.worker srm|lrm``: a worker of that role (or ``TRIGREASON_WORKER_ROLE``),
configured from the environment (``TRIGREASON_*``: docs/cluster.md, docs/backends.md). Its image's entry
point; one image serves both roles."""

import sys
from typing import cast

from trigreason.proto import Role
from trigreason.services.runtime import BusSettings, HostSettings, service_main

from ._serve import backend_from_env, serve

_role = sys.argv[1] if len(sys.argv) > 1 else None


def _main() -> int:
    import os

    role = _role or os.environ.get("TRIGREASON_WORKER_ROLE", "")
    if role not in ("srm", "lrm"):
        print(
            "usage: python -m trigreason.services.worker srm|lrm (or TRIGREASON_WORKER_ROLE)", file=sys.stderr
        )
        return 2
    return service_main(
        f"{role}-worker",
        lambda env, stop, provider: serve(
            cast(Role, role),
            backend_from_env(cast(Role, role), env),
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env),
            stop=stop,
            tracer_provider=provider,
        ),
    )


sys.exit(_main())
