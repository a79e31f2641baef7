"""Gold-guided expert demonstrations on the real local Wikipedia, and their TRL export."""

import json
import random
import subprocess
import sys
from pathlib import Path

from env.browser import BrowserEnv, EnvConfig
from env.commands import parse
from env.limits import BrowseLimits
from env.queries import query_variants
from env.record import read_jsonl, read_records
from webagent.datasets import Question
from webagent.demos import Expert, generate, grounded_order, result_snippets, to_prompt_completion
from webagent.metrics import contains, holds_alias
from webagent.prompts import PromptFormat

QUESTIONS = [
    Question(
        "m1", "Who painted the Mona Lisa?", "Leonardo da Vinci", ("Leonardo da Vinci", "Leonardo")
    ),
    Question(
        "m2",
        "Mount Aconcagua, the highest peak in the Western Hemisphere, stands in which country?",
        "Argentina",
        ("Argentina", "Argentine Republic"),
    ),
    Question("m3", "Which river flows through Baghdad?", "Tigris", ("Tigris", "Tigris River")),
    Question(
        "m4", "What is the name of the fictional zzyzx quux?", "Blorft", ("Blorft",)
    ),  # not in the corpus
]


def write_questions(path: Path, questions) -> Path:
    """A question file in our JSONL layout (what `eval`, `demos`, `compare` and PPO read)."""
    rows = [
        {
            "question_id": q.id,
            "question": q.question,
            "answer": {"value": q.answer, "aliases": list(q.aliases)},
        }
        for q in questions
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_queries_come_from_the_question():
    qs = query_variants(
        "Mount Aconcagua, the highest peak in the Western Hemisphere, stands in which country?"
    )
    assert qs[0] == "Mount Aconcagua highest peak Western Hemisphere stands country"
    assert all("Argentina" not in q for q in qs)


def test_expert_demonstrations_quote_the_answer_and_vary(wiki):
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))  # noqa: E731
    runs = [dict(generate(QUESTIONS, make_env, seed=s)) for s in range(3)]
    kept = [r for run in runs for r in run.values() if r is not None]
    assert runs[0][QUESTIONS[3]] is None, "no demonstration without a quote holding the answer"
    assert len(kept) >= 6
    for record in kept:
        q = next(q for q in QUESTIONS if q.id == record.meta["question_id"])
        assert any(contains(quote.extract, q.aliases) for quote in record.quotes)
        assert contains(record.answer, q.aliases) and record.answer.endswith("]")
        assert all(step.error is None for step in record.steps), [s.error for s in record.steps]
        for step in record.steps[:-1]:
            parse(step.action)  # every browse action is a valid command
        assert record.model == "expert" and record.end == "answer"
    shapes = {tuple(s.command["name"] for s in r.steps if s.command) for r in kept}
    assert len(shapes) >= 2, "trajectories vary"


def test_recall_demonstrations_answer_from_memory_and_export_only_the_answer(wiki):
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))  # noqa: E731
    shouting = Question("m5", QUESTIONS[3].question, "BLORFT", ("BLORFT", "Blorft", "Blorfts"))
    runs = dict(generate([QUESTIONS[0], shouting], make_env, seed=0, recall=True))
    gold, recall = runs[QUESTIONS[0]], runs[shouting]
    assert gold.meta["demonstration"] == "gold-expert", "a findable answer is still demonstrated"
    assert recall is not None and recall.meta["demonstration"] == "recall-expert"
    assert recall.end == "answer" and len(recall.quotes) == 1
    assert not contains(recall.quotes[0].extract, shouting.aliases)
    assert recall.answer == "Blorft", "from memory, in ordinary case, citing nothing"
    assert all(step.error is None for step in recall.steps)
    rows = to_prompt_completion(recall, PromptFormat("base", examples=0))
    assert [r["phase"] for r in rows] == ["answer"], "off-target browsing is not imitated"
    assert rows[0]["completion"] == " Blorft\n", "the answer continues its Answer: line"
    assert "Blorft" not in rows[0]["prompt"]


