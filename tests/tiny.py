"""A tiny randomly initialised causal LM and byte-level tokenizer, built in-process for tests.

Training loops, the episode runner and the CLI are tested on this; a few integration tests
use the real SmolLM2 weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "Search Baghdad river",
    "Clicked on link 0",
    "Quote: The Tigris flows",
    "End: Answer",
    "Scrolled down 1",
    "Find in page: river",
    "Tigris [1]",
    "Which river flows through Baghdad?",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.add_bos_token = True
    return fast


def tiny_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny(directory: Path, seed: int = 0) -> Path:
    """A tiny model + tokenizer saved as a HF directory (loadable by webagent.models.load)."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
