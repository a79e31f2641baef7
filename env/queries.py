"""Search queries for a question, as a person would type them.

The demonstrator (`webagent.demos`) searches with these and the decoding aid
(`env.admissible`) lists them, so the two never drift; env code needs them, so they live in env.
"""

from __future__ import annotations

import re

# Words a question has and a query drops: function words, question words and the phrasing of
# trivia questions ("name", "called", "known as"). Not `search.STOPWORDS_EN` (the index's
# tokenizer list) nor `citations.FUNCTION_WORDS` (what an answer needs no support for).
QUESTION_WORDS = set(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "was",
        "were",
        "are",
        "be",
        "been",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "his",
        "her",
        "their",
        "did",
        "does",
        "do",
        "name",
        "called",
        "known",
        "as",
    ]
)


def query_variants(question: str) -> list[str]:
    """Search queries a person would try for a question, best first: its key words, its named
    phrases, then the whole question. Used by the demonstrator and the admissible-action aid."""
    words = re.findall(r"[\w'’\-]+", question)
    content = [w for w in words if w.lower() not in QUESTION_WORDS]
    named = [
        n
        for n in re.findall(
            r"(?:[A-Z][\w'’\-]+(?:\s+(?:of|the|de|and)?\s*[A-Z][\w'’\-]+)*)", question
        )
        if n.lower() not in QUESTION_WORDS
    ]
    out = [" ".join(content[:8]), " ".join(named[:3]), " ".join(words)]
    return [q for q in dict.fromkeys(o.strip() for o in out) if q]
