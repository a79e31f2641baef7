"""A LoRA reward model saves as adapter + head on its base (what ships in webagent/policies/),
loads back to the same scores, refuses another base, and is --best-of's default."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_reward import answer, synthetic
from tiny import save_tiny

import webagent.models
from reward.comparisons import write_comparisons
from reward.model import BaseMismatch, RewardModel, RewardScorer, prepare_tokenizer
from reward.text import reward_text
from reward.train_rm import CARD, Args, model_card
from reward.train_rm import main as train_rm
from webagent.cli import main as cli_main
from webagent.config import DEFAULT_RM, best_of_rm

TEXTS = [
    reward_text("Which river flows through Baghdad?", answer("Tigris [1]", "The Tigris flows.")),
    reward_text("Which river flows through Baghdad?", answer("Nile")),
    reward_text("Who painted the Mona Lisa?", answer("Leonardo da Vinci [1]", "Leonardo painted")),
]


@pytest.fixture(scope="module")
def tiny_body(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-body"))


@pytest.fixture(scope="module")
def adapter_rm(tiny_body, tmp_path_factory) -> tuple[Path, list[float]]:
    """A LoRA reward model with non-trivial adapter and head weights, saved in the adapter
    format, and the scores the in-memory model gave TEXTS before saving."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    model = RewardModel.from_body(tiny_body)
    model.body = get_peft_model(
        model.body, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change the scores
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(std=0.5)
    model.eval()
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_body))
    scorer = RewardScorer.__new__(RewardScorer)  # the in-memory model behind the scorer's API
    scorer.model, scorer.tokenizer, scorer.max_length, scorer.batch_size = model, tok, 256, 2
    before = scorer.score_texts(TEXTS)
    out = tmp_path_factory.mktemp("rm") / "rm-tiny"
    model.save(out, tok, {"base_model": str(tiny_body), "max_length": 256})
    return out, before


def test_adapter_save_holds_no_body_and_scores_identically(tiny_body, adapter_rm):
    out, before = adapter_rm
    meta = json.loads((out / "reward.json").read_text())
    assert meta["format"] == "adapter" and meta["base_model"] == str(tiny_body)
    assert meta["base"]["parameters"] == sum(
        t.numel() for t in RewardModel.from_body(tiny_body).body.parameters()
    )
    names = {p.name for p in out.iterdir()}
    assert names == {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"} | {
        "reward.json"
    }, "no body/, no tokenizer: both come from the base"
    body_bytes = sum(p.stat().st_size for p in tiny_body.glob("*.safetensors"))
    assert (out / "adapter_model.safetensors").stat().st_size < body_bytes / 2
    # explicit base, and the base webagent resolves from reward.json's name: the same scores
    assert RewardScorer(out, base=tiny_body, batch_size=2).score_texts(TEXTS) == before
    assert RewardScorer(out, batch_size=2).score_texts(TEXTS) == before
    assert before[0] != before[1], "the test would pass for a constant scorer"


