"""Metric functions against hand-checked cases, and every dataset layout."""

import json

import pytest

from webagent.datasets import DatasetError, load_questions
from webagent.metrics import citation_valid, contains, exact_match, f1, normalize_answer, supported

ALIASES = ["The Tigris", "Tigris River", "Dicle"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Tigris!", "tigris"),
        ("  An_apple a DAY ", "apple day"),
        ("Rock 'n' Roll", "rock n roll"),
        ("‘Quoted’ ´word`", "quoted word"),
        ("Café", "café"),
        ("Cafe\u0301", "café"),  # decomposed é equals composed é
        ("1,000,000", "1 000 000"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "em", "f1_", "has"),
    [
        ("The Tigris [1]", 1.0, 1.0, 1.0),
        ("tigris", 1.0, 1.0, 1.0),
        ("Tigris river[2][3]", 1.0, 1.0, 1.0),
        ("The river Tigris [1]", 0.0, 1.0, 1.0),  # same tokens as "Tigris River", other order
        ("Euphrates [1]", 0.0, 0.0, 0.0),
        ("Dicle", 1.0, 1.0, 1.0),
        ("", 0.0, 0.0, 0.0),
        (None, 0.0, 0.0, 0.0),
        ("Tigrisriver", 0.0, 0.0, 0.0),  # whole words only for contains
    ],
)
def test_em_f1_contains(answer, em, f1_, has):
    assert exact_match(answer, ALIASES) == em
    assert f1(answer, ALIASES) == pytest.approx(f1_)
    assert contains(answer, ALIASES) == has


def test_f1_partial_and_numbers():
    assert f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert exact_match("1989 [1]", ["1989"]) == 1.0
    assert exact_match("in 1989", ["1989"]) == 0.0 and contains("in 1989", ["1989"]) == 1.0
    assert exact_match("São Paulo", ["Sao Paulo", "São Paulo"]) == 1.0
    assert exact_match("Sao Paulo", ["São Paulo"]) == 0.0  # TriviaQA keeps accents


def test_citations_and_support():
    quotes = ["The Tigris passes through Baghdad.", "Baghdad is in Iraq."]
    assert citation_valid("Tigris [1]", 2) == 1.0
    assert citation_valid("Tigris [3]", 2) == 0.0
    assert citation_valid("Tigris [1][3]", 2) == 0.0
    assert citation_valid("Tigris", 2) == 0.0
    assert supported("Tigris [1]", ALIASES, quotes) == 1.0
    assert supported("Tigris [2]", ALIASES, quotes) == 0.0  # cites a quote that does not say it
    assert supported("Tigris", ALIASES, quotes) == 0.0  # cites nothing
    assert (
        supported("Euphrates [1]", ALIASES, quotes) == 0.0
    )  # the quote says Tigris, the answer not


def test_our_jsonl_layout(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(
        json.dumps(
            {
                "question_id": "a1",
                "question": "Q?",
                "answer": {"value": "X", "aliases": ["X", "Ex"]},
            }
        )
        + "\n\n"
    )
    (q,) = load_questions(p)
    assert (q.id, q.question, q.answer, q.aliases) == ("a1", "Q?", "X", ("X", "Ex"))


def test_official_triviaqa_layout(tmp_path):
    p = tmp_path / "web-dev.json"
    data = {
        "Data": [
            {
                "Question": "Q1?",
                "QuestionId": "tc_1",
                "Answer": {"Value": "V", "Aliases": ["V", "W"], "NormalizedAliases": ["v", "w"]},
            }
        ],
        "Version": 1.0,
    }
    p.write_text(json.dumps(data, indent=1))
    (q,) = load_questions(p)
    assert (q.id, q.aliases) == ("tc_1", ("V", "W"))


def test_nq_open_layout(tmp_path):
    p = tmp_path / "nq.jsonl"
    p.write_text(
        json.dumps(
            {"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]}
        )
        + "\n"
    )
    (q,) = load_questions(p)
    assert q.answer == "William Shakespeare" and q.aliases == ("William Shakespeare", "Shakespeare")
    assert q.id.startswith("q_")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"question": "a", "answer": {"value": "x", "aliases": []}}\n{broken\n',
            ":2: not valid JSON",
        ),
        ('{"question": "", "answer": ["x"]}\n', ":1: no question"),
        ('{"question": "q", "answer": 5}\n', ":1: answer must be"),
        ('{"question": "q", "answer": {"aliases": ["x"]}}\n', ":1: answer needs"),
        ("", "no questions"),
        (
            '{"question_id": "d", "question": "a", "answer": ["x"]}\n{"question_id": "d", "question": "b", "answer": ["y"]}\n',
            "appears twice",
        ),
    ],
)
def test_malformed_rows_name_their_line(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_questions(p)


def test_questions_without_answers_load_only_when_asked(tmp_path):
    """PPO and person-labelled comparisons need no answers; evaluation does."""
    p = tmp_path / "open.jsonl"
    p.write_text('{"question": "Why is the sky blue?"}\n{"question": "b", "answer": ["y"]}\n')
    with pytest.raises(DatasetError, match=":1: answer must be"):
        load_questions(p)
    unlabelled, labelled = load_questions(p, require_answers=False)
    assert unlabelled.question == "Why is the sky blue?" and unlabelled.aliases == ()
    assert labelled.aliases == ("y",)
    p.write_text('{"question": "a", "answer": 7}\n')
    with pytest.raises(DatasetError, match="answer must be"):
        load_questions(p, require_answers=False)


def test_shared_dev_set_loads():
    from conftest import SHARED

    path = SHARED / "triviaqa" / "dev.jsonl"
    if not path.exists():
        pytest.skip("../shared/data is not beside the repo")
    questions = load_questions(path)
    assert len(questions) == 300 and all(q.aliases for q in questions)


def test_unicode_line_separators_inside_a_question_are_text(tmp_path):
    p = tmp_path / "q.jsonl"
    row = {
        "question_id": "u",
        "question": "Sutherland Brothers and\u2028Quiver\x85?",
        "answer": {"value": "Q", "aliases": []},
    }
    p.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (q,) = load_questions(p)
    assert q.question == row["question"]


def test_holds_alias_matches_whole_normalised_words():
    from webagent.metrics import holds_alias

    assert holds_alias("It flows through Baghdad.", ["baghdad", ""])
    assert not holds_alias("Baghdadi food", ["Baghdad"]) and not holds_alias(None, ["x"])
    assert not holds_alias("anything", ["", "The"]), "an alias that normalises to nothing"


def test_retriever_positives_agree_with_holds_alias():
    """The retriever's indexed positives are `holds_alias` made fast: same answers."""
    from webagent.datasets import Question
    from webagent.metrics import holds_alias
    from webagent.train_retriever import positives

    texts = [
        "The Tigris flows south through Baghdad.",
        "Tigris-river? No: the Tigris River, in Turkish the Dicle.",
        "Tigrisriver is one word.",
        "An apple a day.",
        "",
    ]
    questions = [
        Question("q1", "Which river?", "The Tigris", tuple(ALIASES)),
        Question("q2", "Fruit?", "apple", ("an apple", "Apples")),
        Question("q3", "Nothing?", "x", ("",)),
    ]
    for q, found in zip(questions, positives(texts, questions), strict=True):
        assert found.tolist() == [i for i, t in enumerate(texts) if holds_alias(t, q.aliases)]
    assert positives(texts, questions)[0].tolist() == [0, 1]
