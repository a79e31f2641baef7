"""The token-generating policy: a causal LM that continues prompts, in batches, with log-probs.

The decode loop is ours (not `generate`) because the episode record needs exactly what PPO
needs later: the sampled token ids, their log-probabilities, the prompt length, and timings
split into prefill and decode. What makes it fast on a CPU:
- **Prefix cache.** Every browse prompt starts with the same instruction and worked examples
  (~800 of ~1,000 tokens for Gemma). Their keys/values are computed once; each step only
  prefills its own observation.
- **Row prefill, batched decode.** Each prompt is prefilled alone on top of the prefix cache
  (prefill is compute-bound: batching it gains little), then the rows' caches are left-padded
  into one batch and decoded together (decoding is memory-bound: batching shares the weights'
  traffic). Left padding with mask-derived positions is exact, so an episode decodes the same
  alone or in a batch. Models whose cache we cannot merge fall back to a left-padded batch.
- **LM head only where a token is drawn**: the decoder body runs alone and the head is applied
  to each row's last hidden state; a constrained row multiplies only its allowed tokens' rows
  of the head. Gemma's head is 262k x 640 (670 MB in fp32): reading it is most of a decode step.
Each row samples from its own seeded generator. A `constrained` row must start with one of the
command keywords it is given (`env.commands.KEYWORDS`, e.g. the environment's admissible ones):
few-shot base models otherwise drift into echoing the page.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from env.commands import KEYWORDS
from reward.lm import ensure_pad_token, logit_softcap, position_ids_from_mask, soft_cap
from reward.stack import check_transformers
from webagent.models import unwrap
from webagent.prompts import PromptFormat, format_for


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn. temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def per_row(sampling: Sampling | Sequence[Sampling], n: int) -> list[Sampling]:
    """One `Sampling` per row of a batch of n, from one for all or a list of n."""
    if isinstance(sampling, Sampling):
        return [sampling] * n
    rows = list(sampling)
    if len(rows) != n:
        raise ValueError(f"{len(rows)} samplings for {n} prompts")
    return rows


@dataclass
class Generation:
    text: str
    """The decoded completion, up to and including the stop newline (if any)."""
    token_ids: list[int] | None
    """None from a served policy (`webagent.endpoint`): OpenAI-style APIs return no token ids."""
    logprobs: list[float] | None
    """Log-probability of each sampled token under the distribution it was drawn from:
    temperature applied (temperature 1 when greedy), keyword mask applied, top-p not.
    A served policy: as the server reports them, or None when it returns none."""
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float


class _Trie:
    """Token-level prefix tree of allowed completions.

    `end`: a whole command ends here (stop, or go on if a longer one shares the prefix);
    `free`: a keyword ends here and free text follows (the constraint is released).
    """

    def __init__(self) -> None:
        self.children: dict[int, _Trie] = {}
        self.end = False
        self.free = False

    def add(self, tokens: Sequence[int], *, free: bool) -> None:
        node = self
        for tok in tokens:
            node = node.children.setdefault(tok, _Trie())
        if free:
            node.free = True
        else:
            node.end = True

    def forced_tail(self) -> list[int] | None:
        """The tokens that must follow this node if one path leads from it to a command's end
        (no branch, no keyword to free text, no earlier end): else None."""
        tail, node = [], self
        while not (node.end or node.free) and len(node.children) == 1:
            tok, node = next(iter(node.children.items()))
            tail.append(tok)
        return tail if tail and node.end and not node.children and not node.free else None


class HFPolicy:
    """A HuggingFace causal LM as a browsing policy."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str = "model",
        prompt_format: PromptFormat | None = None,
        cache_prefix: bool = True,
        free_answers: bool = False,
    ):
        check_transformers()  # the decode loop passes its cache as `cache=` (transformers 5.24)
        self.model = model.eval()
        self.free_answers = free_answers
        """Answers are not held to quote spans by the decoding aid (a policy taught to answer
        from memory when its quotes miss)."""
        self.tokenizer = tokenizer
        self.name = name
        self.format = prompt_format or format_for(tokenizer)
        self.cache_prefix = cache_prefix
        self.jump_forward = True
        """Append a command's forced tail without a forward pass per token (exact; off only to
        measure what it saves, bench/episodes.py)."""
        self.reuse_prompts = True
        """Prefill a prompt on the cache of the longest start it shares with one of the last
        `RECENT_PROMPTS` prompts (on top of the fixed prefix, so only with `cache_prefix`: a
        model whose weights change, as in PPO, caches neither; off only to measure it)."""
        self._recent: list[tuple[list[int], Any]] = []
        ensure_pad_token(tokenizer)
        tokenizer.padding_side = "left"
        self.stop_ids = {i for i in [tokenizer.eos_token_id] if i is not None}
        for special in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>"):
            tid = tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                self.stop_ids.add(tid)
        self.newline_id = tokenizer.encode("\n", add_special_tokens=False)[-1]
        self._prefix_ids: dict[str, list[int]] = {}
        self._prefixes: dict[str, Any] = {}  # phase -> key/value cache of its prefix
        self._mergeable: bool | None = None
        inner = unwrap(model)
        self._decoder = inner.get_decoder()
        self._head = inner.get_output_embeddings()
        self._full_head = getattr(inner, "int8_head", None) or self._head
        """What computes all logits of a free row (webagent.int8 adds an int8 copy of the head)."""
        self._softcap = logit_softcap(inner)

    def prompt(self, phase: str, observation: str) -> str:
        return self.format.prompt(phase, observation, self.tokenizer)  # type: ignore[arg-type]

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=self.format.add_special_tokens).input_ids

    def _ends_line(self, tokens: list[int]) -> bool:
        """The last token ends a line that has text: blank lines before it are not a completion
        (after `Answer:` a model may start a new line first)."""
        if "\n" not in self.tokenizer.decode(tokens[-1:]):
            return False
        return bool(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())

    def _stops(self, tokens: list[int], cap: int, stop_at_newline: bool) -> bool:
        """A row ends at an end token, its token cap, or (if asked) the end of a line."""
        return (
            tokens[-1] in self.stop_ids
            or len(tokens) >= cap
            or (stop_at_newline and self._ends_line(tokens))
        )

    def trie(self, admissible) -> _Trie:
        """The token trie of an `Admissible` set (whole commands and free-text keywords)."""
        unknown = {p for p in admissible.prefixes if p not in KEYWORDS}
        if unknown:
            raise ValueError(f"not command keywords: {sorted(unknown)}")
        root = _Trie()
        for command in admissible.commands:
            root.add(self.tokenizer.encode(command, add_special_tokens=False), free=False)
        for prefix in admissible.prefixes:
            root.add(self.tokenizer.encode(prefix, add_special_tokens=False), free=True)
        return root

    # -- prefill ------------------------------------------------------------------------
    def _prefix_for(self, ids: list[int]) -> tuple[list[int], Any] | None:
        """The cached prefix (ids, key/value cache) this prompt starts with, if any."""
        if not self.cache_prefix or self._mergeable is False:
            return None
        for phase in ("browse", "answer", "closed_book", "rag"):
            if phase not in self._prefix_ids:
                text = self.format.static_prefix(phase, self.tokenizer)  # type: ignore[arg-type]
                # drop the last token: it may merge with the observation's first characters
                self._prefix_ids[phase] = self.encode(text)[:-1]
            prefix_ids = self._prefix_ids[phase]
            if len(ids) > len(prefix_ids) and ids[: len(prefix_ids)] == prefix_ids:
                if phase not in self._prefixes:  # only the phases actually used are prefilled
                    positions = torch.arange(len(prefix_ids))[None]
                    self._prefixes[phase] = self._forward(torch.tensor([prefix_ids]), positions)[1]
                return prefix_ids, self._prefixes[phase]
        return None

    def _recent_start(self, ids: list[int], floor: int) -> tuple[int, Any] | None:
        """The longest start (longer than `floor`) this prompt shares with a recently prefilled
        one, and a cache of it: an episode's next observation repeats the question, quotes and
        past actions its last one began with."""
        best, best_len = None, floor
        for old_ids, snapshot in self._recent:
            n = min(len(old_ids), len(ids) - 1)  # prefill at least the last token
            shared = 0
            while shared < n and old_ids[shared] == ids[shared]:
                shared += 1
            if shared > best_len:
                best, best_len = snapshot, shared
        return None if best is None else (best_len, _cut(best, best_len))

    def _prefill_rows(self, rows: list[list[int]]):
        """Prefill each row alone (on its cached prefix), then merge into one left-padded batch."""
        caches, hidden = [], []
        for ids in rows:
            hit = self._prefix_for(ids)
            start, past = (len(hit[0]), None) if hit else (0, None)
            recent = self._recent_start(ids, start) if self.reuse_prompts and hit else None
            if recent is not None:
                start, past = recent
            elif hit:  # copied only when used: decoding extends the cache it is given
                past = copy.deepcopy(hit[1])
            h, cache = self._forward(
                torch.tensor([ids[start:]]), torch.arange(start, len(ids))[None], past
            )
            snapshot = _snapshot(cache, len(ids)) if self.reuse_prompts and hit else None
            if snapshot is not None:
                self._recent = [*self._recent[1 - RECENT_PROMPTS :], (ids, snapshot)]
            caches.append(cache)
            hidden.append(h)
        merged = _merge_caches(caches)
        if merged is None:
            return None
        lengths = [len(r) for r in rows]
        longest = max(lengths)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, longest - n :] = 1
        return torch.cat(hidden), merged, mask, torch.tensor(lengths)

    def _prefill_batch(self, rows: list[list[int]]):
        """Fallback: one left-padded batch, positions from the mask."""
        longest = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
        positions = position_ids_from_mask(mask)
        hidden, cache = self._forward(input_ids, positions, None, mask)
        return hidden, cache, mask, positions[:, -1] + 1

    def _forward(self, input_ids, position_ids, past=None, mask=None):
        """The decoder body only: last hidden state per row, and the updated cache."""
        out = self._decoder(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=past,
            use_cache=True,
        )
        return out.last_hidden_state[:, -1, :], out.cache

    def _logits(self, h: torch.Tensor, allowed: list[int] | None) -> torch.Tensor:
        """LM head on hidden state(s) `h`, over `allowed` token ids only when given (Gemma: 262k rows)."""
        if allowed is None:
            logits = self._full_head(h).float()
        else:
            idx = torch.tensor(allowed)
            bias = None if self._head.bias is None else self._head.bias[idx]
            logits = F.linear(h, self._head.weight[idx], bias).float()
        return soft_cap(logits, self._softcap)

    # -- decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | Sequence[int] = 64,
        sampling: Sampling | Sequence[Sampling] = Sampling(),
        seeds: Sequence[int] | None = None,
        stop_at_newline: bool = True,
        constrained: Sequence[Any] | None = None,
    ) -> list[Generation]:
        """Continue each prompt until a newline (if asked), an end token or its token cap.

        `sampling` is one for all rows or one per row (best-of-n decodes its greedy candidate
        in the same batch as its sampled ones: a row's draw depends only on its own sampling).
        `constrained[i]`, when given, is an `env.browser.Admissible`: row i then writes one of
        its whole commands, or one of its keyword prefixes followed by free text.
        """
        n = len(prompts)
        if n == 0:
            return []
        caps = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        samplings = per_row(sampling, n)
        seeds = list(seeds) if seeds is not None else [samplings[i].seed + i for i in range(n)]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        nodes: list[_Trie | None] = [
            self.trie(c) if c else None for c in (constrained or [None] * n)
        ]
        rows = [self.encode(p) for p in prompts]

        t0 = time.perf_counter()
        state = None
        if self._mergeable is not False:
            state = self._prefill_rows(rows)
            self._mergeable = state is not None
        if state is None:
            state = self._prefill_batch(rows)
        hidden, past, mask, next_pos = state
        prefill = time.perf_counter() - t0

        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        done = [False] * n
        pad = self.tokenizer.pad_token_id
        t1 = time.perf_counter()
        for _ in range(max(caps)):
            chosen = torch.full((n,), pad, dtype=torch.long)
            # free rows share one pass over the LM head; a constrained row uses its allowed rows only
            free = [i for i in range(n) if not done[i] and nodes[i] is None]
            full = dict(zip(free, self._logits(hidden[free], None), strict=True)) if free else {}
            for i in range(n):
                if done[i]:
                    continue
                node = nodes[i]
                allowed = (
                    None
                    if node is None
                    else list(node.children) + ([self.newline_id] if node.end else [])
                )
                row = full[i] if allowed is None else self._logits(hidden[i], allowed)
                if samplings[i].temperature > 0:
                    row = row / samplings[i].temperature
                logp = F.log_softmax(row, dim=-1)
                pick = _pick(logp, samplings[i], generators[i])
                tok = pick if allowed is None else allowed[pick]
                logp_tok = float(logp[pick])
                finished_command = False
                if node is not None:
                    child = node.children.get(tok)  # None: the newline after a whole command
                    finished_command = child is None or (child.end and not child.children)
                    nodes[i] = None if child is None or child.free else child
                chosen[i] = tok
                tokens[i].append(tok)
                logps[i].append(logp_tok)
                done[i] = finished_command or self._stops(tokens[i], caps[i], stop_at_newline)
                # The rest of a whole command is forced (one child per node down to its end):
                # its tokens are drawn with probability 1 (log-prob exactly 0) and nothing
                # follows them in this step, so append them without a forward pass each.
                tail = (
                    None
                    if done[i] or not self.jump_forward or nodes[i] is None
                    else nodes[i].forced_tail()
                )
                while tail:
                    tokens[i].append(tail.pop(0))
                    logps[i].append(0.0)
                    done[i] = not tail or self._stops(tokens[i], caps[i], stop_at_newline)
                    if done[i]:
                        break
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype)], dim=1)
            hidden, past = self._forward(chosen[:, None], next_pos[:, None], past, mask)
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
                    prompt_tokens=len(rows[i]),
                    prefill_seconds=prefill,
                    decode_seconds=decode,
                )
            )
        return results


