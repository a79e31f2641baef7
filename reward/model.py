"""The reward model: a transformer body and a scalar head over `reward.text.reward_text`.

Any Hugging Face model directory can be the body. A causal LM (WebGPT initialises the reward
model from the policy's base model) is loaded without its LM head and pooled at its last
token; an encoder such as all-MiniLM-L6-v2 is mean-pooled. A saved reward model is a plain
directory with `head.safetensors` and `reward.json` (pooling, base model, training metrics) and
its body in one of two formats (`reward.json`'s "format"):
- "adapter" (a LoRA-trained body): the peft adapter (`adapter_config.json`,
  `adapter_model.safetensors`, as a shipped policy stores it) on a base model that is not in the
  directory, so a reward model ships in megabytes. reward.json names the base as the trainer was
  given it ("base_model", e.g. webagent's "gemma3-270m") and fingerprints its weights ("base");
  the loader takes the base's directory from its caller (`base=`, else the resolver the
  application registered with `set_base_resolver`: reward/ never imports webagent) and refuses a
  base whose fingerprint differs. The tokenizer is the base's.
- "body" (a full fine-tune, and every reward model saved before adapters): `body/` holds the
  whole transformers body and its tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from env.dense import quiet_progress
from reward.lm import ensure_pad_token, last_positions, position_ids_from_mask
from reward.stack import check_transformers
from reward.text import Answer, reward_text

META = "reward.json"
Pooling = Literal["last", "mean"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What peft's `save_pretrained` writes for a LoRA body (an adapter-format reward model)."""

_base_resolver: Callable[[str], Path] | None = None


def set_base_resolver(resolve: Callable[[str], str | Path] | None) -> None:
    """How a base model named in reward.json becomes a local directory when a caller loads an
    adapter reward model without `base=` (webagent registers its model registry's `body_dir`).
    The one hook by which reward/ learns model names without importing webagent."""
    global _base_resolver
    _base_resolver = None if resolve is None else (lambda name: Path(resolve(name)))


class BaseMismatch(ValueError):
    """An adapter reward model was given a base model other than the one it was trained on."""


def body_fingerprint(body) -> dict:
    """Which weights a body holds, cheaply: its parameter count and a sha256 over every tensor's
    name, shape and first and last 64 values (float32). An adapter is only meaningful on the
    exact base it was trained on; this tells two bases apart without hashing a gigabyte."""
    digest = hashlib.sha256()
    count = 0
    for name, p in sorted(body.named_parameters()):
        flat = p.detach().reshape(-1)
        count += flat.numel()
        digest.update(f"{name}:{tuple(p.shape)}".encode())
        # the 128 values, then float32: not a float copy of every weight (a bf16 body)
        digest.update(torch.cat([flat[:64], flat[-64:]]).float().numpy().tobytes())
    return {"parameters": count, "sha256": digest.hexdigest()}


