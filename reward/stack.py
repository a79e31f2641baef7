"""The transformers releases webagent is tested with, checked where models are loaded.

transformers renames and removes APIs every few releases (5.24 renamed the key/value cache
argument `past_key_values` to `cache`; an older release silently ignores `cache=` and decodes
without one). The tested range lives here and only here: `pyproject.toml` pins the same
string (a test keeps them equal) and :func:`check_transformers` refuses any other release
before a model loads, so an untested one fails with a clear message instead of wrong output.
It lives in `reward/` because both the policy (webagent) and the reward model load models,
and dependencies flow webagent -> reward.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import warnings

TRANSFORMERS_RANGE = ">=5.24,<5.25"
"""The transformers releases the test suite passed on (pyproject.toml pins the same)."""
ANY_TRANSFORMERS = "WEBAGENT_ANY_TRANSFORMERS"
"""Environment variable: set to 1 to run on an untested transformers release anyway."""


class UnsupportedTransformers(RuntimeError):
    """The installed transformers is outside :data:`TRANSFORMERS_RANGE`."""


def in_range(version: str, spec: str = TRANSFORMERS_RANGE) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec).contains(version, prereleases=True)


@functools.cache
def check_transformers() -> str:
    """The installed transformers version; raises :class:`UnsupportedTransformers` outside the
    tested range (unless ``$WEBAGENT_ANY_TRANSFORMERS=1``). Also hides the one deprecation
    warning our calls trigger but cannot avoid (see below)."""
    version = importlib.metadata.version("transformers")
    if not in_range(version) and os.environ.get(ANY_TRANSFORMERS) != "1":
        raise UnsupportedTransformers(
            f"webagent is tested with transformers{TRANSFORMERS_RANGE}, but {version} is "
            f"installed: pip install 'transformers{TRANSFORMERS_RANGE}' (or set "
            f"{ANY_TRANSFORMERS}=1 to try this release anyway)"
        )
    # peft (0.21) reads `model.is_gradient_checkpointing`, deprecated in transformers 5.23, when
    # it wraps a model; the warning is peft's to fix, and says nothing a webagent user can act on.
    warnings.filterwarnings(
        "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    return version
