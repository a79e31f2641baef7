"""The reader (webagent/reader.py): evidence comparisons from real scans of the wiki corpus, the
aid narrowed to its best quote, and episodes whose quotes are the reader's choice."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import save_tiny

import webagent.models
from env.admissible import Admissible
from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from reward.comparisons import read_comparisons
from reward.model import RewardModel, prepare_tokenizer
from webagent.config import DEFAULT_READER, PolicyArgs
from webagent.datasets import Question
from webagent.metrics import holds_alias
from webagent.reader import Reader, pairs_of, scan

TIGRIS = Question("q-tigris", "Which river flows through Baghdad?", "Tigris", ("Tigris",))
WEBAGENT = str(Path(sys.executable).with_name("webagent"))


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory) -> Path:
    """A tiny randomly initialised reward model with a non-trivial head (body format)."""
    from transformers import AutoTokenizer

    body = save_tiny(tmp_path_factory.mktemp("tiny-reader-body"))
    torch.manual_seed(3)
    model = RewardModel.from_body(body)
    with torch.no_grad():
        model.head.weight.normal_(std=1.0)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(body))
    out = tmp_path_factory.mktemp("reader") / "reader-tiny"
    model.save(out, tok, {"base_model": str(body), "max_length": 256})
    return out


def make_env(wiki, page_cache, max_actions: int = 10):
    config = EnvConfig(limits=BrowseLimits(max_actions=max_actions))
    return lambda: BrowserEnv(wiki, config, cache=page_cache)


def test_scan_and_pairs_prefer_the_sentence_holding_the_answer(wiki, page_cache):
    states = scan(TIGRIS, make_env(wiki, page_cache), results=3)
    assert [s.rank for s in states] == [0, 1, 2]
    assert any(s.holds for s in states), "the Tigris page is among the first results"
    for s in states:
        assert all(holds_alias(c, ["Tigris"]) for c in s.good)
        assert set(s.good) <= set(s.quotes)
    pairs = pairs_of(states, random.Random(0))
    assert pairs and {p.meta["rival"] for p in pairs} <= {"same view", "page that misses"}
    for p in pairs:
        chosen, rejected = (
            (p.answer_0, p.answer_1) if p.preference == 1.0 else (p.answer_1, p.answer_0)
        )
        assert holds_alias(chosen.quotes[0].extract, ["Tigris"])
        assert not holds_alias(rejected.quotes[0].extract, ["Tigris"])
        assert chosen.text == rejected.text == ""  # evidence alone, no answer yet
    # a question no page answers gives no pairs, not pairs with a made-up winner
    nothing = Question("q-none", TIGRIS.question, "Zzyzx", ("Zzyzx",))
    assert pairs_of(scan(nothing, make_env(wiki, page_cache), results=2), random.Random(0)) == []


def test_narrow_keeps_the_readers_best_quotes_and_nothing_else(tiny_reader):
    quotes = [f"Quote: {s}" for s in ("The Tigris flows.", "Baghdad is a city.", "Rivers run.")]
    adm = Admissible(("Clicked on link 0", *quotes, "Back"), ("Find in page:",))
    reader = Reader(tiny_reader)
    scores = reader.scores(TIGRIS.question, "Tigris", [q[len("Quote: ") :] for q in quotes])
    assert len(set(scores)) == 3, "a random head still separates the sentences"
    best = quotes[max(range(3), key=lambda i: scores[i])]
    one = reader.narrow(adm, TIGRIS.question, "Tigris")
    assert one.commands == tuple(c for c in adm.commands if not c.startswith("Quote") or c == best)
    assert one.prefixes == adm.prefixes
    two = Reader(tiny_reader, top_k=2).narrow(adm, TIGRIS.question, "Tigris")
    worst = quotes[min(range(3), key=lambda i: scores[i])]
    assert two.commands == tuple(c for c in adm.commands if c != worst)  # view order kept
    assert Reader(tiny_reader, top_k=3).narrow(adm, TIGRIS.question, "Tigris") == adm
    # cached: the same sentences are not scored again
    calls = []
    real = reader.scorer.score_texts
    reader.scorer.score_texts = lambda texts: calls.append(texts) or real(texts)
    assert reader.narrow(adm, TIGRIS.question, "Tigris") == one and calls == []


def test_episodes_quote_only_what_the_reader_chose(tiny_reader, wiki, page_cache, tmp_path):
    """Three actions: search, click, then the aid lists only quotes (nothing quoted with one
    action left), narrowed by the reader: every episode's quote is the reader's best sentence."""
    from webagent.config import policy_of
    from webagent.models import load
    from webagent.rollout import RunConfig, Task, run_episodes

    policy = policy_of(load(str(save_tiny(tmp_path / "tiny"))))
    reader = Reader(tiny_reader)
    chosen: dict[int, tuple[str, str]] = {}

    def steer(i: int, env: BrowserEnv, prompt: str, action: str) -> str:
        if action.startswith("Quote: "):
            listed = [c for c in env.admissible().commands if c.startswith("Quote: ")]
            scores = reader.scores(env.question, env.page.title, [c[7:] for c in listed])
            chosen[i] = (action, listed[max(range(len(listed)), key=lambda j: scores[j])])
        return action

    questions = [TIGRIS.question, "Who painted the Mona Lisa?", "What is the capital of Peru?"]
    config = RunConfig(batch_size=3, reader=reader, browse_max_new_tokens=512)  # bytes
    records = dict(
        run_episodes(
            policy, [Task(q) for q in questions], make_env(wiki, page_cache, 3), config, steer=steer
        )
    )
    assert chosen, "with one action left on a page the aid lists only quotes"
    for i, (action, best) in chosen.items():
        assert action == best
        assert records[i].meta["reader"] == "reader-tiny"


def test_reader_flags_fail_before_anything_loads(tmp_path, cli_env):
    def run(*args):
        return subprocess.run(
            [WEBAGENT, "ask", "Which river flows through Baghdad?", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env,
        )

    out = run("--reader", str(tmp_path / "no-reader"))
    assert out.returncode == 1 and "no reward model" in out.stderr and "Loading" not in out.stderr
    out = run("--reader-quotes", "0")
    assert out.returncode == 1 and "--reader-quotes must be at least 1" in out.stderr


def test_reader_pairs_command_writes_comparisons_train_rm_reads(wiki, tmp_path, cli_env):
    questions = tmp_path / "q.jsonl"
    rows = [
        (TIGRIS.question, "Tigris", ["Tigris"]),
        ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Leonardo"]),
        ("What is the capital of Peru?", "Lima", []),
    ]
    rows = [
        {"question_id": qid, "question": q, "answer": {"value": a, "aliases": more}}
        for qid, (q, a, more) in zip(["a", "b", "held"], rows, strict=True)
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pairs.jsonl"
    args = [WEBAGENT, "reader-pairs", str(questions), "--out", str(out), "--holdout", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "from 2 questions" in done.stdout
    pairs = read_comparisons(out)
    assert pairs and {p.meta["question_id"] for p in pairs} <= {"a", "b"}  # "held" held out
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=cli_env)
    assert again.returncode == 1 and "exists" in again.stderr  # never appends to old pairs


@pytest.mark.skipif(
    DEFAULT_READER not in webagent.models.shipped_reward_models(), reason="not shipped yet"
)
def test_the_shipped_reader_is_a_small_complete_adapter_and_the_default_policys():
    d = webagent.models.shipped_reward_models()[DEFAULT_READER]
    meta = json.loads(
        (d / "reward.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON with {c}")
    )
    assert meta["format"] == "adapter" and meta["base_model"] == "gemma3-270m"
    assert meta["validation"]["n"] > 100 and meta["validation"]["accuracy"] > 0.7
    assert sum(p.stat().st_size for p in d.iterdir()) < 20 * 2**20
    assert "reader-pairs" in (d / "MODEL_CARD.md").read_text()
    assert PolicyArgs().reader_spec == DEFAULT_READER  # the shipped policy reads with it
    assert PolicyArgs(admissible_only=False).reader_spec is None  # no aid, nothing to narrow
    assert PolicyArgs(reader="none").reader_spec is None
    assert PolicyArgs(model="smollm2-135m").reader_spec is None  # other models: only if asked


@pytest.mark.skipif(
    DEFAULT_READER not in webagent.models.shipped_reward_models(), reason="not shipped yet"
)
def test_the_shipped_reader_makes_the_default_agent_quote_the_answer(wiki, index_dir, tmp_path):
    """The train question test_funnel.py answers from memory with --reader none ("Chile",
    citing a sentence that names no country): with the shipped reader the default agent quotes
    the sentence naming Argentina and answers "Argentina [1]". Its log-probability of that
    answer (about -0.97 in fp32) is below the citation gate's fp32 threshold, so the default
    gives it uncited: a supported answer the gate costs (bench/README.md, "The citation gate")."""
    from test_funnel import ask_aconcagua

    from webagent.config import CITE_MIN_LOGPROB

    out = ask_aconcagua(index_dir, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert "Argentina" in data["references"][0]["extract"]
    gate = data["citation_gate"]
    assert data["answer"] == "Argentina" and data["supported_by_quotes"] is False, data
    assert gate["kept"] is False and gate["min_logprob"] == CITE_MIN_LOGPROB["fp32"]
    assert CITE_MIN_LOGPROB["fp32"] - 0.5 < gate["logprob"] < CITE_MIN_LOGPROB["fp32"]
