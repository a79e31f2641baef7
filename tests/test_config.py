"""Building a policy from checkpoint metadata: one function for every entry point."""

from webagent.config import FEW_SHOT_EXAMPLES, PolicyArgs, load_policy, prompt_examples


def test_prompt_examples_follow_the_checkpoint_else_few_shot():
    assert prompt_examples({}) == FEW_SHOT_EXAMPLES == 8, "a base model acts few-shot"
    assert prompt_examples({"base_model": "x", "prompt": {"examples": 3}}) == 3
    assert prompt_examples({"base_model": "x", "kind": "bc"}) == 0, "BC trains zero-shot"


def test_the_shipped_policy_acts_as_it_was_trained():
    policy = load_policy(PolicyArgs())
    assert policy.format.examples == 0 and policy.free_answers
    assert policy.name == "bc-gemma3-270m+int8", "sampling is int8 by default (webagent.int8)"


def test_int8_is_what_a_run_records_only_where_it_applies():
    assert PolicyArgs().quantized and not PolicyArgs(int8=False).quantized
    endpoint = PolicyArgs(model="openai:http://127.0.0.1:8000/v1")
    assert endpoint.int8 and not endpoint.quantized, "a served model's arithmetic is the server's"


def test_one_cache_root_with_tilde_expanded_for_models_indexes_pages_and_history(monkeypatch):
    from pathlib import Path

    from env.cache import PageCache
    from env.paths import cache_root
    from env.sources.local import index_cache_dir
    from webagent import models

    monkeypatch.setenv("WEBAGENT_CACHE", "~/elsewhere")
    root = Path.home() / "elsewhere"
    assert cache_root() == root and models.cache_root() == root
    assert index_cache_dir() == root / "index" and PageCache().root == root / "pages"
    monkeypatch.delenv("WEBAGENT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "webagent"


def test_hybrid_search_is_refused_up_front_when_its_encoder_cannot_import(monkeypatch):
    """Not at the first search of the first episode: before a source opens or a model loads.
    (sys.modules[name] = None is Python's own way to make a package unimportable.)"""
    import sys

    import pytest

    from env.dense import encoder_missing
    from webagent.config import EnvArgs

    assert encoder_missing() is None
    EnvArgs().check()
    for name in ("sentence_transformers", "transformers"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, name, None)
            assert encoder_missing() == name
            with pytest.raises(ValueError, match=f"needs the {name} package.*--search bm25"):
                EnvArgs().check()
            EnvArgs(search="bm25").check()  # BM25 needs no encoder
            EnvArgs(source="web").check()  # nor does the live web's search
