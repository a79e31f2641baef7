"""Truthful citations, the evidence funnel and behaviour metrics, on episodes played in the real
browser over the real local Wikipedia (the actions are scripted, the pages and search are real)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from env.browser import BrowserEnv, EnvConfig
from env.citations import check, supports
from env.limits import BrowseLimits
from env.observation import SavedQuote
from env.record import append_jsonl, read_records
from webagent.answers import cited, format_answer, strip_citations, to_json
from webagent.datasets import Question
from webagent.eval import CorpusIndex, compare, episode_row, score, write_reports
from webagent.funnel import passages_evidence
from webagent.replay import replay, write_html

WEBAGENT = str(Path(sys.executable).with_name("webagent"))
BAGHDAD = Question("q1", "Which river flows through Baghdad?", "Tigris", ("Tigris", "The Tigris"))


def play(wiki, cache, actions: list[str], question: str = BAGHDAD.question):
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=10)), cache=cache)
    env.reset(question, seed=0)
    info = {}
    for action in actions:
        _, _, terminated, _, info = env.step(action)
        assert info["action_error"] is None, (action, info["action_error"])
    assert terminated
    return info["record"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from env.cache import PageCache

    return PageCache(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def episodes(wiki, cache):
    # "Baghdad river" lists Baghdad (holds "Tigris") first, Jordan River (does not) sixth
    right = play(
        wiki,
        cache,
        [
            "Search Baghdad river",
            "Clicked on link 0",
            "Quote: It is located on the banks of the Tigris in central Iraq.",
            "End: Answer",
            "The Tigris [1].",
        ],
    )
    # misses, searches again, opens the wrong result, quotes a sentence without the answer, and
    # answers right from memory while citing the quote: the citation must go
    memory = play(
        wiki,
        cache,
        [
            "Search Mona Lisa painter",
            "Search Baghdad river",
            "Clicked on link 5",
            "Quote: endorheic river in the Levant that flows roughly north to south",
            "End: Answer",
            "Tigris [1]",
        ],
    )
    # misses and gives up on searching: opens a result of the wrong search
    lost = play(
        wiki,
        cache,
        [
            "Search Mona Lisa painter",
            "Clicked on link 0",
            "Quote: The Mona Lisa is a half-length portrait painting",
            "End: Answer",
            "Euphrates [1]",
        ],
    )
    return right, memory, lost


def test_citation_rule():
    quotes = [
        SavedQuote(1, "Baghdad", "u1", "It is located on the banks of the Tigris in central Iraq."),
        SavedQuote(2, "Babylon", "u2", "Babylon was a city on the lower Euphrates river."),
    ]
    q = BAGHDAD.question
    # the question's own words ("river") need not be in the quote; an absent or wrong one drops
    assert check("The Tigris river [1][2][7].", quotes, q).answer == "The Tigris river [1]."
    assert check("The Tigris river [1][2][7].", quotes, q).removed == (2, 7)
    assert check("Tigris [2]", quotes, q).answer == "Tigris"
    assert not check("Tigris [2]", quotes, q).supported_by_quotes
    assert check("[1]", quotes, q).answer == "" and not supports("[1]", quotes[0].extract, q)
    assert supports("Pele", "Pelé scored", "Who?") and not supports("Pele Smith", "Pelé", "Who?")
    assert check("Tigris", quotes, q).kept == ()  # uncited: nothing to keep, not supported


def test_quote_that_misses_loses_its_citation_everywhere(episodes, cache, tmp_path):
    right, memory, _ = episodes
    assert right.answer == right.raw_answer == "The Tigris [1]." and right.supported_by_quotes
    assert memory.raw_answer == "Tigris [1]" and memory.answer == "Tigris"
    assert memory.supported_by_quotes is False
    assert memory.steps[-1].action == "Tigris [1]"  # what the policy wrote stays in the record
    # the record holds the check's inputs: re-running it (and replaying) reproduces the answer
    assert check(memory.raw_answer, memory.quotes, memory.question).answer == memory.answer
    assert replay(memory, cache).ok
    shown = format_answer(memory)
    assert shown.startswith("Tigris\n(not supported by the quoted sources: answered from memory")
    assert "removed [1]" in shown and "not supported" not in format_answer(right)
    data = to_json(memory)
    assert data["supported_by_quotes"] is False and data["answer"] == "Tigris"
    html = write_html([memory], cache, tmp_path / "t.html").read_text()
    assert "not supported by the quoted sources" in html


def test_funnel_and_behaviour_on_constructed_episodes(episodes, cache, wiki, tmp_path):
    corpus = CorpusIndex(wiki)
    rows = [episode_row(BAGHDAD, r, cache, corpus) for r in episodes]
    right, memory, lost = rows
    assert [
        right[k]
        for k in (
            "in_top1",
            "in_top3",
            "in_top10",
            "seen_answer",
            "quoted_answer",
            "em",
            "supported",
            "cites",
        )
    ] == [1.0] * 8
    assert memory["in_top1"] == 1.0 and memory["seen_answer"] == memory["quoted_answer"] == 0.0
    assert memory["em"] == 1.0 and memory["supported"] == memory["cites"] == 0.0
    assert lost["in_top10"] == 0.0 and lost["em"] == lost["cites"] == 0.0
    assert [r["pattern"] for r in rows] == [
        "search click quote end",
        "search search click quote end",
        "search click quote end",
    ]
    assert [r["opened_ranks"] for r in rows] == [[0], [5], [0]]
    assert [r["doubted"] for r in rows] == [0.0] * 3  # scripted: no citation gate decided
    assert [r["opened_listed_answer"] for r in rows] == [1.0, 0.0, None]
    assert [(r["missed_searches"], r["searched_again"]) for r in rows] == [(0, 0), (1, 1), (1, 0)]

    out = tmp_path / "browse"
    out.mkdir()
    append_jsonl(
        out / "results.jsonl",
        [{"question_id": f"q{i}", "in_corpus": 1.0, **r} for i, r in enumerate(rows)],
    )
    summary = write_reports(out, {"mode": "browse", "model": "scripted", "dataset": "constructed"})
    assert summary["in_top1"] == pytest.approx(2 / 3) and summary["quoted_answer"] == pytest.approx(
        1 / 3
    )
    assert summary["cites"] == pytest.approx(1 / 3) and summary["citation_precision"] == 1.0
    b = summary["behaviour"]
    assert b["top_patterns"][0] == ["search click quote end", pytest.approx(2 / 3)]
    assert b["searches_per_episode"] == pytest.approx(4 / 3)
    assert b["searched_more_than_once"] == b["opened_other_than_first"] == pytest.approx(1 / 3)
    assert b["opened_ranks"] == {"0": 2, "5": 1}
    assert b["p_open_answer_given_listed"] == 0.5 and b["p_quote_given_seen"] == 1.0
    assert b["p_search_again_given_miss"] == 0.5
    report = (out / "report.md").read_text()
    assert "| in a quote (`quoted_answer`) | 0.333 |" in report
    assert "| P(search again \\| results miss) | 0.500 |" in report
    assert (out / "funnel.png").read_bytes()[:4] == b"\x89PNG"

    # a closed-book run beside it: the stages it has no part in show "—"
    closed = tmp_path / "closed"
    closed.mkdir()
    row = {
        **score(BAGHDAD, "Euphrates"),
        "supported": None,
        "citation_valid": None,
        "answer": "Euphrates",
        "actions": 0,
        "invalid_actions": 0,
        "seconds": 1.0,
        "seen_answer": None,
        "in_corpus": 1.0,
        **passages_evidence((), None, 0),
    }
    append_jsonl(closed / "results.jsonl", [row])
    write_reports(closed, {"mode": "closed-book", "model": "scripted", "dataset": "constructed"})
    table = (compare([str(closed), str(out)], str(tmp_path / "cmp")) / "compare.md").read_text()
    assert "| in the top 3 of its searches (`in_top3`) | — | 0.667 |" in table
    assert "| citation precision (supported / cites) (`citation_precision`) | — | 1.000 |" in table
    assert "| searches per episode | 1.333 |" in table and "`browse`: commonest" in table
    assert (tmp_path / "cmp" / "funnel.png").exists()
    assert json.loads((closed / "summary.json").read_text())["behaviour"] is None


def test_rag_rows_have_only_the_stages_of_their_k(wiki):
    holds = CorpusIndex(wiki).holder(BAGHDAD.aliases)
    urls = [h.url for h in wiki.search("Baghdad river", 3)]
    assert passages_evidence(urls, holds, 3) == {"in_top1": 1.0, "in_top3": 1.0, "in_top10": None}


# a train question the shipped policy answers from memory ("Chile") while citing the quote it
# took from the Aconcagua page, which does not name the country, when every sentence is listed
# (--reader none; with the shipped reader it quotes the one naming Argentina: test_reader.py)
ACONCAGUA = (
    "Mt. Aconcagua, the highest peak in the Western Hemisphere, stands in which South American "
    "country?"
)


def ask_aconcagua(index_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`webagent ask ACONCAGUA --json` with the shipped policy (`ask_real`)."""
    return ask_real(index_dir, tmp_path, ACONCAGUA, *args)


