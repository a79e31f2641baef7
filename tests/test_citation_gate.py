"""The citation gate (webagent.rollout.confident): an answer the policy doubts keeps no `[n]`,
in episodes on the real wiki corpus, in records that replay, and in what ask shows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import save_tiny

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from webagent.answers import cited, confident, format_answer, gate_of, strip_citations, to_json
from webagent.config import CITE_MIN_LOGPROB, PolicyArgs
from webagent.datasets import Question
from webagent.eval import episode_row
from webagent.rollout import RunConfig, Task, run_episodes

WEBAGENT = str(Path(sys.executable).with_name("webagent"))


def test_confident_keeps_the_citations_of_a_sure_answer_only():
    sure = [-0.1, -0.05, -0.01, -0.01, 0.0]
    unsure = [-2.0, -0.5, -0.1, -0.1, -0.1, 0.0]
    assert confident("Tigris [1]", sure, -0.5) == (
        "Tigris [1]",
        {"logprob": -0.17, "min_logprob": -0.5, "kept": True},
    )
    answer, decision = confident("Euphrates [1][2]", unsure, -0.5)
    assert answer == "Euphrates" and decision == {
        "logprob": -2.8,
        "min_logprob": -0.5,
        "kept": False,
    }
    assert confident("Euphrates [1][2]", unsure, None) == ("Euphrates [1][2]", None)  # no gate
    assert confident("Euphrates", unsure, -0.5) == ("Euphrates", None)  # nothing to drop
    # a server that reports no log-probabilities: nothing to judge by
    assert confident("Tigris [1]", None, -0.5) == (
        "Tigris [1]",
        {"logprob": None, "min_logprob": -0.5, "kept": True},
    )


def test_the_gate_is_the_shipped_policys_and_a_flag():
    arithmetic = "int8" if PolicyArgs().quantized else "fp32"  # int8 where its kernel runs
    assert PolicyArgs().cite_threshold == CITE_MIN_LOGPROB[arithmetic] < 0
    assert PolicyArgs(int8=False).cite_threshold == CITE_MIN_LOGPROB["fp32"] < 0
    assert PolicyArgs(model="smollm2-135m").cite_threshold is None  # others: only if asked
    assert PolicyArgs(model="smollm2-135m", cite_min_logprob=-2.0).cite_threshold == -2.0
    assert PolicyArgs(cite_gate=False).cite_threshold is None
    assert PolicyArgs(int8=False).recorded()["cite_min_logprob"] == CITE_MIN_LOGPROB["fp32"]
    for bad in (0.5, float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="--cite-min-logprob"):
            PolicyArgs(cite_min_logprob=bad).check()


def test_flag_fails_before_anything_loads(cli_env):
    out = subprocess.run(
        [WEBAGENT, "ask", "Which river flows through Baghdad?", "--cite-min-logprob", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env,
    )
    assert out.returncode == 1 and "--cite-min-logprob is a log-probability" in out.stderr
    assert "Loading" not in out.stderr


def test_episodes_drop_the_citations_of_doubted_answers(wiki, page_cache, tmp_path):
    """A tiny policy under the aid must quote within 3 actions and then answer citing [n]; every
    answer has a log-probability below 0, so a gate at 0 drops every citation and a gate at
    -inf none; the doubted answer's record replays and says why it cites nothing."""
    from webagent.config import policy_of
    from webagent.models import load
    from webagent.replay import replay

    policy = policy_of(load(str(save_tiny(tmp_path / "tiny"))))
    config = EnvConfig(limits=BrowseLimits(max_actions=3))

    def make_env():
        return BrowserEnv(wiki, config, cache=page_cache)

    questions = ["Which river flows through Baghdad?", "Who painted the Mona Lisa?"]
    runs = {}
    for gate in (None, 0.0):
        run = RunConfig(batch_size=2, browse_max_new_tokens=512, cite_min_logprob=gate)
        runs[gate] = dict(run_episodes(policy, [Task(q) for q in questions], make_env, run))
    answered = [i for i, r in runs[None].items() if r.quotes and cited(r.answer)]
    assert answered, "under the aid the tiny policy quotes and cites"
    for i in answered:
        free, gated = runs[None][i], runs[0.0][i]
        assert "citation_gate" not in free.meta
        step = gated.steps[-1]
        assert cited(step.completion), "the record keeps what the policy wrote"
        assert gated.meta["citation_gate"]["kept"] is False
        assert gated.meta["citation_gate"]["logprob"] < 0
        assert not cited(gated.answer) and gated.supported_by_quotes is False
        assert gated.answer == strip_citations(free.answer)  # greedy: the same episode till then
        assert "the agent was unsure of it" in format_answer(gated)
        assert to_json(gated)["citation_gate"]["kept"] is False
        question = Question("q", gated.question, "Tigris", ("Tigris",))
        assert episode_row(question, gated, page_cache)["doubted"] == 1.0  # eval counts it
        assert episode_row(question, free, page_cache)["doubted"] == 0.0
        assert replay(gated, page_cache).ok and replay(free, page_cache).ok
        forged = type(gated).from_dict(gated.to_dict())
        forged.meta["citation_gate"]["min_logprob"] = -1e9  # the recorded decision is checked
        assert not replay(forged, page_cache).ok
        forged.meta["citation_gate"] = {"kept": "no", "min_logprob": "x"}  # untrusted meta
        assert gate_of(forged) is None and not replay(forged, page_cache).ok
        assert "unsure" not in format_answer(forged) and to_json(forged)["citation_gate"] is None


def test_ask_json_gives_a_doubted_answer_from_memory(wiki, index_dir, tmp_path):
    """The real shipped agent on a train question it gets wrong ("Armenia", from a quote about
    Yerevan; the answer is Turkey), its answer's log-probability about -0.7 in fp32: a gate at
    -0.5 takes the citation away, and ask --json says why."""
    from test_funnel import ask_real

    out = ask_real(
        index_dir, tmp_path, "Mount Ararat is in which country?", "--cite-min-logprob", "-0.5"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    gate = data["citation_gate"]
    assert gate["kept"] is False and -0.5 > gate["logprob"] > -2 and gate["min_logprob"] == -0.5
    assert data["answer"] == data["raw_answer"] == "Armenia", data
    assert data["supported_by_quotes"] is False and data["references"]
