"""``python -m trigreason.services.backend_sim``: the load simulator (see ``_main.py``). Its image's entry
point, and what ``trigreason serve backend-sim`` runs."""

import sys

from ._main import main

sys.exit(main())
