"""The WebGPT text-browser environment: commands, pages, sources, observations, records."""

from env.browser import BrowserEnv, EnvConfig
from env.record import EpisodeRecord, Step

__all__ = ["BrowserEnv", "EnvConfig", "EpisodeRecord", "Step"]
