"""``python -m trigreason.services.orchestrator``: the orchestrator, configured from the environment
(``TRIGREASON_*``: docs/cluster.md). Its image's entry point, and what
``trigreason serve orchestrator`` runs."""

import sys

from ._serve import main

sys.exit(main())
