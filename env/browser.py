"""`BrowserEnv`: the WebGPT text browser as a Gymnasium environment.

It only composes the layers: the grammar (`commands`), a page source (`sources`), rendering
(`pages`), the observation format (`observation`) and the page cache (`cache`).

Contract (Gymnasium's): `reset(question, *, seed, options) -> (obs, info)` and
`step(text) -> (obs, reward, terminated, truncated, info)`. A bad command or a page error never
raises: it costs one action, changes nothing else, goes to `info["action_error"]` and into the
next observation. `End: Answer` (or the action budget, or the quote budget) starts the answer
phase, whose single step is the answer text; then the episode terminates and `info["record"]`
holds the finished `EpisodeRecord`, whose answer keeps only the `[n]` its quotes support
(`EpisodeRecord.finish_answer`; the answer as written stays in `raw_answer`).
`End: Nonsense` / `End: Controversial` terminate at once.
With `answer_on_budget=False`, running out of actions truncates the episode instead.
"""

from __future__ import annotations

import bisect
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from env import commands as cmds
from env.admissible import Admissible, admissible_actions
from env.cache import PageCache
from env.config import EnvConfig, config_from_dict, config_to_dict  # noqa: F401 (re-exported)
from env.errors import BlockedURL, CacheError, PageError
from env.observation import (
    SavedQuote,
    escape,
    normalize,
    render_answer,
    render_browse,
    strip_markup,
    title_line,
    truncate,
    valid_text,
)
from env.pages import Page
from env.questions import check_question
from env.record import EpisodeRecord, Step
from env.search import domain_blocked, results_page, shares_ngram
from env.sources.base import PageSource

# ----------------------------------------------------------------------------- spaces


