"""DAgger: the gold-guided expert as a function of the browser's state, on real corpus pages,
and `webagent dagger` end to end with a tiny policy (rows `train bc` reads)."""

import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_demos import QUESTIONS, write_questions
from tiny import save_tiny

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.queries import query_variants
from env.record import RecordError, read_jsonl, read_records
from webagent.config import EnvArgs, PolicyArgs, load_policy
from webagent.dagger import DaggerArgs, agree, expert_action, page_kind, run, searched_queries
from webagent.datasets import Question
from webagent.demos import grounded_order, result_snippets
from webagent.metrics import holds_alias

BHUTAN = Question(
    "b",
    "In 2008 government in Bhutan was changed from an absolute monarchy to what?",
    "Constitutional monarchy",
    ("Constitutional monarchy", "Constitutional monarchies"),
)
ATLANTIC = ("Which label released the 1959 album What'd I Say?", ("Atlantic", "Atlantic Records"))
PRODUCER = ("Who produced Ray Charles's album What'd I Say?", ("Jerry Wexler", "Ahmet Ertegün"))


def label(env: BrowserEnv, question: str, aliases) -> str:
    """The expert's command here, checked to be one the aid lists (Find: as its prefix)."""
    command = expert_action(env, question, aliases, searched_queries(env))
    adm = env.admissible()
    assert command in adm.commands or (
        command.startswith("Find in page: ") and "Find in page:" in adm.prefixes
    ), (command, adm.commands)
    return command


def test_start_searches_with_a_variant_not_tried(wiki):
    env = BrowserEnv(wiki)
    env.reset(BHUTAN.question)
    variants = query_variants(BHUTAN.question)
    assert label(env, BHUTAN.question, BHUTAN.aliases) == f"Search {variants[0]}"
    again = expert_action(env, BHUTAN.question, BHUTAN.aliases, variants[:1])
    assert again == f"Search {variants[1]}"


def test_results_page_opens_the_result_that_names_the_answer_not_result_0(wiki):
    env = BrowserEnv(wiki)
    env.reset(BHUTAN.question)
    env.step(label(env, BHUTAN.question, BHUTAN.aliases))
    assert page_kind(env) == "results"
    click = label(env, BHUTAN.question, BHUTAN.aliases)
    opened = int(click.rsplit(" ", 1)[1])
    assert opened > 0 and opened == grounded_order(env.page, BHUTAN.question, BHUTAN.aliases)[0]
    assert holds_alias(result_snippets(env.page)[opened], BHUTAN.aliases)
    assert not holds_alias(result_snippets(env.page)[0], BHUTAN.aliases)
    # the policy opened result 0 instead: the page does not say it, the expert goes Back,
    # then opens what it would have opened
    env.step("Clicked on link 0")
    assert page_kind(env) == "article" and not holds_alias(env.page.text, BHUTAN.aliases)
    assert label(env, BHUTAN.question, BHUTAN.aliases) == "Back"
    env.step("Back")
    assert label(env, BHUTAN.question, BHUTAN.aliases) == click
    # on the answer's page: quote the sentence holding it, then end
    env.step(click)
    quote = label(env, BHUTAN.question, BHUTAN.aliases)
    assert quote.startswith("Quote: ") and holds_alias(quote, BHUTAN.aliases)
    env.step(quote)
    assert env.error is None
    assert label(env, BHUTAN.question, BHUTAN.aliases) == "End: Answer"


def test_a_result_out_of_view_is_scrolled_to(wiki):
    """The Mona Lisa's results name Leonardo only in result 5, below the first window."""
    q = QUESTIONS[0]
    env = BrowserEnv(wiki)
    env.reset(q.question)
    env.step(label(env, q.question, q.aliases))
    best = grounded_order(env.page, q.question, q.aliases)[0]
    assert f"Clicked on link {best}" not in env.admissible().commands, "the fixture moved"
    seen = []
    while (command := label(env, q.question, q.aliases)) == "Scrolled down 1":
        seen.append(command)
        env.step(command)
    assert seen and command == f"Clicked on link {best}"