def test_prompt_completion_export(wiki):
    make_env = lambda: BrowserEnv(wiki)  # noqa: E731
    record = next(r for _, r in generate(QUESTIONS[:1], make_env) if r)
    rows = to_prompt_completion(record, PromptFormat("base", examples=0))
    assert len(rows) == len(record.steps)
    assert rows[0]["prompt"].endswith(record.steps[0].observation + "\n")
    assert rows[0]["completion"] == record.steps[0].action + "\n"
    assert rows[-1]["phase"] == "answer" and rows[-1]["completion"].startswith(" Leonardo")
    assert set(rows[0]) >= {"prompt", "completion"}


def test_demos_cli_resumes_and_exports(tmp_path, index_dir):
    data = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    out, pc = tmp_path / "demos.jsonl", tmp_path / "pc.jsonl"
    cmd = [
        str(Path(sys.executable).with_name("webagent")),
        "demos",
        str(data),
        "--out",
        str(out),
        "--export",
        str(pc),
    ]
    env = {"WEBAGENT_CACHE": str(index_dir.parent), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(
        [*cmd, "--limit", "2"], capture_output=True, text=True, timeout=300, env=env
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    ids = [r.meta["question_id"] for r in read_records(out)]
    assert len(ids) == len(set(ids)) and "m1" in ids and "m4" not in ids
    assert "2 questions" in again.stdout  # only the two not attempted before
    assert all({"prompt", "completion"} <= set(row) for row in read_jsonl(pc))


def test_grounded_expert_opens_the_result_whose_snippet_names_the_answer(wiki):
    """Result 2's title/snippet names the answer, result 0 (Bhutan) does not: the expert opens 2
    first, a choice the results page explains (issue 20: not "always result 0")."""
    q = Question(
        "b",
        "In 2008 government in Bhutan was changed from an absolute monarchy to what?",
        "Constitutional monarchy",
        ("Constitutional monarchy", "Constitutional monarchies"),
    )
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=10)))
    record = Expert(env, q, random.Random(0)).run()
    assert record is not None
    actions = [s.action for s in record.steps if s.phase == "browse"]
    first_click = next(a for a in actions if a.startswith("Clicked on link "))
    opened = int(first_click.rsplit(" ", 1)[1])
    env.reset(q.question)
    env.step(actions[0])
    shown = result_snippets(env.page)
    assert opened > 0 and holds_alias(shown[opened], q.aliases)
    assert not holds_alias(shown[0], q.aliases)
    assert grounded_order(env.page, q.question, q.aliases)[0] == opened
    assert any(holds_alias(x.extract, q.aliases) for x in record.quotes)


def test_grounded_expert_searches_again_when_no_result_looks_right(wiki):
    """No title or snippet names the answer or the question's entity: open nothing, reformulate."""
    q = Question("z", "Which zzyzx quux won the Blorple?", "Blorft", ("Blorft",))
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=10)))
    assert Expert(env, q, random.Random(0)).run() is None
    actions = [s.action for s in env.record.steps]
    assert len(actions) >= 2 and all(a.startswith("Search ") for a in actions)
    assert len(set(actions)) == len(actions)  # other words each time


def test_max_results_caps_the_results_opened_per_search(wiki):
    """`demos --max-results`: the expert opens at most that many of a search's results before
    searching again (seed 0 wants two sources for the Mona Lisa: two results, or two searches)."""

    def opened_per_search(max_results: int) -> list[int]:
        env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))
        Expert(env, QUESTIONS[0], random.Random(0), max_results=max_results).run()
        counts: list[int] = []
        for step in env.record.steps:
            if step.action.startswith("Search "):
                counts.append(0)
            elif step.action.startswith("Clicked on link "):
                counts[-1] += 1
        return counts

    assert opened_per_search(2) == [2]
    capped = opened_per_search(1)  # a search whose results name nothing opens none
    assert max(capped) == 1 and sum(capped) == 2 and len(capped) >= 2, capped
