"""int8 linear layers for sampling on a CPU: ~4x less weight traffic and int8 matrix products.

Both phases of a step are at the fp32 limit on a small CPU (prefill is compute-bound, decode
reads every weight once per token), so the fast path does less work per weight: each linear
layer of the decoder body keeps its weight as int8 with one scale per output row, and each
input row is quantized on the fly with its own scale (dynamic per-token activations), then
`torch._int_mm` multiplies int8 by int8 into int32 (oneDNN/fbgemm kernels on AVX2).
torch.ao's `quantize_dynamic` does the same with one scale per activation tensor, but it is
deprecated (it warns on every call) and coarser.

The arithmetic changes, so it serves sampling only (ask, eval, comparisons and PPO rollouts,
by default; `--no-int8` for fp32), measured against fp32 in bench/README.md: on the 300 dev
questions EM and supported stay within a point of fp32, though fewer answers are the same.
Training keeps fp32. The LM head (tied to the embeddings) stays fp32
where the policy multiplies only the allowed rows of it (a constrained row); an int8 copy,
`model.int8_head`, serves the rows that need all 262k logits (free text).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with W int8 per output row and x int8 per input row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer(
            "weight_t", torch.round(w / scale[:, None]).to(torch.int8).t().contiguous()
        )
        self.register_buffer("weight_scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        scale = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        q = torch.round(x2 / scale).to(torch.int8)
        y = torch._int_mm(q, self.weight_t).float() * scale * self.weight_scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


@functools.cache
def unavailable() -> str | None:
    """Why int8 sampling cannot run in this process (None: it can), found by one tiny product
    with the kernel `Int8Linear` needs. When it cannot, one warning says so, and the policy
    samples in fp32 (`PolicyArgs.quantized`, which runs record as their int8 setting)."""
    try:
        product = torch._int_mm(
            torch.ones(2, 16, dtype=torch.int8), torch.ones(16, 8, dtype=torch.int8)
        )
        reason = None if int(product[0, 0]) == 16 else "torch._int_mm computes wrong products"
    except (AttributeError, NotImplementedError, RuntimeError) as exc:
        reason = f"torch._int_mm fails on this CPU or torch build: {exc}"
    if reason is not None:
        warnings.warn(
            f"int8 sampling is unavailable ({reason}): sampling in fp32 instead, and recording "
            "int8 as false (--no-int8 asks for this directly)",
            RuntimeWarning,
            stacklevel=2,
        )
    return reason


def quantize(model: Any) -> Any:
    """The model for sampling with int8 linear layers in its decoder body.

    A LoRA adapter is merged into the base weights first (one matrix per layer again). Returns
    the (unwrapped) transformers model; the LM head and embeddings stay float, with an int8
    copy of the head as ``model.int8_head`` for full-vocabulary logits. The model passed in is
    changed in place (merged, layers replaced): quantize a copy loaded for sampling, never the
    one being trained (PPO rolls out with a quantized deep copy, `train_ppo.rollout_policy`).
    """
    model = quantize_body(model)
    model.int8_head = Int8Linear(model.get_output_embeddings())
    return model.eval()


def quantize_body(model: Any) -> Any:
    """Every linear layer of a decoder body int8 (a LoRA adapter merged first), in place; the
    unwrapped model. A causal LM's head is not in its decoder; a bare body (a reward model's or
    reader's `AutoModel`, `webagent.reader.Reader`) is its own decoder."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    decoder = model.get_decoder()
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return model.eval()
