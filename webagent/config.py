"""Config blocks shared by every entry point (ask, repl, eval, training): policy and browser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from env.browser import BrowserEnv, EnvConfig
from env.cache import PageCache
from env.limits import BrowseLimits
from env.sources import PageSource, open_source


@dataclass
class PolicyArgs:
    """Which model acts and how it samples."""

    model: str = "gemma3-270m"
    """Model spec: gemma3-270m | smollm2-135m | a HF model dir or cached hub id | a .gguf file |
    a policy checkpoint dir (base model + LoRA adapter)."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 keeps the whole distribution)."""
    seed: int = 0
    """Base seed: episode i samples with seed + i."""
    examples: int = 8
    """Worked example steps shown in each prompt (few-shot; 8 = two episodes); 0 for a trained policy."""
    chat: bool = True
    """Use the model's chat template when it has one."""


@dataclass
class EnvArgs:
    """Where pages come from and the browser's budgets."""

    source: str = "wiki"
    """Page source: wiki | zim:PATH | jsonl:PATH | web | cache."""
    max_actions: int = 20
    """Actions per episode before the answer phase is forced. The environment's own default is
    WebGPT's 100 (long-form answers); a factoid answer takes ~4 (search, click, quote, end)."""
    window_lines: int = 10
    """Page lines shown per observation."""
    searx: str | None = None
    """SearxNG-compatible endpoint for live search (with --source web); default $WEBAGENT_SEARX_URL."""
    allow_private: bool = False
    """Let the live browser open private, loopback and link-local addresses (unsafe)."""
    page_cache: str | None = None
    """Page cache directory; default $WEBAGENT_CACHE/pages or ~/.cache/webagent/pages."""

    def env_config(self) -> EnvConfig:
        return EnvConfig(
            limits=BrowseLimits(max_actions=self.max_actions, window_lines=self.window_lines)
        )

    def open(self) -> tuple[PageSource, PageCache]:
        source = open_source(self.source, searx=self.searx, allow_private=self.allow_private)
        return source, PageCache(self.page_cache)

    def env_factory(self) -> Callable[[], BrowserEnv]:
        """Opens the source once; each call makes a fresh environment over it."""
        source, cache = self.open()
        return partial(BrowserEnv, source, self.env_config(), cache=cache)


def load_policy(args: PolicyArgs):
    """The HFPolicy a PolicyArgs names (imports torch lazily: the CLI starts fast)."""
    from webagent.models import load
    from webagent.policy import HFPolicy
    from webagent.prompts import format_for

    loaded = load(args.model)
    fmt = format_for(loaded.tokenizer, prefer_chat=args.chat, examples=args.examples)
    return HFPolicy(loaded.model, loaded.tokenizer, name=loaded.name, prompt_format=fmt)


def sampling_of(args: PolicyArgs):
    from webagent.policy import Sampling

    return Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
