"""The browser's settings (`EnvConfig`) and their JSON form, stored in every record's meta.env.

Its own module so records can check stored settings without importing the browser (and
gymnasium); `env.browser` re-exports these names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from env.fields import typed_fields
from env.limits import BrowseLimits, LimitError


@dataclass(frozen=True)
class EnvConfig:
    """How the browser behaves; sizes and budgets live in `limits`."""

    limits: BrowseLimits = field(default_factory=BrowseLimits)
    search_results: int = 10
    """Hits listed on a search results page."""
    answer_on_budget: bool = True
    """When actions run out, go to the answer phase (True) or truncate the episode (False)."""
    hide_question_pages: bool = False
    """WebGPT eval hygiene: blank any page sharing a 10-gram with the question."""
    blocked_domains: tuple[str, ...] = ()
    """Domains (and their subdomains) dropped from results and refused on click."""
    render_width_chars: int = 100
    """Wrap width the pages were rendered at (tells `admissible` where paragraphs end)."""


def config_to_dict(config: EnvConfig) -> dict:
    """JSON form stored in every record, so replay rebuilds the same browser."""
    d = asdict(config)
    d["blocked_domains"] = list(d["blocked_domains"])
    return d


def config_from_dict(data: dict, *, strict: bool = True) -> EnvConfig:
    """The inverse of `config_to_dict`, each field checked: ValueError names the field (a
    record's stored settings are read from disk, so they are outside input). `strict` refuses
    settings this version does not have (replay must rebuild the same browser); reading a
    record for anything else ignores them."""
    known = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = sorted(set(data) - known) if isinstance(data, dict) else []
    if unknown and strict:
        raise ValueError(f"{unknown[0]}: not a browser setting")
    fields = typed_fields(EnvConfig, data)
    try:
        fields["limits"] = BrowseLimits(
            **typed_fields(BrowseLimits, fields.get("limits", {}), "limits")
        )
    except LimitError as exc:
        raise ValueError(f"limits.{exc.field}: {exc.problem}") from None
    fields["blocked_domains"] = tuple(fields.get("blocked_domains", ()))
    return EnvConfig(**fields)
