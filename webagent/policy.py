"""The token-generating policy: a causal LM that continues prompts, in batches, with log-probs.

The decode loop is ours (not `generate`) because the episode record needs exactly what PPO
needs later: the sampled token ids, their log-probabilities, the prompt length, and timings
split into prefill and decode. Two details matter on a CPU:
- prompts are left-padded and decoded together, so decoding (memory-bound) is shared by the
  batch; position ids come from the attention mask so padding changes nothing;
- the LM head runs only on the last position (`logits_to_keep=1`): Gemma's 262k vocabulary
  would otherwise cost ~1 GB of logits per 1,000-token prompt.
Each row samples from its own seeded generator, so an episode does not depend on which other
episodes shared its batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from webagent.prompts import PromptFormat, format_for


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn. temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class Generation:
    text: str
    """The decoded completion, up to and including the stop newline (if any)."""
    token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each sampled token under the sampling distribution (temperature
    applied, top-p not; temperature 1 when greedy)."""
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float


class HFPolicy:
    """A HuggingFace causal LM as a browsing policy."""

    def __init__(
        self, model, tokenizer, *, name: str = "model", prompt_format: PromptFormat | None = None
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.format = prompt_format or format_for(tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.stop_ids = {i for i in [tokenizer.eos_token_id] if i is not None}
        for special in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>"):
            tid = tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                self.stop_ids.add(tid)

    @classmethod
    def load(cls, spec: str, **kwargs) -> HFPolicy:
        from webagent.models import load

        loaded = load(spec)
        return cls(loaded.model, loaded.tokenizer, name=loaded.name, **kwargs)

    def prompt(self, phase: str, observation: str) -> str:
        return self.format.prompt(phase, observation, self.tokenizer)  # type: ignore[arg-type]

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(prompts),
            return_tensors="pt",
            padding=True,
            add_special_tokens=self.format.add_special_tokens,
        )

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | Sequence[int] = 64,
        sampling: Sampling = Sampling(),
        seeds: Sequence[int] | None = None,
        stop_at_newline: bool = True,
    ) -> list[Generation]:
        """Continue each prompt until a newline (if asked), an end token or its token cap."""
        n = len(prompts)
        if n == 0:
            return []
        caps = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        seeds = list(seeds) if seeds is not None else [sampling.seed + i for i in range(n)]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        batch = self.encode(prompts)
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        prompt_tokens = mask.sum(dim=1).tolist()
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)

        t0 = time.perf_counter()
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions,
            use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        prefill = time.perf_counter() - t0
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        next_pos = positions[:, -1] + 1

        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        done = [False] * n
        pad = self.tokenizer.pad_token_id
        t1 = time.perf_counter()
        for _ in range(max(caps)):
            chosen = torch.full((n,), pad, dtype=torch.long)
            scaled = logits / sampling.temperature if sampling.temperature > 0 else logits
            logp_all = torch.log_softmax(scaled, dim=-1)
            for i in range(n):
                if done[i]:
                    continue
                tok = _pick(logp_all[i], sampling, generators[i])
                chosen[i] = tok
                tokens[i].append(tok)
                logps[i].append(float(logp_all[i, tok]))
                if (
                    tok in self.stop_ids
                    or len(tokens[i]) >= caps[i]
                    or (stop_at_newline and "\n" in self.tokenizer.decode(tokens[i][-1:]))
                ):
                    done[i] = True
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype)], dim=1)
            out = self.model(
                input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                past_key_values=past, use_cache=True, logits_to_keep=1,
            )  # fmt: skip
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        decode = time.perf_counter() - t1

        results = []
        for i in range(n):
            ids = [t for t in tokens[i] if t not in self.stop_ids]
            results.append(
                Generation(
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    token_ids=tokens[i],
                    logprobs=logps[i],
                    prompt_tokens=int(prompt_tokens[i]),
                    prefill_seconds=prefill,
                    decode_seconds=decode,
                )
            )
        return results


def _pick(logp: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """Greedy, or a draw from the (top-p truncated) distribution with this row's generator."""
    if sampling.temperature <= 0:
        return int(torch.argmax(logp))
    probs = logp.exp()
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
