"""Everything between the entry points (bot/, jobs/) and the pure core (policies/, cards/), in rooms:
workflow/ (the use cases), clients/ (outside systems, behind ports.py), state/ (Redis and the policy file),
ops/ (the CLI and tools), triage/ (prefill suggestions), emulators/ (fake outside systems for dev, demo and tests).
The modules at this level are shared by every room; composition.py wires the rooms together.
"""
