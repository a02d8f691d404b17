"""``python -m trigreason.services.trigger_evaluator``: the trigger-evaluator, configured from the environment
(``TRIGREASON_*``: docs/cluster.md). Its image's entry point, and what
``trigreason serve trigger-evaluator`` runs."""

import sys

from ._serve import main

sys.exit(main())
