"""Comparisons, the reward model and best-of-n: a learned judge of answer quality.

Depends on `env` only (episode records, quotes); `webagent` wires it to policies and the CLI.
"""
