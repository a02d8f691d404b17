"""``python -m trigreason.services.worker srm|lrm``: a worker of that role (or ``TRIGREASON_WORKER_ROLE``),
configured from the environment (``TRIGREASON_*``: docs/cluster.md, docs/backends.md). Its image's entry
point (one image serves both roles), and what ``trigreason serve srm-worker|lrm-worker`` runs."""

import os
import sys

from ._serve import main

_role = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRIGREASON_WORKER_ROLE", "")
if _role == "srm":
    sys.exit(main("srm"))
if _role == "lrm":
    sys.exit(main("lrm"))
print("usage: python -m trigreason.services.worker srm|lrm (or TRIGREASON_WORKER_ROLE)", file=sys.stderr)
sys.exit(2)
