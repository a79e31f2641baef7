"""Config blocks shared by every entry point (ask, repl, eval, training): policy and browser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from env.browser import BrowserEnv, EnvConfig
from env.cache import PageCache
from env.limits import BrowseLimits
from env.sources import PageSource, open_source

DEFAULT_POLICY = "bc-gemma3-270m"
"""The shipped behaviour-cloned policy (webagent/policies/, see its MODEL_CARD.md)."""


@dataclass
class PolicyArgs:
    """Which model acts and how it samples."""

    model: str = DEFAULT_POLICY
    """Model spec: bc-gemma3-270m (trained, shipped) | gemma3-270m | smollm2-135m (base models,
    few-shot) | a policy checkpoint dir (base + LoRA) | a HF model dir or cached hub id | a .gguf."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 keeps the whole distribution)."""
    seed: int = 0
    """Base seed: episode i samples with seed + i."""
    examples: int | None = None
    """Worked example steps shown in each prompt (8 = two episodes). Default: what a trained
    policy was trained with (0), else 8 (few-shot base model)."""
    chat: bool = True
    """Use the model's chat template when it has one."""
    admissible_only: bool = True
    """Decode only commands the browser lists as admissible (and extractive answers citing a
    quote): a decoding aid, not a rule of the environment; --no-admissible-only lets the
    policy write anything (invalid commands then cost an action)."""
    free_answers: bool | None = None
    """Under the aid, let the answer be free text instead of a quote span. Default: what a
    trained policy was taught (free when its data had uncited recall answers), else extractive."""
    int8: bool = False
    """Sample with int8 weights in the decoder body (webagent.int8: ~3-4x faster episodes on a
    CPU; answers can differ from fp32, see bench/README.md). Training keeps fp32."""


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
    from webagent.models import checkpoint_meta, load
    from webagent.policy import HFPolicy
    from webagent.prompts import format_for

    loaded = load(args.model)
    model = loaded.model
    if args.int8:
        from webagent.int8 import quantize

        model = quantize(model)
    trained = checkpoint_meta(loaded.source_path)
    examples = args.examples
    if examples is None:
        examples = trained.get("prompt", {}).get("examples", 8)
    fmt = format_for(loaded.tokenizer, prefer_chat=args.chat, examples=examples)
    free = args.free_answers
    if free is None:
        free = trained.get("answers") == "free"
    name = f"{loaded.name}+int8" if args.int8 else loaded.name  # records say which arithmetic
    return HFPolicy(model, loaded.tokenizer, name=name, prompt_format=fmt,
                    free_answers=free)  # fmt: skip


def sampling_of(args: PolicyArgs):
    from webagent.policy import Sampling

    return Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def run_config(args: PolicyArgs, batch_size: int = 8, **overrides):
    """The episode runner's settings a PolicyArgs implies (sampling, decoding aid)."""
    from webagent.rollout import RunConfig

    return RunConfig(batch_size=batch_size, sampling=sampling_of(args),
                     admissible_only=args.admissible_only, **overrides)  # fmt: skip
