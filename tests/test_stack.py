"""The transformers pin: one tested range, in pyproject.toml and in the code that checks it, and
no deprecation warning from our calls into transformers/peft on the installed release."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reward.stack import TRANSFORMERS_RANGE, check_transformers, in_range

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_pins_the_range_the_code_checks_and_the_installed_release_is_in_it():
    # (tomllib is Python 3.11+; the project supports 3.10)
    pins = re.findall(r'^\s*"(transformers\b[^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert pins == [f"transformers{TRANSFORMERS_RANGE}"]
    installed = importlib.metadata.version("transformers")
    assert in_range(installed), (
        f"transformers {installed} is installed but webagent is tested with {TRANSFORMERS_RANGE}: "
        "run the suite on it, then widen reward.stack.TRANSFORMERS_RANGE and pyproject.toml"
    )
    assert check_transformers() == installed


@pytest.mark.parametrize(
    ("version", "ok"),
    [("5.23.0", False), ("5.24.0", True), ("5.24.3", True), ("5.25.0", False), ("6.0.0", False)],
)
def test_range_bounds(version, ok):
    assert in_range(version) is ok


SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from tiny import tiny_model, tiny_tokenizer, save_tiny
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from webagent import models as M
from webagent.policy import HFPolicy
from webagent.prompts import PromptFormat

tok = tiny_tokenizer()
gemma = Gemma3ForCausalLM(Gemma3TextConfig(
    vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
    layer_types=["sliding_attention", "full_attention"], pad_token_id=0, bos_token_id=1,
    eos_token_id=2)).eval()
for model in (tiny_model(len(tok)), gemma):
    policy = HFPolicy(model, tok, prompt_format=PromptFormat("base", examples=1))
    prompts = [policy.prompt("browse", "x"), policy.prompt("browse", "a longer observation")]
    policy.generate(prompts, max_new_tokens=4)

from peft import LoraConfig, get_peft_model
base = save_tiny(__import__("pathlib").Path({tmp!r}) / "tiny")
peft_model = get_peft_model(M.load(str(base)).model, LoraConfig(r=2, target_modules=["q_proj"]))
peft_model.save_pretrained({tmp!r} + "/ckpt")
open({tmp!r} + "/ckpt/webagent.json", "w").write(json.dumps({{"base_model": str(base)}}))
policy = HFPolicy(M.load({tmp!r} + "/ckpt").model, tok)
policy.generate([policy.prompt("browse", "x")], max_new_tokens=4)
print("ok")
"""


def test_our_model_calls_raise_no_deprecation_warning(tmp_path):
    """Load, LoRA-wrap and decode (llama and gemma3, cached prefix and merged batch) with every
    FutureWarning an error, and nothing about deprecation on stderr (transformers also logs)."""
    script = SCRIPT.format(tests=str(ROOT / "tests"), tmp=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "WEBAGENT_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "deprecat" not in out.stderr.lower(), out.stderr
