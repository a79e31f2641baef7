"""A policy served over HTTP: any OpenAI-compatible server behind the episode runner's interface.

`--model openai:URL[#MODEL]` (URL like `http://127.0.0.1:8000/v1`) plays episodes through vLLM,
llama.cpp's `llama-server`, Ollama or `transformers serve`, with the same runner, records,
evals, replay and comparisons as a local model (`webagent.rollout` calls `prompt` and
`generate` and does not know the difference).

- **Prompts** are the ones `webagent.prompts` gives a local model: by default (`--chat`)
  the chat messages (system instruction, worked examples as user/assistant turns, the
  observation) go to `/v1/chat/completions`, where the server applies the model's own template;
  with `--no-chat` the base-model text prompt goes to `/v1/completions`. A recorded chat
  step's `prompt` is the JSON of its messages: exactly what was sent.
- **Log-probs** are asked for and recorded when the server returns them (vLLM, llama.cpp,
  Ollama; `transformers serve` ignores the field): per generated token, as the server reports
  them (vLLM: the raw model distribution unless started with
  `--logprobs-mode processed_logprobs`). Token ids are not returned by these APIs: `token_ids`
  stays None, so such records are not PPO data.
- **The decoding aid** (admissible commands) needs constrained decoding on the server. Chosen
  from what `/v1/models` says owns the model: vLLM (`owned_by: vllm`) gets a regex in
  `structured_outputs` (vLLM >= 0.10.2; the older `guided_regex` was removed in 0.12), llama.cpp
  (`owned_by: llamacpp`) a GBNF `grammar`. Others (Ollama, `transformers serve`, which rejects
  unknown request fields with 422) decode freely, and every record says so in
  `meta["endpoint"]["decoding_aid"]`.
- **Failures**: the server is probed (`GET /models`) before any episode starts, so a server
  that is down is a clear error at once; 429 and 5xx answers and dropped connections are
  retried with bounded exponential backoff (honouring a short `Retry-After`); other answers
  fail with the server's message. The API key comes from `$WEBAGENT_API_KEY` or
  `$OPENAI_API_KEY` and is sent as a bearer token, never recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from webagent.policy import Generation, Sampling, per_row
from webagent.prompts import FEW_SHOT_EXAMPLES, PromptFormat

SPEC_PREFIX = "openai:"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
"""Answers worth retrying: rate limits and a busy, restarting or overloaded server."""
API_KEY_VARIABLES = ("WEBAGENT_API_KEY", "OPENAI_API_KEY")
"""Environment variables read for the API key, first set wins."""

Route = Literal["chat", "completions"]
Aid = Literal["structured_outputs", "grammar", "off"]


class EndpointError(RuntimeError):
    """The server cannot be reached, or answered with an error or something unreadable."""


@dataclass(frozen=True)
class EndpointConfig:
    """How requests are sent and retried."""

    timeout_seconds: float = 300.0
    """Longest wait for one answer (a busy CPU server can take minutes for a batch)."""
    connect_timeout_seconds: float = 5.0
    """Longest wait to open a connection: a server that is down fails this fast."""
    max_retries: int = 5
    """Retries of one request after a 429/5xx answer or a dropped connection (then it fails)."""
    backoff_seconds: float = 0.5
    """First wait before a retry; doubled each time."""
    max_backoff_seconds: float = 10.0
    """Cap on one wait, also on a server's `Retry-After`."""
    max_concurrency: int = 8
    """Requests in flight at once (the runner's batch is sent concurrently, up to this)."""


@dataclass(frozen=True)
class EndpointSpec:
    """A parsed `openai:URL[#MODEL]`."""

    base_url: str
    """The API root, e.g. `http://127.0.0.1:8000/v1` (no trailing slash)."""
    model: str | None
    """The model name sent with each request; None: the first one `/models` lists."""
    route: Route | None
    """Forced by a URL ending in /chat/completions or /completions; None: from `--chat`."""


def is_endpoint_spec(spec: str) -> bool:
    return spec.startswith(SPEC_PREFIX)