def test_another_base_is_refused(adapter_rm, tmp_path):
    out, _ = adapter_rm
    other = save_tiny(tmp_path / "other", seed=1)  # same shapes, other weights
    with pytest.raises(BaseMismatch, match="differs"):
        RewardScorer(out, base=other)
    shutil.copytree(out, tmp_path / "moved")
    meta = json.loads((tmp_path / "moved" / "reward.json").read_text())
    (tmp_path / "moved" / "reward.json").write_text(json.dumps({**meta, "base_model": str(other)}))
    with pytest.raises(BaseMismatch, match="differs"):
        RewardScorer(tmp_path / "moved")
    (tmp_path / "moved" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        RewardScorer(tmp_path / "moved")


def test_train_rm_lora_saves_an_adapter_resumes_and_writes_its_card(tiny_body, tmp_path, capsys):
    data = tmp_path / "comparisons.jsonl"
    write_comparisons(data, synthetic(24))
    args = Args(
        comparisons=str(data),
        out=str(tmp_path / "rm"),
        model=str(tiny_body),
        lora=True,
        lora_r=4,
        epochs=2,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=1,
        val_fraction=0.25,
    )
    meta = train_rm(args, base_name="tiny-base")
    out = tmp_path / "rm"
    assert meta["base_model"] == "tiny-base" and not (out / "body").exists()
    saved = json.loads((out / "reward.json").read_text())
    assert saved["format"] == "adapter" and saved["base"]["parameters"] > 0
    scores = RewardScorer(out, base=tiny_body).score_texts(TEXTS)
    again = train_rm(args, base_name="tiny-base")  # resumes after the last epoch: no training
    assert "resuming from" in capsys.readouterr().out and again["history"] == meta["history"]
    assert RewardScorer(out, base=tiny_body).score_texts(TEXTS) == scores
    card = (out / CARD).read_text()
    assert card == model_card(out)
    val = meta["validation"]
    for figure in (val["accuracy"], val["longer_answer_accuracy"], val["more_quotes_accuracy"]):
        assert f"{figure:.3f}" in card
    assert "tiny-base" in card and "--lora" in card and meta["data_sha256"] in card


def test_full_fine_tune_keeps_the_body_format(tiny_body, tmp_path):
    from transformers import AutoTokenizer

    model = RewardModel.from_body(tiny_body).eval()
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_body))
    model.save(tmp_path / "rm", tok, {"base_model": str(tiny_body), "max_length": 256})
    assert (tmp_path / "rm" / "body" / "config.json").is_file()
    assert json.loads((tmp_path / "rm" / "reward.json").read_text())["format"] == "body"
    meta = json.loads((tmp_path / "rm" / "reward.json").read_text())
    del meta["format"]  # a reward model saved before adapters existed
    (tmp_path / "rm" / "reward.json").write_text(json.dumps(meta))
    with torch.inference_mode():
        batch = tok(TEXTS, padding=True, return_tensors="pt")
        want = model(batch["input_ids"], batch["attention_mask"]).tolist()
    assert RewardScorer(tmp_path / "rm").score_texts(TEXTS) == pytest.approx(want, abs=1e-6)


def test_best_of_uses_the_shipped_default_or_fails_before_the_policy_loads(
    adapter_rm, tmp_path, monkeypatch, capsys
):
    out, _ = adapter_rm
    shipped = tmp_path / "policies"
    shipped.mkdir()
    monkeypatch.setattr(webagent.models, "POLICIES_DIR", shipped)
    assert best_of_rm(1, None) is None, "no reward model without --best-of"
    with pytest.raises(ValueError, match=f"{DEFAULT_RM}.*--rm"):
        best_of_rm(2, None)
    # the policy spec does not exist: had it loaded first, the error would be about it
    code = cli_main(["ask", "Which river?", "--best-of", "2", "--model", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and DEFAULT_RM in err and "--rm" in err, err
    with pytest.raises(ValueError, match="no reward model"):
        best_of_rm(2, str(tmp_path / "none"))
    shutil.copytree(out, shipped / DEFAULT_RM)
    assert best_of_rm(2, None) == str(shipped / DEFAULT_RM)
    shutil.copytree(out, shipped / "rm-other")
    assert best_of_rm(2, "rm-other") == str(shipped / "rm-other"), "--rm takes a shipped name"
    assert best_of_rm(2, str(out)) == str(out), "--rm DIR overrides"
    assert "rm-other" not in webagent.models.shipped_policies(), "a reward model is no policy"


@pytest.mark.skipif(
    DEFAULT_RM not in webagent.models.shipped_reward_models(), reason="not shipped yet"
)
def test_the_shipped_reward_model_is_a_small_complete_adapter():
    d = webagent.models.shipped_reward_models()[DEFAULT_RM]
    meta = json.loads((d / "reward.json").read_text())
    assert meta["format"] == "adapter" and meta["base"]["parameters"] > 0
    assert meta["base_model"] in (*webagent.models.KNOWN_MODELS, "all-minilm-l6-v2")
    assert meta["validation"]["n"] > 0 and meta["validation"]["accuracy"] > 0.5
    size = sum(p.stat().st_size for p in d.iterdir())
    assert size < 20 * 2**20, "shipped in the repository: keep it under ~20 MB"
    assert (d / CARD).read_text().count("|") > 10, "the card carries its accuracy table"
