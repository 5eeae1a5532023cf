"""Operator tools: the `breakglass` command line, `doctor`, the dev stack, the headless demo and progress lines.

May use everything in `services/` (they start the product and its emulators); nothing in `services/` imports them.
"""
