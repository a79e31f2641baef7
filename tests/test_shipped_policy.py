"""The behaviour-cloned default policy ships with the package and is what ask/eval use."""

import json

from safetensors import safe_open

from webagent.config import DEFAULT_POLICY, PolicyArgs
from webagent.models import KNOWN_MODELS, POLICIES_DIR, resolve, shipped_policies


def test_default_policy_is_the_shipped_bc_adapter():
    assert PolicyArgs().model == DEFAULT_POLICY == "bc-gemma3-270m"
    assert DEFAULT_POLICY in shipped_policies()
    r = resolve(DEFAULT_POLICY)
    assert r.kind == "checkpoint" and r.base is not None and r.base.spec == "gemma3-270m"
    assert r.base.spec in KNOWN_MODELS


def test_shipped_adapter_is_complete_and_small():
    d = POLICIES_DIR / DEFAULT_POLICY
    meta = json.loads((d / "webagent.json").read_text())
    assert meta["kind"] == "bc" and meta["prompt"]["examples"] == 0 and meta["steps"] > 0
    assert meta["val_loss"] is not None and len(meta["data_sha256"]) == 64
    config = json.loads((d / "adapter_config.json").read_text())
    weights = d / "adapter_model.safetensors"
    assert weights.stat().st_size < 20 * 2**20, "shipped in the repository: keep it under ~20 MB"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
        modules = {k.split(".")[-3] for k in keys if ".lora_A." in k or ".lora_B." in k}
        assert modules == set(config["target_modules"])
        a = next(k for k in keys if ".lora_A." in k)
        assert f.get_tensor(a).shape[0] == config["r"]
    assert (d / "MODEL_CARD.md").read_text().count("|") > 10, "the card carries its eval table"