def ask_real(
    index_dir: Path, tmp_path: Path, question: str, *args: str
) -> subprocess.CompletedProcess:
    """`webagent ask QUESTION --json` with the shipped policy in fp32 (the answers pinned on it
    are the fp32 policy's; int8 sampling may differ), in a cache of its own that reuses the
    session's index and the prepared real model."""
    from env.paths import cache_root
    from webagent.models import prepare

    prepare("gemma3-270m")  # into the user cache once (the first real-model test may be this one)
    cache = tmp_path / "cache"
    shutil.copytree(index_dir, cache / "index")
    (cache / "models").symlink_to(cache_root() / "models")  # the prepared real model, read only
    env = {
        **os.environ,
        "WEBAGENT_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [WEBAGENT, "ask", question, "--json", "--no-int8", "--max-actions", "10", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_ask_json_marks_an_answer_its_quotes_do_not_support(wiki, index_dir, tmp_path):
    record_file = tmp_path / "eps.jsonl"
    # the word check alone (the citation gate, test_citation_gate.py, would decide first)
    args = ("--reader", "none", "--no-cite-gate", "--record", str(record_file))
    out = ask_aconcagua(index_dir, tmp_path, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    (record,) = read_records(record_file)
    assert data["raw_answer"] == record.raw_answer == record.steps[-1].action.strip()
    assert cited(data["raw_answer"]), "the shipped policy cites its quote here (see above)"
    assert data["supported_by_quotes"] is False, data
    assert not cited(data["answer"]) and data["answer"] == strip_citations(data["raw_answer"])
    assert not any(supports(data["answer"], r["extract"], ACONCAGUA) for r in data["references"])
