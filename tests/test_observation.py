"""Golden observations: the exact characters a model sees are pinned in tests/golden/.

Regenerate after an intended format change with `UPDATE_GOLDEN=1 pytest tests/test_observation.py`
and review the diff.
"""

import os
from pathlib import Path

import pytest

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.observation import (
    SavedQuote,
    domain,
    escape,
    link_marker,
    normalize,
    render_answer,
    render_browse,
    strip_markup,
)

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


QUOTES = [
    SavedQuote(1, "Tigris", "https://en.wikipedia.org/wiki/Tigris", "The Tigris flows south.")
]


def test_golden_browse_observation():
    text = render_browse(
        question="Which river flows through Baghdad?",
        quotes=QUOTES,
        past_actions=[
            "Search Baghdad river",
            "Clicked on link 0",
            "Quote: The Tigris flows south.",
        ],
        title="Baghdad (en.wikipedia.org)",
        lines=[f"line {i} 【{i}†link {i}】" for i in range(30)],
        cursor=10,
        window_lines=5,
        actions_left=96,
    )
    check_golden("browse.txt", text)


def test_golden_first_and_error_and_answer_observations():
    first = render_browse(
        question="Q?",
        quotes=[],
        past_actions=[],
        title=None,
        lines=[],
        cursor=0,
        window_lines=10,
        actions_left=100,
    )
    check_golden("first.txt", first)
    error = render_browse(
        question="Q?",
        quotes=[],
        past_actions=["Back (failed)"],
        title=None,
        lines=[],
        cursor=0,
        window_lines=10,
        actions_left=99,
        error="there is no previous page to go back to",
    )
    check_golden("error.txt", error)
    check_golden("answer.txt", render_answer(question="Which river?", quotes=QUOTES))


def test_golden_real_episode_on_local_wikipedia(wiki):
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(window_lines=6)))
    env.reset("Which river flows through Baghdad?")
    env.step("Search Baghdad river")
    obs, *_ = env.step("Clicked on link 0")
    check_golden("wiki_baghdad.txt", obs)


def test_past_actions_are_summarised_beyond_the_limit():
    text = render_browse(
        question="q",
        quotes=[],
        past_actions=[f"Top {i}" for i in range(25)],
        title=None,
        lines=[],
        cursor=0,
        window_lines=10,
        actions_left=75,
        max_past_actions=20,
    )
    assert "(5 earlier actions)\nTop 5\n" in text and "Top 4\n" not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.bbc.co.uk/news", "bbc.co.uk"),
        ("https://en.wikipedia.org/wiki/X", "en.wikipedia.org"),
        ("search:?q=x", ""),
        ("http://127.0.0.1:8000/a", "127.0.0.1"),
    ],
)
def test_domain(url, expected):
    assert domain(url) == expected


def test_link_marker_same_site_and_escaping():
    page = "https://en.wikipedia.org/wiki/A"
    assert link_marker(3, "Iraq", "https://en.wikipedia.org/wiki/Iraq", page) == "【3†Iraq】"
    assert link_marker(4, "BBC", "https://www.bbc.com/x", page) == "【4†BBC†bbc.com】"
    assert link_marker(5, "a 【b】 † c\n d", "https://x.org", page) == "【5†a [b] + c d†x.org】"
    assert escape("【●━†】") == "[•-+]"


def test_strip_and_normalize():
    assert strip_markup("on the 【4†Tigris】 and 【5†Nile†x.org】.") == "on the Tigris and Nile."
    assert normalize("  The 【1†TIGRIS】\n flows ") == "the tigris flows"
