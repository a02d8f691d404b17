"""Print the orchestrator state diagram (``make schemas`` writes it to docs/state-machine.md)."""

from .transitions import render_diagram

print(render_diagram(), end="")