def _merge_caches(caches: list[Any]) -> Any | None:
    """Left-pad per-row key/value caches into one batch cache; None if the type is unknown.

    Works on transformers' layered caches (full and sliding-window layers): each layer is padded
    to the longest row on the left, and sliding layers keep their cumulative length so the
    attention mask lines up with the padded sequence.
    """
    first = caches[0]
    layers = getattr(first, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") for layer in layers):
        return None
    if len(caches) == 1:
        return first
    merged = copy.copy(first)
    merged.layers = []
    for li, layer in enumerate(layers):
        parts = [c.layers[li] for c in caches]
        if any(getattr(p, "keys", None) is None or p.keys.numel() == 0 for p in parts):
            return None
        longest = max(p.keys.shape[-2] for p in parts)
        new = copy.copy(layer)
        new.keys = torch.cat([_left_pad(p.keys, longest) for p in parts])
        new.values = torch.cat([_left_pad(p.values, longest) for p in parts])
        if hasattr(layer, "cumulative_length"):
            new.cumulative_length = max(p.cumulative_length for p in parts)
        merged.layers.append(new)
    return merged


RECENT_PROMPTS = 16
"""Prefilled prompts kept for `HFPolicy.reuse_prompts` (two steps of a batch of 8)."""


def _snapshot(cache: Any, length: int) -> Any | None:
    """A copy of a one-row cache that later decoding leaves alone (layers grow by concatenating
    new tensors), if every layer still holds all `length` positions (none slid out of a window)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(
        getattr(la, "keys", None) is None or la.keys.shape[-2] != length for la in layers
    ):
        return None
    snapshot = copy.copy(cache)
    snapshot.layers = [copy.copy(layer) for layer in layers]
    return snapshot


def _cut(snapshot: Any, length: int) -> Any:
    """A cache of the first `length` positions of a snapshot (views; the snapshot is unchanged)."""
    cut = copy.copy(snapshot)
    cut.layers = []
    for layer in snapshot.layers:
        new = copy.copy(layer)
        new.keys, new.values = layer.keys[..., :length, :], layer.values[..., :length, :]
        if hasattr(layer, "cumulative_length"):
            new.cumulative_length = length
        cut.layers.append(new)
    return cut


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(t, (0, 0, length - t.shape[-2], 0)) if t.shape[-2] < length else t


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
