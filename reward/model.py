"""The reward model: a transformer body and a scalar head over `reward.text.reward_text`.

Any Hugging Face model directory can be the body. A causal LM (WebGPT initialises the reward
model from the policy's base model) is loaded without its LM head and pooled at its last
token; an encoder such as all-MiniLM-L6-v2 is mean-pooled. A saved reward model is a plain
directory: `body/` (transformers), `head.safetensors`, the tokenizer and `reward.json`
(pooling, base model, training metrics), so it loads without webagent's model registry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from reward.lm import ensure_pad_token, last_positions, position_ids_from_mask
from reward.stack import check_transformers
from reward.text import Answer, reward_text

META = "reward.json"
Pooling = Literal["last", "mean"]


def is_causal(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any("CausalLM" in a for a in archs) or bool(getattr(config, "is_decoder", False))


class RewardModel(torch.nn.Module):
    """r(text) = head(pool(body(text))): one scalar per text."""

    def __init__(self, body, pooling: Pooling):
        super().__init__()
        self.body = body
        self.pooling = pooling
        hidden = body.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.head.weight, std=1 / (hidden + 1) ** 0.5)
        torch.nn.init.zeros_(self.head.bias)

    @classmethod
    def from_body(cls, directory: str | Path, *, dtype=torch.float32) -> RewardModel:
        """A fresh head on a pretrained body (the LM head of a causal LM is not loaded)."""
        from transformers import AutoConfig, AutoModel

        check_transformers()
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        body = AutoModel.from_pretrained(directory, dtype=dtype, local_files_only=True)
        return cls(body, "last" if is_causal(config) else "mean")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"use_cache": False} if self.pooling == "last" else {}
        if self.pooling == "last":  # position ids from the mask: padding-side agnostic
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = hidden.last_hidden_state
        if self.pooling == "last":
            pooled = hidden[torch.arange(hidden.shape[0]), last_positions(attention_mask)]
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)

    def save(self, directory: str | Path, tokenizer, meta: dict) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        body = self.body
        if hasattr(body, "merge_and_unload"):  # LoRA: save a plain body
            body = body.merge_and_unload()
        body.save_pretrained(directory / "body")
        tokenizer.save_pretrained(directory / "body")
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()},
            directory / "head.safetensors",
        )
        (directory / META).write_text(
            json.dumps({**meta, "pooling": self.pooling}, indent=2) + "\n"
        )

    @classmethod
    def load(cls, directory: str | Path) -> tuple[RewardModel, object, dict]:
        """(model in eval mode, tokenizer, reward.json)."""
        from transformers import AutoModel, AutoTokenizer

        check_transformers()
        directory = Path(directory)
        if not (directory / META).is_file():
            raise FileNotFoundError(f"{directory} is not a reward model (no {META})")
        meta = json.loads((directory / META).read_text())
        body = AutoModel.from_pretrained(directory / "body", local_files_only=True)
        model = cls(body, meta["pooling"])
        model.head.load_state_dict(load_file(directory / "head.safetensors"))
        tokenizer = AutoTokenizer.from_pretrained(directory / "body", local_files_only=True)
        return model.eval(), prepare_tokenizer(tokenizer), meta


def prepare_tokenizer(tokenizer):
    """A reward-model tokenizer: a pad token, and right padding (`last_positions` reads either)."""
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return tokenizer


def encode(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded batch. Overlong texts keep their end (the answer is last in the layout)."""
    tokenizer.truncation_side = "left"
    return tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


class RewardScorer:
    """A loaded reward model that scores answers (best-of-n, PPO, eval)."""

    def __init__(self, directory: str | Path, *, batch_size: int = 8):
        self.model, self.tokenizer, self.meta = RewardModel.load(directory)
        self.max_length = int(self.meta.get("max_length", 512))
        self.batch_size = batch_size
        self.directory = str(directory)

    @torch.inference_mode()
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = encode(self.tokenizer, texts[i : i + self.batch_size], self.max_length)
            out.extend(self.model(batch["input_ids"], batch["attention_mask"]).float().tolist())
        return out

    def score(self, question: str, answers: Sequence[Answer]) -> list[float]:
        return self.score_texts([reward_text(question, a) for a in answers])
