"""Prompt formats: the one place that turns an observation into the text a model continues.

Two styles. A base model gets plain text: a short instruction, a few worked example steps (real
observations rendered by `env.observation`, so examples and live pages can never drift apart),
then the current observation; it continues with one command line. A model with a chat template
gets the same content as system/user/assistant turns. The answer phase works the same way
with the question and numbered quotes; its completion is a short answer citing `[n]`.

The example steps are built once from the same Baghdad/Tigris pages the local Wikipedia shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from env.commands import describe
from env.observation import SavedQuote, render_answer, render_browse, render_passages

Phase = Literal["browse", "answer", "closed_book", "rag"]

BROWSE_INSTRUCTION = (
    "You browse the web to answer a question. At each step you see the browser and write "
    "exactly one command on one line. Commands:\n" + describe() + "\n"
    "Search for the question's key words, open the best result, quote the sentence that "
    "answers the question, then End: Answer."
)
BASE_BROWSE_INSTRUCTION = (
    "Worked examples of a browser used to answer questions, one command per step."
)
"""A base model learns the commands from the examples; a command list only invites copying."""
ANSWER_INSTRUCTION = (
    "Answer each question with a short answer. Use the passages given with it and cite the "
    "ones that support the answer as [n]."
)
_SENTINEL = "@@OBSERVATION@@"
NO_QUOTES_ANSWER = ""
"""What the runner submits when browsing collected no quotes: no answer is attempted."""


@dataclass(frozen=True)
class _Worked:
    """One worked episode: search, open the best result, quote the answer, end, answer."""

    question: str
    query: str
    results: list[str]
    title: str
    url: str
    page: list[str]
    quote: str
    answer: str

    def steps(self) -> list[tuple[str, str]]:
        """(observation, command) pairs, rendered by the live observation formatter."""

        def obs(past: list[str], title: str | None, lines: list[str], quotes=()) -> str:
            return render_browse(
                question=self.question,
                quotes=list(quotes),
                past_actions=past,
                title=title,
                lines=lines,
                cursor=0,
                window_lines=10,
                actions_left=100 - len(past),
            )

        s1, s2, s3 = f"Search {self.query}", "Clicked on link 0", f"Quote: {self.quote}"
        page_title = f"{self.title} (en.wikipedia.org)"
        return [
            (obs([], None, []), s1),
            (obs([s1], f"Search results for: {self.query}", self.results), s2),
            (obs([s1, s2], page_title, self.page), s3),
            (obs([s1, s2, s3], page_title, self.page, [self.saved]), "End: Answer"),
        ]

    @property
    def saved(self) -> SavedQuote:
        return SavedQuote(1, self.title, self.url, self.quote)

    def answer_step(self) -> tuple[str, str]:
        return render_answer(question=self.question, quotes=[self.saved]), self.answer


# Real summaries from the local Wikipedia, shortened; links as the browser renders them.
_WORKED = [
    _Worked(
        question="Which river flows through Baghdad?",
        query="Baghdad river",
        results=[
            "【0†Tigris†en.wikipedia.org】",
            "en.wikipedia.org/wiki/Tigris",
            "The river flows south from the mountains of southeastern Turkey through Iraq.",
            "【1†Baghdad†en.wikipedia.org】",
            "en.wikipedia.org/wiki/Baghdad",
            "Capital of Iraq Baghdad is the capital and largest city in Iraq.",
        ],
        title="Tigris",
        url="https://en.wikipedia.org/wiki/Tigris",
        page=[
            "River in Western Asia",
            "The Tigris is the eastern of the two great rivers that define Mesopotamia, the other being the",
            "【0†Euphrates】. The river flows south from the mountains of southeastern 【1†Turkey】 through 【2†Iraq】",
            "and empties into the 【3†Persian Gulf】. The Tigris passes through 【4†Baghdad】, the capital of Iraq.",
        ],
        quote="The Tigris passes through Baghdad, the capital of Iraq.",
        answer="The Tigris [1]",
    ),
    _Worked(
        question="Who wrote the novel Nineteen Eighty-Four?",
        query="Nineteen Eighty-Four novel",
        results=[
            "【0†Nineteen Eighty-Four†en.wikipedia.org】",
            "en.wikipedia.org/wiki/Nineteen_Eighty-Four",
            "Nineteen Eighty-Four is a dystopian novel by the English writer George Orwell.",
            "【1†Brave New World†en.wikipedia.org】",
            "en.wikipedia.org/wiki/Brave_New_World",
            "Brave New World is a dystopian novel by English author Aldous Huxley.",
        ],
        title="Nineteen Eighty-Four",
        url="https://en.wikipedia.org/wiki/Nineteen_Eighty-Four",
        page=[
            "1949 novel by George Orwell",
            "Nineteen Eighty-Four is a dystopian novel and cautionary tale by the English writer 【0†George Orwell】.",
            "It was published on 8 June 1949 by Secker & Warburg as Orwell's ninth and final book completed in",
            "his lifetime. Thematically, it centres on the consequences of 【1†totalitarianism】 and mass surveillance.",
        ],
        quote="Nineteen Eighty-Four is a dystopian novel and cautionary tale by the English writer George Orwell.",
        answer="George Orwell [1]",
    ),
]


def _example_steps() -> list[tuple[str, str]]:
    """(observation, command) pairs of the worked episodes, one episode after the other."""
    return [step for worked in _WORKED for step in worked.steps()]


_ANSWER_EXAMPLES = [worked.answer_step() for worked in _WORKED] + [
    (
        render_answer(
            question="In which year did the Berlin Wall fall?",
            quotes=[
                SavedQuote(
                    1,
                    "Berlin Wall",
                    "https://en.wikipedia.org/wiki/Berlin_Wall",
                    "The Berlin Wall fell on 9 November 1989, opening the border.",
                ),
                SavedQuote(
                    2,
                    "Fall of the Berlin Wall",
                    "https://en.wikipedia.org/wiki/Fall_of_the_Berlin_Wall",
                    "The fall of the Berlin Wall on 9 November 1989 was a pivotal event.",
                ),
            ],
        ),
        "1989 [1][2]",
    )
]


QA_INSTRUCTION = "Answer each question with a short answer."
RAG_INSTRUCTION = "Answer each question with a short answer. Use the passages given with it."


def qa_observation(question: str, passages: Sequence[tuple[str, str]] = ()) -> str:
    """The question (after numbered passages, for retrieve-then-read), cueing the answer."""
    return render_passages(question, [(f"[{i}] {t}", x) for i, (t, x) in enumerate(passages, 1)])


# the same four questions as the measured reference baselines: 4 worked examples, no passages
_QA_EXAMPLES = [
    (qa_observation("Which river flows through Baghdad?"), "Tigris"),
    (qa_observation("Who wrote the novel Nineteen Eighty-Four?"), "George Orwell"),
    (qa_observation("In which year did the Berlin Wall fall?"), "1989"),
    (qa_observation("What is the capital city of Australia?"), "Canberra"),
]


FEW_SHOT_EXAMPLES = 8
"""Worked example steps in a base model's prompts (two episodes): it acts few-shot."""


