"""The command grammar: table-driven valid and invalid cases, and round trips under fuzzing."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from env import commands as c

VALID = [
    ("Search Baghdad river", c.Search("Baghdad river")),
    ("  search   who wrote hamlet?  ", c.Search("who wrote hamlet?")),
    ("SEARCH 1954 【odd】 chars", c.Search("1954 【odd】 chars")),
    ("Clicked on link 0", c.Click(0)),
    ("clicked  on  LINK 12", c.Click(12)),
    ("Find in page: Tigris", c.Find("Tigris")),
    ("find in page:flows south", c.Find("flows south")),
    ("Quote: The Tigris flows south", c.Quote("The Tigris flows south")),
    ("Quote: The Tigris━south", c.Quote("The Tigris━south")),
    ("Scrolled down 1", c.Scroll("down", 1)),
    ("scrolled UP 3", c.Scroll("up", 3)),
    ("Scrolled down", c.Scroll("down", 1)),
    ("Top", c.Top()),
    ("  back ", c.Back()),
    ("End: Answer", c.End("answer")),
    ("end:nonsense", c.End("nonsense")),
    ("End: CONTROVERSIAL", c.End("controversial")),
]

INVALID = [
    ("", "empty"),
    ("   ", "empty"),
    ("Search", "unknown command"),
    ("Search   ", "unknown command"),
    ("Clicked on link", "unknown command"),
    ("Clicked on link -1", "non-negative"),
    ("Clicked on link 3.5", "non-negative"),
    ("Clicked on link two", "non-negative"),
    ("Find in page:", "unknown command"),
    ("Quote:", "unknown command"),
    ("Quote: start━", "both sides"),
    ("Quote: ━end", "both sides"),
    ("Scrolled down 4", "1, 2 or 3"),
    ("Scrolled sideways 1", "unknown command"),
    ("Topp", "unknown command"),
    ("Back please", "unknown command"),
    ("End: Maybe", "unknown command"),
    ("End", "unknown command"),
    ("Search a\nClicked on link 1", "one line"),
    ("I think the answer is Paris", "unknown command"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parse_valid(text, expected):
    assert c.parse(text) == expected


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_parse_invalid(text, reason):
    with pytest.raises(c.CommandError, match=reason):
        c.parse(text)


def test_parse_rejects_non_text():
    with pytest.raises(c.CommandError):
        c.parse(None)  # type: ignore[arg-type]


def test_quote_span():
    assert c.Quote("from here ━ to there").span == ("from here", "to there")
    assert c.Quote("plain").span is None


@pytest.mark.parametrize(("_", "command"), VALID)
def test_canonical_text_and_dict_round_trip(_, command):
    assert c.parse(str(command)) == command
    assert c.from_dict(c.to_dict(command)) == command


def test_sample_is_always_valid():
    rng = random.Random(0)
    kinds = set()
    for _ in range(500):
        command = c.sample(rng)
        kinds.add(type(command))
        assert c.parse(str(command)) == command
    assert kinds == set(c.COMMAND_NAMES)


def test_describe_mentions_every_command():
    text = c.describe()
    for keyword in [
        "Search",
        "Clicked on link",
        "Find in page:",
        "Quote:",
        "Scrolled down",
        "Scrolled up",
        "Top",
        "Back",
        "End: Answer",
        "End: Nonsense",
        "End: Controversial",
    ]:
        assert keyword in text


@given(st.text(max_size=200))
def test_parse_never_raises_anything_but_command_error(text):
    try:
        command = c.parse(text)
    except c.CommandError:
        return
    # whatever parses must print back to something that parses to the same command
    assert c.parse(str(command)) == command


words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda s: s.strip() and "\n" not in s and "\r" not in s)


@given(words)
def test_search_and_find_round_trip_any_text(q):
    q = " ".join(q.split())
    if not q:
        return
    assert c.parse(f"Search {q}") == c.Search(q)
    assert c.parse(f"Find in page: {q}") == c.Find(q)


def test_keywords_cover_every_command_and_each_parses_with_an_argument():
    args = {"Search": " x", "Clicked on link": " 1", "Find in page:": " x", "Quote:": " x"}
    parsed = {type(c.parse(k + args.get(k, ""))) for k in c.KEYWORDS}
    assert parsed == set(c.COMMAND_NAMES)