@pytest.mark.parametrize(
    ("case", "first"), [(ATLANTIC, "Find in page: label"), (PRODUCER, "Scrolled down 1")]
)
def test_an_answer_below_the_view_is_found_or_scrolled_to_then_quoted(zim, case, first):
    """A long ZIM article whose answer is below the first window: `Find in page:` a question
    word that lands on it ("label"), else scroll ("produced" is not on the Producer line)."""
    question, aliases = case
    env = BrowserEnv(zim)
    env.reset(question)
    env.step("Search Ray Charles record label")
    env.step("Clicked on link 0")
    assert env.page.title == "What'd I Say (album)"
    assert label(env, question, aliases) == first
    env.step(first)
    quote = label(env, question, aliases)
    assert quote.startswith("Quote: ") and holds_alias(quote, aliases)
    env.step(quote)
    assert label(env, question, aliases) == "End: Answer"


def test_nothing_worth_opening_searches_again_the_way_the_aid_allows(wiki):
    """No result names anything: the aid lists no Search on a results page, so the expert opens
    a page and searches from there with other words, and goes Back from a second empty list."""
    q = Question("z", "Which zzyzx quux won the Blorple?", "Blorft", ("Blorft",))
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=12)))
    env.reset(q.question)
    commands = []
    while env.phase == "browse" and len(commands) < 5:
        commands.append(label(env, q.question, q.aliases))
        env.step(commands[-1])
        assert env.error is None
    searches = [c for c in commands if c.startswith("Search ")]
    assert len(searches) >= 2 and len(set(searches)) == len(searches), commands
    assert commands[1] == "Clicked on link 0" and commands[2].startswith("Search ")
    assert commands[3] == "Back"


def test_every_label_on_a_wandering_policys_states_is_admissible(wiki):
    """States a poor policy reaches (random admissible commands half the time): the expert's
    label is always one the aid lists, and following it reaches a quote holding the answer."""
    reached = 0
    for q in [*QUESTIONS[:3], BHUTAN]:
        for seed in range(3):
            rng = random.Random(seed)
            env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=12)))
            env.reset(q.question)
            while env.phase == "browse":
                command = label(env, q.question, q.aliases)
                if rng.random() < 0.5 and env.actions_left > 6:
                    command = rng.choice(env.admissible().commands)
                env.step(command)
            reached += any(holds_alias(x.extract, q.aliases) for x in env.quotes)
    assert reached >= 9, reached


def test_agreement_compares_commands_as_the_grammar_reads_them():
    assert agree("Clicked on link 2", "Clicked on link 2")
    assert not agree("Clicked on link 0", "Clicked on link 2")
    assert agree("Tigris [1]", " Tigris [1]") and not agree("not a command", "End: Answer")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-dagger"))


def dagger_args(tmp_path: Path, tiny_dir: Path, questions, max_actions: int, **kw) -> DaggerArgs:
    """`webagent dagger`'s settings for the tiny policy on the real local Wikipedia (BM25)."""
    return DaggerArgs(
        dataset=str(write_questions(tmp_path / "train.jsonl", questions)),
        out=str(tmp_path / "dagger" / "rows.jsonl"),
        policy=PolicyArgs(model=str(tiny_dir), examples=0),
        env=EnvArgs(search="bm25", max_actions=max_actions, page_cache=str(tmp_path / "pages")),
        **kw,
    )


