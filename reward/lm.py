"""Causal-LM tensor conventions shared by the policy (webagent) and the reward model.

Left- or right-padded rows must behave like the same rows unpadded, and Gemma's LM head caps
its logits; each rule is written once here, the lowest layer that needs it.
"""

from __future__ import annotations

from typing import Any

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that make a left-padded row behave like the same row unpadded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last attended token (left or right padding)."""
    ar = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * (ar + 1)).argmax(-1)


def logit_softcap(model: Any) -> float | None:
    """The cap of a model's final logits (Gemma's `final_logit_softcapping`), or None."""
    return getattr(model.config, "final_logit_softcapping", None)


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """`cap * tanh(logits / cap)` as Gemma's LM head does; unchanged when there is no cap."""
    return torch.tanh(logits / cap) * cap if cap else logits


def ensure_pad_token(tokenizer: Any) -> int | None:
    """The tokenizer's pad id, after setting its pad token to its eos (else unk) when it has
    none (returns None only if it has neither). Padded positions are masked out, so which token
    pads never matters; the policy, the model loader and the reward model all pad this way."""
    if tokenizer.pad_token is None:
        for candidate in (tokenizer.eos_token, tokenizer.unk_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
    return tokenizer.pad_token_id