def parse_spec(spec: str) -> EndpointSpec:
    """Check an `openai:URL[#MODEL]` spec (a flag: untrusted) before anything connects."""
    if not is_endpoint_spec(spec):
        raise ValueError(f"not an endpoint spec (expected {SPEC_PREFIX}URL[#MODEL]): {spec!r}")
    url, _, model = spec[len(SPEC_PREFIX) :].partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{spec!r}: the URL must be http(s)://HOST[:PORT]/PATH, e.g. "
            f"{SPEC_PREFIX}http://127.0.0.1:8000/v1#MODEL"
        )
    if parts.username or parts.password:
        raise ValueError(f"{spec!r}: put no credentials in the URL; set $WEBAGENT_API_KEY")
    if parts.query or parts.fragment:
        raise ValueError(f"{spec!r}: the URL takes no query string")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    base = url.rstrip("/")
    route: Route | None = None
    for tail, kind in (("/chat/completions", "chat"), ("/completions", "completions")):
        if base.endswith(tail):
            base, route = base[: -len(tail)], kind
            break
    if any(c.isspace() for c in url) or (model and any(c in model for c in "\n\r\t")):
        raise ValueError(f"{spec!r}: no whitespace in the URL or control characters in the model")
    return EndpointSpec(base, model.strip() or None, route)


def api_key() -> str | None:
    for name in API_KEY_VARIABLES:
        if value := os.environ.get(name, "").strip():
            return value
    return None


class EndpointClient:
    """JSON over HTTP with retries: the only place that talks to the server."""

    def __init__(self, base_url: str, config: EndpointConfig = EndpointConfig()):
        self.base_url = base_url
        self.config = config
        headers = {"Authorization": f"Bearer {key}"} if (key := api_key()) else {}
        self._http = httpx.Client(
            base_url=base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=max(1, config.max_concurrency)),
        )

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[dict]:
        """The health probe: `GET /models`. A refused connection fails at once (no retries: the
        server is down, waiting will not help); a server still loading (503) is waited for."""
        data = self._request("GET", "models", None, retry_connect=False)
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise EndpointError(
                f"{self.base_url}/models: expected {{'data': [...]}}, got {_snippet(data)}"
            )
        return models

    def post(self, path: str, body: dict) -> dict:
        data = self._request("POST", path, body, retry_connect=True)
        if not isinstance(data, dict):
            raise EndpointError(
                f"{self.base_url}/{path}: expected a JSON object, got {_snippet(data)}"
            )
        return data

    def _request(self, method: str, path: str, body: dict | None, *, retry_connect: bool) -> Any:
        url = f"{self.base_url}/{path}"
        cfg = self.config
        for attempt in range(cfg.max_retries + 1):
            wait = min(cfg.max_backoff_seconds, cfg.backoff_seconds * 2**attempt)
            try:
                response = self._http.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if not retry_connect or attempt == cfg.max_retries:
                    raise EndpointError(
                        f"cannot reach the policy server at {url} ({type(exc).__name__}: {exc}); "
                        f"is it running? e.g. `transformers serve MODEL_DIR --port PORT`"
                    ) from None
            except httpx.TimeoutException:
                raise EndpointError(
                    f"{url}: no answer within {cfg.timeout_seconds:.0f} s"
                ) from None
            except httpx.TransportError as exc:  # dropped mid-answer: the server may be restarting
                if attempt == cfg.max_retries:
                    raise EndpointError(f"{url}: {type(exc).__name__}: {exc}") from None
            else:
                if response.status_code in RETRY_STATUS and attempt < cfg.max_retries:
                    wait = max(wait, min(cfg.max_backoff_seconds, _retry_after(response)))
                elif response.status_code >= 400:
                    raise EndpointError(
                        f"{url}: HTTP {response.status_code}: {_snippet(response.text)}"
                        + (" (set $WEBAGENT_API_KEY)" if response.status_code == 401 else "")
                    )
                else:
                    try:
                        return response.json()
                    except ValueError:
                        raise EndpointError(f"{url}: not JSON: {_snippet(response.text)}") from None
            time.sleep(wait)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:  # an HTTP date: use our own backoff
        return 0.0


