"""Prompt formats: the one place that turns an observation into the text a model continues.

Two styles. A base model gets plain text: a short instruction, a few worked example steps (real
observations rendered by `env.observation`, so examples and live pages can never drift apart),
then the current observation; it continues with one command line. A model with a chat template
gets the same content as system/user/assistant turns. The answer phase works the same way
with the question and numbered quotes; its completion is a short answer citing `[n]`.

The example steps are built once from the same Baghdad/Tigris pages the local Wikipedia shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from env.commands import describe
from env.observation import SavedQuote, render_answer, render_browse

Phase = Literal["browse", "answer"]

BROWSE_INSTRUCTION = (
    "You browse the web to answer a question. At each step you see the browser and write "
    "exactly one command on one line. Commands:\n" + describe() + "\n"
    "Search for the question's key words, open the best result, quote the sentence that "
    "answers the question, then End: Answer."
)
ANSWER_INSTRUCTION = (
    "Answer the question from the quotes. Write the short answer first, copied from a quote, "
    "then cite the quotes that support it as [n]. One line."
)
NO_QUOTES_ANSWER = ""
"""What the runner submits when browsing collected no quotes: no answer is attempted."""

_Q = "Which river flows through Baghdad?"
_BAGHDAD = [
    "Capital of Iraq",
    "Baghdad is the capital and largest city in 【0†Iraq】. It is located on the banks of the 【1†Tigris】 in",
    "central Iraq. The city has an estimated population of 8 million.",
]
_TIGRIS = [
    "River in Western Asia",
    "The Tigris is the eastern of the two great rivers that define Mesopotamia, the other being the",
    "【0†Euphrates】. The river flows south from the mountains of southeastern 【1†Turkey】 through 【2†Iraq】",
    "and empties into the 【3†Persian Gulf】. It passes through 【4†Baghdad】, the capital of Iraq.",
]
_RESULTS = [
    "【0†Baghdad†en.wikipedia.org】",
    "en.wikipedia.org/wiki/Baghdad",
    "Capital of Iraq Baghdad is the capital and largest city in Iraq. It is located on the banks of the",
    "Tigris in central Iraq.",
    "【1†Tigris†en.wikipedia.org】",
    "en.wikipedia.org/wiki/Tigris",
    "The river flows south from the mountains of southeastern Turkey through Iraq.",
]
_QUOTE = SavedQuote(
    1,
    "Tigris",
    "https://en.wikipedia.org/wiki/Tigris",
    "It passes through Baghdad, the capital of Iraq.",
)


def _example_steps() -> list[tuple[str, str]]:
    """(observation, command) pairs of one worked episode, rendered by the live formatter."""

    def obs(past: list[str], title: str | None, lines: list[str], quotes=(), left=100) -> str:
        return render_browse(question=_Q, quotes=list(quotes), past_actions=past, title=title,
                             lines=lines, cursor=0, window_lines=10, actions_left=left)  # fmt: skip

    s1 = "Search Baghdad river"
    s2 = "Clicked on link 1"
    s3 = "Quote: It passes through Baghdad, the capital of Iraq."
    return [
        (obs([], None, []), s1),
        (obs([s1], "Search results for: Baghdad river", _RESULTS, left=99), s2),
        (obs([s1, s2], "Tigris (en.wikipedia.org)", _TIGRIS, left=98), s3),
        (obs([s1, s2, s3], "Tigris (en.wikipedia.org)", _TIGRIS, [_QUOTE], left=97), "End: Answer"),
    ]


_ANSWER_EXAMPLES = [
    (render_answer(question=_Q, quotes=[_QUOTE]), "Tigris [1]"),
    (
        render_answer(
            question="Who wrote the novel Nineteen Eighty-Four?",
            quotes=[
                SavedQuote(
                    1,
                    "Nineteen Eighty-Four",
                    "https://en.wikipedia.org/wiki/Nineteen_Eighty-Four",
                    "Nineteen Eighty-Four is a dystopian novel by the English writer George Orwell.",
                ),
            ],  # fmt: skip
        ),
        "George Orwell [1]",
    ),
]


@dataclass(frozen=True)
class PromptFormat:
    """How one model is prompted. `chat_template` is the tokenizer's, when it has one."""

    style: Literal["base", "chat"] = "base"
    examples: int = 4
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
        return self._render(BROWSE_INSTRUCTION, self._browse_examples, observation, tokenizer)

    def answer(self, observation: str, tokenizer=None) -> str:
        """The prompt for the answer phase; the completion is the answer citing [n]."""
        shots = _ANSWER_EXAMPLES if self.examples else []
        return self._render(ANSWER_INSTRUCTION, shots, observation, tokenizer)

    def prompt(self, phase: Phase, observation: str, tokenizer=None) -> str:
        return (
            self.browse(observation, tokenizer)
            if phase == "browse"
            else self.answer(observation, tokenizer)
        )

    def _render(self, instruction: str, shots, observation: str, tokenizer) -> str:
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
        parts = [instruction, ""]
        for shot_obs, shot_action in shots:
            parts += [shot_obs, shot_action, ""]
        parts.append(observation)
        return "\n".join(parts) + "\n"


def format_for(tokenizer, *, prefer_chat: bool = True, examples: int = 4) -> PromptFormat:
    """The format a model should get: chat when its tokenizer has a template (and we want it)."""
    template = getattr(tokenizer, "chat_template", None)
    if prefer_chat and template:
        return PromptFormat("chat", examples, template)
    return PromptFormat("base", examples)


def completion_to_action(completion: str) -> str:
    """The command or answer kept from a completion: its first line, stripped."""
    return completion.strip().split("\n", 1)[0].strip()