@dataclass(frozen=True)
class PromptFormat:
    """How one model is prompted. `chat_template` is the tokenizer's, when it has one."""

    style: Literal["base", "chat"] = "base"
    examples: int = FEW_SHOT_EXAMPLES
    """Worked example steps shown before the live observation (0 to disable)."""
    chat_template: str | None = None

    @property
    def add_special_tokens(self) -> bool:
        """Base prompts need the tokenizer's BOS added; chat templates write their own."""
        return self.style == "base"

    @cached_property
    def _browse_examples(self) -> list[tuple[str, str]]:
        return _example_steps()[: self.examples]

    def browse(self, observation: str, tokenizer=None) -> str:
        """The prompt for one browse step; the completion is one command line."""
        instruction = BROWSE_INSTRUCTION if self.style == "chat" else BASE_BROWSE_INSTRUCTION
        return self._render(instruction, self._browse_examples, observation, tokenizer, "browse")

    def answer(self, observation: str, tokenizer=None) -> str:
        """The prompt for the answer phase; the completion is the answer citing [n]."""
        shots = _ANSWER_EXAMPLES if self.examples else []
        return self._render(ANSWER_INSTRUCTION, shots, observation, tokenizer, "answer")

    def lead(self, phase: Phase | str) -> str:
        """What joins a prompt and its completion: a base prompt's answer continues its
        `Answer:` line after a space (training targets and the decoding aid's answers agree)."""
        return " " if self.style == "base" and phase in ("answer", "closed_book", "rag") else ""

    def static_prefix(self, phase: Phase, tokenizer=None) -> str:
        """The part of every prompt of this phase that comes before the observation.

        The policy computes its key/value cache once and reuses it for every step.
        """
        text = self.prompt(phase, _SENTINEL, tokenizer)
        return text[: text.index(_SENTINEL)]

    def closed_book(self, question: str, tokenizer=None) -> str:
        """Baseline: the question alone; the completion is a short answer."""
        return self.prompt("closed_book", qa_observation(question), tokenizer)

    def rag(self, question: str, passages: Sequence[tuple[str, str]], tokenizer=None) -> str:
        """Baseline (retrieve-then-read): (title, text) passages pasted before the question."""
        return self.prompt("rag", qa_observation(question, passages), tokenizer)

    def prompt(self, phase: Phase, observation: str, tokenizer=None) -> str:
        if phase == "browse":
            return self.browse(observation, tokenizer)
        if phase == "answer":
            return self.answer(observation, tokenizer)
        instruction = QA_INSTRUCTION if phase == "closed_book" else RAG_INSTRUCTION
        shots = _QA_EXAMPLES[: max(0, min(self.examples, len(_QA_EXAMPLES)))]
        return self._render(instruction, shots, observation, tokenizer, phase)

    def _render(self, instruction: str, shots, observation: str, tokenizer, phase: str) -> str:
        """Instruction, worked shots, then the observation. A base prompt whose completion
        continues the last line (`lead`) shows its shots the same way: "Answer: X"."""
        if self.style == "chat":
            if tokenizer is None:
                raise ValueError("a chat prompt needs the tokenizer that owns the template")
            messages = [{"role": "system", "content": instruction}]
            for shot_obs, shot_action in shots:
                messages += [
                    {"role": "user", "content": shot_obs},
                    {"role": "assistant", "content": shot_action},
                ]
            messages.append({"role": "user", "content": observation})
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        if lead := self.lead(phase):
            blocks = [f"{o}{lead}{a}" for o, a in shots]
            return "\n\n".join([instruction, *blocks, observation])
        parts = [instruction, ""]
        for shot_obs, shot_action in shots:
            parts += [shot_obs, shot_action, ""]
        parts.append(observation)
        return "\n".join(parts) + "\n"


def format_for(
    tokenizer, *, prefer_chat: bool = True, examples: int = FEW_SHOT_EXAMPLES
) -> PromptFormat:
    """The format a model should get: chat when its tokenizer has a template (and we want it)."""
    template = getattr(tokenizer, "chat_template", None)
    if prefer_chat and template:
        return PromptFormat("chat", examples, template)
    return PromptFormat("base", examples)


def completion_to_action(completion: str) -> str:
    """The command or answer kept from a completion: its first line, stripped."""
    return completion.strip().split("\n", 1)[0].strip()
