"""``python -m trigreason.services.tgi_cpu``: the CPU inference server (see ``_main.py``). Its image's entry
point, and what ``trigreason serve tgi-cpu`` runs."""

import sys

from ._main import main

sys.exit(main())
