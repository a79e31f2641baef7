"""webagent: an offline-first, WebGPT-style browser-assisted question-answering agent.

Model loading lives in :mod:`webagent.models` (``from webagent.models import load``).
"""
