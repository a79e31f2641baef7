"""The one validation point for questions: `ask`, `repl`, `eval`'s datasets, `BrowserEnv.reset`
and the episode runner all call `check_question`, before any page is fetched or model loaded.

A question is outside input pasted into every observation, so it must be text a model can
read: non-empty, at most `QuestionLimits.max_chars` characters, valid UTF-8 (a command-line
argument in another encoding arrives as lone surrogates) and free of control characters other
than whitespace (tab, newline, NEL...; an escape sequence or a NUL is refused).
"""

from __future__ import annotations

import unicodedata

from env.limits import QuestionLimits


class QuestionError(ValueError):
    """The question cannot be asked; the message says why, for the user."""


def check_question(question: object, limits: QuestionLimits = QuestionLimits()) -> str:
    """`question` itself when it can be asked, else QuestionError saying what is wrong."""
    if not isinstance(question, str):
        raise QuestionError(f"a question is text, not {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(question[exc.start])
        what = (
            f"byte 0x{code - 0xDC00:02x}"  # how surrogateescape carries an undecodable byte
            if 0xDC80 <= code <= 0xDCFF
            else f"lone surrogate U+{code:04X}"
        )
        raise QuestionError(
            f"the question is not valid UTF-8 text ({what} at character {exc.start + 1}); "
            "check the encoding of your terminal or file"
        ) from None
    if not question.strip():
        raise QuestionError("the question is empty")
    if len(question) > limits.max_chars:
        raise QuestionError(
            f"the question has {len(question)} characters; the limit is {limits.max_chars} "
            "(env/limits.py, QuestionLimits.max_chars)"
        )
    for i, c in enumerate(question):
        if unicodedata.category(c) == "Cc" and not c.isspace():
            raise QuestionError(
                f"the question contains the control character U+{ord(c):04X} at character {i + 1}"
            )
    return question
