"""Print the orchestrator state diagram: ``python -m trigreason.core > docs/state-machine.md``."""

from .transitions import render_diagram

print(render_diagram(), end="")