def test_dagger_writes_the_policy_prompts_labelled_by_the_expert_and_resumes(
    tmp_path, tiny_dir, index_dir, monkeypatch
):
    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    questions = [QUESTIONS[2], QUESTIONS[0], QUESTIONS[1]]
    args = dagger_args(tmp_path, tiny_dir, questions, 3, limit=2, batch=2)
    out = Path(args.out)
    args.check()
    lines = run(args)
    rows = list(read_jsonl(out))
    episodes = {
        r.meta["question_id"]: r
        for r in read_records(str(out).replace(".jsonl", ".episodes.jsonl"))
    }
    assert set(episodes) == {"m3", "m1"} and {r["question_id"] for r in rows} == {"m3", "m1"}
    policy = load_policy(args.policy)
    for row in rows:
        step = episodes[row["question_id"]].steps[row["meta"]["step"]]
        assert row["prompt"] == step.prompt == policy.prompt(step.phase, step.observation)
        assert row["meta"]["policy_action"] == step.action, "beta 0: the policy acts"
        lead = policy.format.lead(row["phase"])
        assert row["completion"] == lead + row["meta"]["expert_action"] + "\n"
        assert row["meta"]["agree"] == agree(step.action, row["meta"]["expert_action"])
        assert {"prompt", "completion", "phase", "episode_id"} <= set(row)
    # every episode reaches its answer: labelled with the cited alias when a quote holds one,
    # else with the canonical answer, uncited (the recall expert's answer)
    by_q = {q.id: q for q in questions}
    answers = {r["question_id"]: r for r in rows if r["phase"] == "answer"}
    assert set(answers) == {"m3", "m1"}
    for qid, row in answers.items():
        held = any(holds_alias(x.extract, by_q[qid].aliases) for x in episodes[qid].quotes)
        assert row["meta"]["recall"] is not held
        if not held:
            assert row["completion"] == f" {by_q[qid].answer}\n"
    assert lines[0].startswith(f"{len(rows)} rows from 2 questions")
    assert any(line.split()[0] == "start" for line in lines[1:])
    # a rerun resumes: nothing is played twice; a larger limit plays only the new question
    assert run(args) == lines
    more = run(DaggerArgs(**{**args.__dict__, "limit": 3}))
    assert {r["question_id"] for r in read_jsonl(out)} == {"m1", "m2", "m3"}
    assert more[0].endswith("from 3 questions -> " + str(out))

    # the rows train as they are
    from webagent.train_bc import Args as BCArgs
    from webagent.train_bc import main

    bc = tmp_path / "bc"
    main(BCArgs(str(out), str(bc), str(tiny_dir), max_steps=1, grad_accum=1, micro_batch=2))
    assert (bc / "webagent.json").exists()


def test_beta_1_lets_the_expert_drive_and_labels_its_answer(
    tmp_path, tiny_dir, index_dir, monkeypatch
):
    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    args = dagger_args(tmp_path, tiny_dir, [QUESTIONS[2]], 6, beta=1.0)
    out = Path(args.out)
    run(args)
    rows = list(read_jsonl(out))
    (record,) = read_records(str(out).replace(".jsonl", ".episodes.jsonl"))
    assert [s.action for s in record.steps] == [r["meta"]["expert_action"] for r in rows]
    assert [r["meta"]["page"] for r in rows][:2] == ["start", "results"]
    assert rows[-1]["phase"] == "answer" and rows[-1]["completion"] == " Tigris [1]\n"
    assert record.answer == "Tigris [1]"


def test_no_recall_leaves_answer_states_whose_quotes_miss_unlabelled(
    tmp_path, tiny_dir, index_dir, monkeypatch
):
    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    args = dagger_args(tmp_path, tiny_dir, [QUESTIONS[2]], 2, recall=False)
    run(args)
    (record,) = read_records(str(Path(args.out)).replace(".jsonl", ".episodes.jsonl"))
    rows = list(read_jsonl(args.out))
    assert not any(holds_alias(x.extract, QUESTIONS[2].aliases) for x in record.quotes)
    assert [r["phase"] for r in rows] == ["browse", "browse"]


def test_dev_sets_are_refused_before_anything_loads(tmp_path):
    for name in ("dev.jsonl", "triviaqa-dev.jsonl"):
        with pytest.raises(ValueError, match="evaluation set"):
            DaggerArgs(dataset=str(tmp_path / name)).check()
    DaggerArgs(dataset=str(tmp_path / "train.jsonl")).check()
    with pytest.raises(ValueError, match="--beta"):
        DaggerArgs(dataset="train.jsonl", beta=1.5).check()
    with pytest.raises(RecordError, match="directory"):
        DaggerArgs(dataset="train.jsonl", out=str(tmp_path)).check()


def test_dagger_cli_refuses_dev(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("webagent")), "dagger", str(tmp_path / "dev.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "evaluation set" in proc.stderr
