"""``python -m trigreason.services.gateway``: the HTTP gateway, configured from the environment
(``TRIGREASON_*``: docs/cluster.md; ``TRIGREASON_PROFILE`` is a profile file here). Its image's entry
point, and what ``trigreason serve gateway`` runs."""

import sys

from ._serve import main

sys.exit(main())