def is_causal(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any("CausalLM" in a for a in archs) or bool(getattr(config, "is_decoder", False))


class RewardModel(torch.nn.Module):
    """r(text) = head(pool(body(text))): one scalar per text."""

    def __init__(self, body, pooling: Pooling):
        super().__init__()
        self.body = body
        self.pooling = pooling
        self.base_fingerprint = body_fingerprint(body)
        """The pretrained body's `body_fingerprint`, taken before any adapter wraps it: what an
        adapter-format save records, so a load can check it gets the same base."""
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

    @property
    def is_adapter(self) -> bool:
        """The body is a peft LoRA model: it saves as an adapter on its base."""
        return hasattr(self.body, "peft_config")

    def save(self, directory: str | Path, tokenizer, meta: dict) -> None:
        """An adapter-format save for a LoRA body (meta's "base_model" must name its base the
        way the loading application resolves it), else the whole body in `body/`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.is_adapter:  # the adapter files alone (peft also writes a README stub)
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                self.body.save_pretrained(tmp)
                for name in ADAPTER_FILES:
                    os.replace(Path(tmp) / name, directory / name)
            fmt = {"format": "adapter", "base": self.base_fingerprint}
        else:
            self.body.save_pretrained(directory / "body")
            tokenizer.save_pretrained(directory / "body")
            fmt = {"format": "body"}
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()},
            directory / "head.safetensors",
        )
        (directory / META).write_text(
            json.dumps({**meta, **fmt, "pooling": self.pooling}, indent=2) + "\n"
        )

    @classmethod
    def load(
        cls, directory: str | Path, *, base: str | Path | None = None
    ) -> tuple[RewardModel, object, dict]:
        """(model in eval mode, tokenizer, reward.json). `base`: the base model directory of an
        adapter-format reward model (default: the registered resolver applied to its
        "base_model", else "base_model" itself if it is a directory); ignored for `body/`."""
        check_transformers()
        directory = Path(directory)
        meta = read_meta(directory)
        with quiet_progress():  # loading a judge is not news on the user's terminal
            model, tokenizer = cls._load(directory, meta, base)
        model.head.load_state_dict(load_file(directory / "head.safetensors"))
        return model.eval(), prepare_tokenizer(tokenizer), meta

    @classmethod
    def _load(cls, directory: Path, meta: dict, base) -> tuple[RewardModel, object]:
        from transformers import AutoModel, AutoTokenizer

        if meta.get("format", "body") == "body":  # reward models saved before adapters too
            body = AutoModel.from_pretrained(directory / "body", local_files_only=True)
            model = cls(body, meta["pooling"])
            tokenizer = AutoTokenizer.from_pretrained(directory / "body", local_files_only=True)
        else:
            from peft import PeftModel

            base_dir = base_directory(directory, meta, base)
            body = AutoModel.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
            model = cls(body, meta["pooling"])
            check_base(directory, meta, model.base_fingerprint, base_dir)
            model.body = PeftModel.from_pretrained(body, str(directory), is_trainable=False)
            tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        return model, tokenizer


def read_meta(directory: Path) -> dict:
    """reward.json of a reward model directory, its format checked (files present)."""
    if not (directory / META).is_file():
        raise FileNotFoundError(f"{directory} is not a reward model (no {META})")
    meta = json.loads((directory / META).read_text())
    fmt = meta.get("format", "body")
    needed = {"body": ("body/config.json",), "adapter": ADAPTER_FILES}.get(fmt)
    if needed is None:
        raise ValueError(f"{directory / META}: unknown format {fmt!r} (adapter or body)")
    missing = [f for f in (*needed, "head.safetensors") if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is an incomplete reward model: no {missing}")
    return meta


def base_directory(directory: Path, meta: dict, base: str | Path | None) -> Path:
    """Where the base model of an adapter reward model is (see `RewardModel.load`)."""
    if base is not None:
        return Path(base)
    name = meta.get("base_model")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{directory / META}: an adapter reward model needs its 'base_model'")
    if _base_resolver is not None:
        return _base_resolver(name)
    if Path(name).is_dir():
        return Path(name)
    raise ValueError(
        f"{directory} is a LoRA adapter on {name!r}: give its base model directory "
        "(RewardScorer(directory, base=...), or load it through webagent, which resolves names)"
    )


def check_base(directory: Path, meta: dict, found: dict, base_dir: Path) -> None:
    """Refuse a base whose weights differ from the ones the adapter was trained on."""
    want = meta.get("base")
    if want and (want.get("parameters"), want.get("sha256")) != (
        found["parameters"],
        found["sha256"],
    ):
        raise BaseMismatch(
            f"{directory} is an adapter trained on {meta.get('base_model')!r} "
            f"({want.get('parameters')} parameters, fingerprint {str(want.get('sha256'))[:12]}), "
            f"but the base model in {base_dir} differs ({found['parameters']} parameters, "
            f"fingerprint {found['sha256'][:12]}): its scores would be meaningless"
        )


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

    def __init__(
        self, directory: str | Path, *, base: str | Path | None = None, batch_size: int = 8
    ):
        self.model, self.tokenizer, self.meta = RewardModel.load(directory, base=base)
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