def _snippet(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:limit]
    return text[:limit] + ("…" if len(text) > limit else "")


def aid_for(models: Sequence[dict], model: str | None) -> Aid:
    """The constrained decoding a server supports, from who `/models` says owns the model."""
    entry = next((m for m in models if m.get("id") == model), models[0] if models else {})
    owner = str(entry.get("owned_by", "")).lower()
    if owner == "vllm":
        return "structured_outputs"
    if owner in ("llamacpp", "llama.cpp"):
        return "grammar"
    return "off"


# ----------------------------------------------------------------------- constrained decoding
_REGEX_SPECIAL = set("\\.^$|?*+()[]{}")


def _regex_literal(text: str) -> str:
    """Escape only regex operators (Python's re.escape also escapes spaces, which some server
    regex engines reject)."""
    out = []
    for c in text:
        if c in _REGEX_SPECIAL:
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        else:
            out.append(c)
    return "".join(out)


def admissible_regex(admissible) -> str:
    """One regex matching exactly the admissible set: a whole command, or a keyword followed by
    free text up to the line's end."""
    alternatives = [_regex_literal(c) for c in admissible.commands]
    alternatives += [_regex_literal(p) + r"[^\n]*" for p in admissible.prefixes]
    return "(" + "|".join(alternatives) + ")"


def _gbnf_literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def admissible_grammar(admissible) -> str:
    """The same set as a llama.cpp GBNF grammar."""
    alternatives = [_gbnf_literal(c) for c in admissible.commands]
    alternatives += [_gbnf_literal(p) + r" [^\n]*" for p in admissible.prefixes]
    return "root ::= " + " | ".join(alternatives)


# ----------------------------------------------------------------------------------- policy
class _Messages:
    """Stands in for a tokenizer's chat template: the chat prompt becomes the JSON of its
    messages (what the chat endpoint is sent, and what a record keeps)."""

    chat_template = "messages"

    @staticmethod
    def apply_chat_template(messages, *, tokenize=False, add_generation_prompt=True) -> str:
        return json.dumps(messages, ensure_ascii=False)


