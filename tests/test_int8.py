"""webagent.int8: int8 linear layers for sampling, on tiny models built here."""

import pytest
import torch
from tiny import save_tiny, tiny_model, tiny_tokenizer

from webagent.int8 import Int8Linear, quantize
from webagent.policy import HFPolicy, Sampling


def test_int8_linear_is_close_to_the_float_one():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    q = Int8Linear(linear)
    for shape in [(1, 64), (3, 7, 64)]:
        x = torch.randn(shape)
        with torch.no_grad():
            want, got = linear(x), q(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert float((got - want).abs().max()) < 0.02 * float(want.abs().max())
    assert q.weight_t.dtype == torch.int8


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft vs transformers 5 (reward.stack)
def test_quantized_lora_policy_decodes_and_a_row_is_the_same_alone_or_batched():
    """LoRA is merged before quantizing (the adapter still counts); int8 products are exact
    integers and activations are scaled per row, so batching does not change a row."""
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    lora = get_peft_model(tiny_model(len(tok)), LoraConfig(r=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([tok("Search Baghdad river").input_ids])
    with torch.no_grad():
        want = lora(input_ids=ids).logits
        model = quantize(lora)
        got = model(input_ids=ids).logits
    assert not hasattr(model, "peft_config") and hasattr(model, "int8_head")
    assert isinstance(model.model.layers[0].self_attn.q_proj, Int8Linear)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)

    policy = HFPolicy(model, tok, name="tiny+int8")
    prompts = ["Which river flows through Baghdad?", "Search", "Clicked on link 0 and more"]
    sampling = Sampling(temperature=1.0)
    batch = policy.generate(prompts, max_new_tokens=6, sampling=sampling, seeds=[1, 2, 3])
    single = [
        policy.generate([p], max_new_tokens=6, sampling=sampling, seeds=[s])[0]
        for p, s in zip(prompts, [1, 2, 3], strict=True)
    ]
    assert [g.token_ids for g in batch] == [g.token_ids for g in single]
    assert all(len(g.token_ids) > 0 for g in batch)


def test_without_the_int8_kernel_the_policy_samples_fp32_and_says_so(tmp_path, monkeypatch):
    """Forced: a torch whose int8 product fails. One warning, fp32 sampling, int8 recorded
    false (what really ran), and PPO rolls out in fp32 too."""
    import warnings

    from webagent.config import PolicyArgs, load_policy
    from webagent.int8 import unavailable
    from webagent.train_ppo import rollout_int8

    def no_kernel(*_args):
        raise RuntimeError("_int_mm: no int8 kernel for this CPU")

    unavailable.cache_clear()
    assert unavailable() is None and PolicyArgs().recorded()["int8"] is True
    monkeypatch.setattr(torch, "_int_mm", no_kernel)
    unavailable.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = PolicyArgs(model=str(save_tiny(tmp_path / "tiny")))
            assert args.recorded()["int8"] is False and not args.quantized
            policy = load_policy(args)
            assert not rollout_int8(True, torch.device("cpu"))
        assert not policy.name.endswith("+int8"), "samples with the fp32 weights"
        said = [str(w.message) for w in caught if "int8 sampling is unavailable" in str(w.message)]
        assert len(said) == 1 and "fp32" in said[0] and "no int8 kernel" in said[0], said
    finally:
        unavailable.cache_clear()