class AnyText(gym.spaces.Space):
    """Any `str`: Gymnasium's Text space rejects punctuation, which every command and page has."""

    def __init__(self, sampler: Callable[[Any], str] | None = None, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self._sampler = sampler

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if self._sampler is None:
            return ""
        return self._sampler(self.np_random)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "AnyText()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyText)


def _sample_command(np_random: Any) -> str:
    import random

    return str(cmds.sample(random.Random(int(np_random.integers(2**31)))))


# ----------------------------------------------------------------------------- page text


def _fold(c: str) -> str:
    if c.isspace():
        return " "
    low = c.lower()
    return low[0] if low else c


class PageText:
    """A page's text without link markup, with a case/space-folded copy for matching.

    `find` matches the folded needle in the folded text and maps the hit back to the plain
    text, so quotes keep the page's own spelling while matching ignores case and spacing.
    """

    def __init__(self, lines: Sequence[str]):
        plain_lines = [strip_markup(line) for line in lines]
        self.plain = "\n".join(plain_lines)
        self.line_starts: list[int] = []
        pos = 0
        for line in plain_lines:
            self.line_starts.append(pos)
            pos += len(line) + 1
        folded: list[str] = []
        self.index: list[int] = []
        prev_space = True
        for i, c in enumerate(self.plain):
            f = _fold(c)
            if f == " ":
                if prev_space:
                    continue
                prev_space = True
            else:
                prev_space = False
            folded.append(f)
            self.index.append(i)
        self.folded = "".join(folded)

    @staticmethod
    def fold(text: str) -> str:
        return "".join(_fold(c) for c in normalize(text))

    def find(self, needle: str, start: int = 0) -> tuple[int, int] | None:
        """Plain-text span [a, b) of the first folded match at or after folded offset `start`."""
        folded = self.fold(needle)
        if not folded:
            return None
        at = self.folded.find(folded, start)
        if at < 0:
            return None
        return self.index[at], self.index[at + len(folded) - 1] + 1

    def folded_offset(self, plain_pos: int) -> int:
        return bisect.bisect_left(self.index, plain_pos)

    def line_of(self, plain_pos: int) -> int:
        return bisect.bisect_right(self.line_starts, plain_pos) - 1

    def extract(self, a: int, b: int) -> str:
        return re.sub(r"\s+", " ", self.plain[a:b]).strip()


# ----------------------------------------------------------------------------- environment


class BrowserEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        source: PageSource,
        config: EnvConfig | None = None,
        *,
        cache: PageCache | None = None,
        questions: Sequence[str] = (),
        replay_pages: dict[str, list[str]] | None = None,
        render_mode: str | None = "ansi",
    ):
        """`questions` are drawn from when `reset` gets none (as `check_env` calls it).

        `replay_pages` maps recorded requests ('search:<q>' or URL) to the page ids they gave,
        in order (see `replay_map`): every page then comes from `cache`, verified by its hash,
        and the source is never called.
        """
        self.source = source
        self.config = config or EnvConfig()
        self.cache = cache
        self.questions = list(questions)
        self.replay_pages = replay_pages
        if replay_pages is not None and cache is None:
            raise ValueError("replay needs the page cache the episode was recorded with")
        self.render_mode = render_mode
        self.observation_space = AnyText()
        self.action_space = AnyText(_sample_command)
        self._text_cache: dict[str, PageText] = {}
        self._reset_state("", None)

    # -- state ------------------------------------------------------------------------
    def _reset_state(self, question: str, seed: int | None, meta: dict | None = None) -> None:
        self.question = question
        self.quotes: list[SavedQuote] = []
        # the question and past actions are in every observation: each is escaped once, here
        self._shown_question = escape(question)
        self.past_actions: list[str] = []  # escaped as each is added
        self.history: list[tuple[Page, int]] = []
        self.page: Page | None = None
        self.page_id: str | None = None
        self.cursor = 0
        self.actions_used = 0
        self.phase = "browse"
        self.end: str | None = None
        self.error: str | None = None
        self._replay_queue = {k: list(v) for k, v in (self.replay_pages or {}).items()}
        self.record = EpisodeRecord(
            id=uuid.uuid4().hex,
            question=question,
            source=getattr(self.source, "name", type(self.source).__name__),
            seed=seed,
            meta={**(meta or {}), "env": config_to_dict(self.config)},
        )

    @property
    def actions_left(self) -> int:
        return max(0, self.config.limits.max_actions - self.actions_used)

    def observation(self) -> str:
        """The text the policy sees now (browse or answer phase)."""
        if self.phase != "browse":
            return render_answer(question=self.question, quotes=self.quotes)
        page = self.page
        title = None
        if page is not None:
            title = page.title if page.kind == "search" else title_line(page.title, page.url)
        return render_browse(
            question=self._shown_question,
            quotes=self.quotes,
            past_actions=self.past_actions,
            title=title,
            lines=page.lines if page else (),
            cursor=self.cursor,
            window_lines=self.config.limits.window_lines,
            actions_left=self.actions_left,
            error=self.error,
            max_past_actions=self.config.limits.max_past_actions_shown,
            history_escaped=True,
        )

    def admissible(self) -> Admissible:
        """What is worth trying now, for decoding-time masks (like TextWorld's admissible commands).

        Whole commands where the argument can be listed (searches with the question's words,
        links in view, scroll amounts, the
        sentences in view to quote unless this page is quoted already, Back, Top, End: Answer once
        something is quoted) and bare
        keywords where it is free text (Find in page:). With two actions left and nothing
        quoted, only quoting (or opening a result to quote from) remains. In the answer phase: a short span
        of a quote followed by its citation (extractive answers). A weak policy (a few-shot base
        model) decodes only these; the environment itself still accepts any command.
        """
        return admissible_actions(self)

    def _info(self, command: cmds.Command | None = None) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "command": cmds.to_dict(command) if command is not None else None,
            "action_error": self.error,
            "quotes": [q.__dict__.copy() for q in self.quotes],
            "url": self.page.url if self.page else None,
            "page_id": self.page_id,
            "actions_left": self.actions_left,
            "end": self.end,
        }

    # -- gymnasium API ----------------------------------------------------------------
    def reset(
        self,
        question: str | None = None,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode. The question comes from the argument, `options["question"]`, or
        (when neither) one of `questions` drawn with the seeded generator. A question that
        cannot be asked raises `env.questions.QuestionError` (see `check_question`)."""
        super().reset(seed=seed)
        options = options or {}
        if question is None:
            question = options.get("question")
        if question is None:
            question = (
                self.questions[int(self.np_random.integers(len(self.questions)))]
                if self.questions
                else ""
            )
        self._reset_state(check_question(question), seed, options.get("meta"))
        return self.observation(), self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.phase == "done":
            raise RuntimeError("the episode is over: call reset() before step()")
        if isinstance(action, str):
            action = valid_text(action)  # the record must be writable whatever was sent
        observation = self.observation()
        if self.phase == "answer":
            return self._answer(observation, action)
        return self._browse(observation, action)

    def render(self) -> str:
        return self.observation()

    # -- browse phase -----------------------------------------------------------------
    def _browse(self, observation: str, action: str) -> tuple[str, float, bool, bool, dict]:
        self.error = None
        self.actions_used += 1
        step = Step(
            observation=observation, action=action if isinstance(action, str) else repr(action)
        )
        command: cmds.Command | None = None
        try:
            command = cmds.parse(action)
        except cmds.CommandError as exc:
            self.error = f"invalid action: {exc}"
            shown = step.action.strip().replace("\n", " ")
            self.past_actions.append(escape(f"{truncate(shown, 80)} (invalid)"))
        else:
            step.command = cmds.to_dict(command)
            try:
                step.request = self._apply(command)
            except PageError as exc:
                self.error = str(exc)
            self.past_actions.append(escape(str(command) + (" (failed)" if self.error else "")))
        step.error = self.error
        step.page_id = self.page_id
        self.record.steps.append(step)

        truncated = False
        if self.phase == "browse" and self.actions_left == 0:
            self.end = "budget"
            if self.config.answer_on_budget:
                self.phase = "answer"
            else:
                self.phase = "done"
                truncated = True
        terminated = self.phase == "done" and not truncated
        info = self._info(command)
        if self.phase == "done":
            info["record"] = self._finish()
        return self.observation(), 0.0, terminated, truncated, info

    def _apply(self, command: cmds.Command) -> str | None:
        """Carry out a parsed command; PageError for anything the model should be told."""
        limits = self.config.limits
        if isinstance(command, cmds.Search):
            if len(command.query) > limits.max_query_chars:
                raise PageError(
                    f"query too long ({len(command.query)} > {limits.max_query_chars} chars)"
                )
            request = f"search:{command.query}"
            self._go(self._load(request))
            return request
        if isinstance(command, cmds.Click):
            page = self._require_page()
            if command.link_id >= len(page.links):
                n = len(page.links)
                raise PageError(
                    f"there is no link {command.link_id} on this page "
                    + (f"(links are numbered 0 to {n - 1})" if n else "(it has no links)")
                )
            url = page.links[command.link_id].url
            if domain_blocked(url, self.config.blocked_domains):
                raise BlockedURL(f"{url}: domain is blocked")
            self._go(self._load(url))
            return url
        if isinstance(command, cmds.Find):
            self._find(command.text)
        elif isinstance(command, cmds.Quote):
            self._quote(command)
        elif isinstance(command, cmds.Scroll):
            self._scroll(command)
        elif isinstance(command, cmds.Top):
            self._require_page()
            self.cursor = 0
        elif isinstance(command, cmds.Back):
            if not self.history:
                raise PageError("there is no previous page to go back to")
            self.page, self.cursor = self.history.pop()
            self.page_id = self.page.id
        elif isinstance(command, cmds.End):
            self.end = command.kind
            self.phase = "answer" if command.kind == "answer" else "done"
        return None

    def _require_page(self) -> Page:
        if self.page is None:
            raise PageError("no page is open yet: start with Search <query>")
        return self.page

    def _go(self, page: Page) -> None:
        if self.page is not None:
            self.history.append((self.page, self.cursor))
        self.page, self.page_id, self.cursor = page, page.id, 0

    def _load(self, request: str) -> Page:
        """Fetch (or, in replay, look up) the page for a request and store it in the cache."""
        if self.replay_pages is not None:
            assert self.cache is not None
            queue = self._replay_queue.get(request)
            if not queue:
                raise CacheError(f"the recorded episode never opened {request!r}")
            return self.cache.get(queue.pop(0) if len(queue) > 1 else queue[0])
        if request.startswith("search:"):
            query = request.removeprefix("search:")
            hits = self.source.search(query, self.config.search_results)
            hits = [h for h in hits if not domain_blocked(h.url, self.config.blocked_domains)]
            page = results_page(query, hits)
        else:
            page = self.source.get(request)
            if self.config.hide_question_pages and shares_ngram(
                self.question, strip_markup(page.text)
            ):
                page = Page(
                    url=page.url,
                    title=page.title,
                    lines=("(This page is hidden because it contains the question.)",),
                )
        if self.cache is not None:
            self.cache.put(page, source=self.record.source)
        return page

    def _text(self, page: Page) -> PageText:
        key = page.id
        if key not in self._text_cache:
            if len(self._text_cache) > 64:
                self._text_cache.clear()
            self._text_cache[key] = PageText(page.lines)
        return self._text_cache[key]

    def _find(self, text: str) -> None:
        page = self._require_page()
        pt = self._text(page)
        start_line = self.cursor + 1
        start = (
            pt.folded_offset(pt.line_starts[start_line])
            if start_line < len(pt.line_starts)
            else len(pt.folded)
        )
        span = pt.find(text, start) or pt.find(text, 0)  # wrap to the top after the last match
        if span is None:
            raise PageError(f"no match for {text!r} on this page")
        self.cursor = pt.line_of(span[0])

    def _quote(self, command: cmds.Quote) -> None:
        page = self._require_page()
        pt = self._text(page)
        limits = self.config.limits
        if command.span is None:
            span = pt.find(command.text)
            if span is None:
                raise PageError("quote not found on this page: quote text exactly as it appears")
        else:
            first, last = command.span
            a = pt.find(first)
            if a is None:
                raise PageError(f"quote start {first!r} not found on this page")
            b = pt.find(last, pt.folded_offset(a[0]) + len(PageText.fold(first)))
            if b is None:
                raise PageError(f"quote end {last!r} not found after its start")
            span = (a[0], b[1])
        extract = truncate(pt.extract(*span), limits.max_quote_chars)
        room = limits.max_total_quote_chars - sum(len(q.extract) for q in self.quotes)
        full = len(extract) >= room  # this quote fills the total: cut it, then stop browsing
        extract = truncate(extract, room)
        self.quotes.append(SavedQuote(len(self.quotes) + 1, page.title, page.url, extract))
        if full:
            self.end = "quote_limit"
            self.phase = "answer"

    def _scroll(self, command: cmds.Scroll) -> None:
        page = self._require_page()
        window = self.config.limits.window_lines
        last_start = max(0, len(page.lines) - window)
        if command.direction == "down":
            if self.cursor >= last_start:
                raise PageError("already at the bottom of the page")
            self.cursor = min(self.cursor + command.amount * window, last_start)
        else:
            if self.cursor == 0:
                raise PageError("already at the top of the page")
            self.cursor = max(0, self.cursor - command.amount * window)

    # -- answer phase -----------------------------------------------------------------
    def _answer(self, observation: str, answer: str) -> tuple[str, float, bool, bool, dict]:
        answer = answer if isinstance(answer, str) else str(answer)
        self.record.steps.append(Step(observation=observation, action=answer, phase="answer"))
        self.record.finish_answer(answer, self.quotes)
        self.phase = "done"
        info = self._info()
        info["record"] = self._finish()
        return observation, 0.0, True, False, info

    def _finish(self) -> EpisodeRecord:
        self.record.quotes = list(self.quotes)
        self.record.end = self.end
        self.record.meta.setdefault("finished_at", time.time())
        return self.record


def replay_map(record: EpisodeRecord) -> dict[str, list[str]]:
    """Requests a recorded episode made -> the page ids it was shown, in order (for replay)."""
    out: dict[str, list[str]] = {}
    for s in record.steps:
        if s.request and s.page_id:
            out.setdefault(s.request, []).append(s.page_id)
    return out