class EndpointPolicy:
    """A served model as a browsing policy (same `prompt` / `generate` as `HFPolicy`)."""

    def __init__(
        self,
        spec: str,
        *,
        prefer_chat: bool = True,
        examples: int = FEW_SHOT_EXAMPLES,
        free_answers: bool = False,
        config: EndpointConfig = EndpointConfig(),
    ):
        parsed = parse_spec(spec)
        self.name = spec
        self.route: Route = parsed.route or ("chat" if prefer_chat else "completions")
        self.format = PromptFormat(
            "chat" if self.route == "chat" else "base",
            examples,
            _Messages.chat_template if self.route == "chat" else None,
        )
        self.tokenizer = _Messages()
        self.free_answers = free_answers
        self.config = config
        self.client = EndpointClient(parsed.base_url, config)
        models = self.client.models()  # before any episode: a server that is down fails here
        ids = [str(m.get("id")) for m in models]
        if parsed.model is None and not ids:
            raise EndpointError(f"{parsed.base_url}/models lists no model; name one: {spec}#MODEL")
        self.model = parsed.model or ids[0]
        self.aid: Aid = aid_for(models, self.model)
        aid_note = {
            "structured_outputs": "regex in structured_outputs (vLLM)",
            "grammar": "GBNF grammar (llama.cpp)",
            "off": "off: the server advertises no constrained decoding we know "
            f"(owned_by={next((m.get('owned_by') for m in models if m.get('id') == self.model), None)!r})",
        }[self.aid]
        self.record_meta = {
            "endpoint": {
                "url": parsed.base_url,
                "model": self.model,
                "route": self.route,
                "decoding_aid": aid_note,
            }
        }
        """Merged into every record's meta: which server acted and how it was constrained."""

    def close(self) -> None:
        self.client.close()

    def prompt(self, phase: str, observation: str) -> str:
        return self.format.prompt(phase, observation, self.tokenizer)  # type: ignore[arg-type]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | Sequence[int] = 64,
        sampling: Sampling | Sequence[Sampling] | None = None,
        seeds: Sequence[int] | None = None,
        stop_at_newline: bool = True,
        constrained: Sequence[Any] | None = None,
    ) -> list[Generation]:
        """One request per prompt, sent concurrently; results in prompt order. `sampling`: one
        for all, or one per prompt (each request carries its own temperature)."""
        n = len(prompts)
        if n == 0:
            return []
        samplings = per_row(sampling or Sampling(), n)
        caps = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        seeds = list(seeds) if seeds is not None else [samplings[i].seed + i for i in range(n)]
        rows = list(constrained or [None] * n)
        jobs = [
            (p, cap, seed, c if self.aid != "off" and c else None, s)
            for p, cap, seed, c, s in zip(prompts, caps, seeds, rows, samplings, strict=True)
        ]
        workers = max(1, min(n, self.config.max_concurrency))
        if workers == 1:
            return [self._one(*job, stop_at_newline) for job in jobs]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda job: self._one(*job, stop_at_newline), jobs))

    def _one(
        self,
        prompt: str,
        cap: int,
        seed: int,
        admissible,
        sampling: Sampling,
        stop_at_newline: bool,
    ) -> Generation:
        body: dict[str, Any] = {
            "max_tokens": int(cap),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": int(seed),
        }
        if self.model:
            body["model"] = self.model
        if self.route == "chat":
            body["messages"] = json.loads(prompt)
            body["logprobs"] = True
            path = "chat/completions"
        else:
            body["prompt"] = prompt
            body["logprobs"] = 1
            path = "completions"
        if admissible is not None:  # already led by the runner (`PromptFormat.lead`)
            if self.aid == "structured_outputs":
                body["structured_outputs"] = {"regex": admissible_regex(admissible)}
            else:
                body["grammar"] = admissible_grammar(admissible)
        t0 = time.perf_counter()
        text, logprobs, prompt_tokens = self._complete(path, body, stop_at_newline)
        if stop_at_newline and not text.strip():
            # a model may open its answer with a newline: ask again without the stop string
            text, logprobs, prompt_tokens = self._complete(path, body, False)
        return Generation(
            text=text,
            token_ids=None,
            logprobs=logprobs,
            prompt_tokens=prompt_tokens,
            prefill_seconds=0.0,
            decode_seconds=time.perf_counter() - t0,
        )

    def _complete(self, path: str, body: dict, stop: bool) -> tuple[str, list[float] | None, int]:
        request = {**body, "stop": ["\n"]} if stop else body
        data = self.client.post(path, request)
        try:
            choice = data["choices"][0]
            if self.route == "chat":
                text = choice["message"].get("content") or ""
                entries = (choice.get("logprobs") or {}).get("content") or []
                logprobs = [float(e["logprob"]) for e in entries] or None
            else:
                text = choice["text"]
                raw = (choice.get("logprobs") or {}).get("token_logprobs") or []
                logprobs = [float(x) for x in raw if x is not None] or None
            if not isinstance(text, str):
                raise TypeError("text is not a string")
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise EndpointError(
                f"{self.client.base_url}/{path}: unexpected answer ({exc}): {_snippet(data)}"
            ) from None
        return text, logprobs, prompt_tokens


def load_endpoint_policy(
    spec: str, *, prefer_chat: bool, examples: int | None, free_answers: bool | None
) -> EndpointPolicy:
    """What `config.load_policy` builds for an `openai:` spec: a base model's few-shot prompt
    (`config.prompt_examples`) unless told otherwise, extractive answers unless told free."""
    from webagent.config import prompt_examples

    return EndpointPolicy(
        spec,
        prefer_chat=prefer_chat,
        examples=prompt_examples({}) if examples is None else examples,
        free_answers=bool(free_answers),
    )
