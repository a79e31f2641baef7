"""Comparisons, the reward model and best-of-n, on tiny models and real episodes."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import save_tiny

from env.observation import SavedQuote
from env.record import EpisodeRecord, append_jsonl, read_jsonl
from reward.best_of_n import agreement as vote_agreement
from reward.best_of_n import greedy_bonus_of, judge, pick, rank, vote_weight_of
from reward.comparisons import (
    Comparison,
    ComparisonError,
    from_webgpt,
    read_comparisons,
    read_webgpt,
    to_trl,
    write_comparisons,
)
from reward.model import RewardModel, RewardScorer
from reward.text import Answer, Quote, reward_text
from reward.train_rm import Args, agreement, bt_loss, cap_per_question, pearson
from reward.train_rm import main as train_rm
from webagent.compare import (
    demonstrations,
    episodes_path,
    gold_preference,
    gold_rank,
    pair_unpaired,
    pairs,
    question_pairs,
    record_question,
    repair,
    settings_path,
)
from webagent.config import BEST_OF_TEMPERATURE
from webagent.datasets import Question
from webagent.eval import best_of_curve, rescore

BIN = Path(sys.executable).parent

# The public openai/webgpt_comparisons layout (one row per comparison; field names and shapes as
# in the dataset card: question.{dataset,id,full_text}, quotes_i.{title,extract} lists, answer_i,
# tokens_i, score_i in [-1, 1] with score_1 = -score_0).
WEBGPT_ROWS = [
    {
        "question": {"dataset": "eli5", "id": "q1", "full_text": "Why is the sky blue?"},
        "quotes_0": {
            "title": ["Rayleigh scattering - Wikipedia"],
            "extract": ["Rayleigh scattering ... shorter wavelengths"],
        },
        "answer_0": "Because of Rayleigh scattering [1].",
        "tokens_0": [],
        "score_0": 1.0,
        "quotes_1": {"title": [], "extract": []},
        "answer_1": "It reflects the ocean.",
        "tokens_1": [],
        "score_1": -1.0,
    },
    {
        "question": {
            "dataset": "triviaqa",
            "id": "q2",
            "full_text": "Which river flows through Baghdad?",
        },
        "quotes_0": {"title": ["Tigris"], "extract": ["The Tigris flows through Baghdad."]},
        "answer_0": "Tigris [1]",
        "tokens_0": [],
        "score_0": 0.0,
        "quotes_1": {"title": ["Baghdad"], "extract": ["Baghdad lies on the Tigris."]},
        "answer_1": "The Tigris [1]",
        "tokens_1": [],
        "score_1": 0.0,
    },
]


def answer(text: str, *extracts: str) -> Answer:
    return Answer(text, tuple(Quote(f"Page {i}", e) for i, e in enumerate(extracts)))


def test_soft_label_loss_handles_ties():
    r = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
    s = torch.tensor([0.0, 0.0, 0.0])
    loss = bt_loss(r, s, torch.tensor([0.5, 0.5, 1.0]))
    per_row = [math.log(2), 2 * 0.5 + math.log1p(math.exp(-2)), math.log1p(math.exp(1))]
    assert loss.item() == pytest.approx(sum(per_row) / 3, abs=1e-5)
    loss.backward()
    assert r.grad[0].item() == pytest.approx(0.0, abs=1e-7), (
        "a tie between equal rewards is at rest"
    )
    assert r.grad[1].item() > 0, "a tie pulls a higher reward down towards its partner"
    assert r.grad[2].item() < 0, "a preferred answer's reward is pushed up"


def test_webgpt_import_and_trl_export(tmp_path):
    path = tmp_path / "webgpt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in WEBGPT_ROWS))
    comps = list(read_webgpt(path))
    assert [c.preference for c in comps] == [1.0, 0.5] and comps[0].labeler == "webgpt"
    assert comps[0].answer_0.quotes[0].title == "Rayleigh scattering - Wikipedia"
    assert comps[0].answer_1.quotes == () and comps[1].meta["dataset"] == "triviaqa"
    as_list = tmp_path / "webgpt.json"
    as_list.write_text(json.dumps(WEBGPT_ROWS))
    assert [c.id for c in read_webgpt(as_list)] == [c.id for c in comps]
    trl = [to_trl(c) for c in comps]
    assert trl[1] is None, "TRL's chosen/rejected cannot express a tie"
    assert (
        "Rayleigh" in trl[0]["chosen"] and "ocean" in trl[0]["rejected"] and trl[0]["margin"] == 1.0
    )
    assert trl[0]["chosen"] == reward_text(comps[0].question, comps[0].answer_0)
    out = tmp_path / "c.jsonl"
    write_comparisons(out, comps)
    assert [c.to_dict() for c in read_comparisons(out)] == [c.to_dict() for c in comps]
    bad = dict(WEBGPT_ROWS[0], score_0="high")
    with pytest.raises(ComparisonError, match="webgpt_comparisons"):
        from_webgpt(bad)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ComparisonError, match="bad.jsonl: record 1"):
        read_comparisons(tmp_path / "bad.jsonl")
    with pytest.raises(ComparisonError, match="preference"):
        Comparison("q", answer("a"), answer("b"), preference=1.5)


def test_reward_text_is_one_layout():
    text = reward_text("Q?", answer("Tigris [1]", "The Tigris " + "x" * 2000))
    assert text.startswith("Question: Q?\nQuotes:\n[1] Page 0: The Tigris")
    assert text.endswith("\nAnswer: Tigris [1]") and len(text) < 800
    assert "(none)" in reward_text("Q?", answer("")) and "(no answer)" in reward_text(
        "Q?", answer("")
    )


def test_gold_judge_ranks_supported_over_unsupported_over_wrong():
    def rec(ans, extract):
        return EpisodeRecord(
            "e" + ans,
            "Which river flows through Baghdad?",
            "wiki",
            quotes=[SavedQuote(1, "T", "u", extract)],
            answer=ans,
        )

    aliases = ("Tigris",)
    good, unsupported, wrong = (
        rec("Tigris [1]", "The Tigris flows."),
        rec("Tigris [1]", "A river."),
        rec("Nile [1]", "The Nile."),
    )
    assert [gold_rank(r, aliases) for r in (good, unsupported, wrong)] == [2, 1, 0]
    assert (
        gold_preference(2, 1) == 1.0
        and gold_preference(0, 1) == 0.0
        and gold_preference(1, 1) == 0.5
    )
    q = Question("q", "Which river flows through Baghdad?", "Tigris", aliases)
    comps = pairs(q, [good, unsupported, wrong, rec("Tigris [1]", "The Tigris flows.")])
    assert len(comps) == 5, "identical answers are not compared"
    assert [c.preference for c in comps[:3]] == [1.0, 1.0, 1.0] and comps[0].labeler == "gold"


def test_demonstrations_join_the_samples_and_repair_rewrites_the_pairs(tmp_path):
    """With every sample wrong the gold pairs all tie; a demonstration turns them into signal,
    and `--repair` re-pairs the recorded episodes without sampling (or loading a model)."""
    q = Question("q1", "Which river flows through Baghdad?", "Tigris", ("Tigris",))

    def rec(i, ans, extract, meta):
        return EpisodeRecord(
            f"e{i}",
            q.question,
            "wiki",
            quotes=[SavedQuote(1, "T", "u", extract)],
            answer=ans,
            meta=meta,
        )

    samples = [
        rec(i, a, "A river.", {"question_id": "q1", "sample": i})
        for i, a in enumerate(["Nile", "Danube", "Nile"])
    ]
    out = tmp_path / "c.jsonl"
    append_jsonl(episodes_path(out), samples)
    assert {c.preference for c in pairs(q, samples)} == {0.5}
    demo = rec(9, "Tigris [1]", "The Tigris flows through Baghdad.", {"question_id": "q1"})
    demos_file = tmp_path / "demos.jsonl"
    append_jsonl(demos_file, [demo, rec(8, "Nile", "x", {"question_id": "q1"})])
    demos = demonstrations(demos_file)
    assert demos["q1"].answer == "Tigris [1]", "the first demonstration of a question is kept"
    out.write_text("stale\n")
    assert repair(out, [q], "gold", demos) == 5  # Nile-Danube, Danube-Nile, 3 x demo
    comps = read_comparisons(out)
    with_demo = [c for c in comps if "e9" in c.meta["episodes"]]
    assert len(with_demo) == 3 and all(c.preference == 0.0 for c in with_demo)
    assert all(c.preference == 0.5 for c in comps if c not in with_demo)
    data = tmp_path / "q.jsonl"
    data.write_text(
        json.dumps(
            {
                "question_id": "q1",
                "question": q.question,
                "answer": {"value": "Tigris", "aliases": ["Tigris"]},
            }
        )
        + "\n"
    )
    env = {**os.environ, "WEBAGENT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    cli = subprocess.run(
        [str(BIN / "webagent"), "compare", str(data), "--out", str(out), "--repair"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert {c.preference for c in read_comparisons(out)} == {0.5}, "without --demos: ties only"
    # --demos-when none-right: the demonstration joins only questions no sample got right
    assert len(question_pairs(q, samples, "gold", demo, "none-right")) == 5
    right = [*samples, rec(4, "Tigris", "A river.", {"question_id": "q1", "sample": 4})]
    only_samples = question_pairs(q, right, "gold", demo, "none-right")
    assert all("e9" not in c.meta["episodes"] for c in only_samples) and len(only_samples) == 5
    assert len(question_pairs(q, right, "gold", demo)) == 9


@pytest.fixture(scope="module")
def tiny_body(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-body"))


def synthetic(n: int) -> list[Comparison]:
    """Right answers say Tigris, wrong ones Nile; lengths vary independently of quality."""
    out = []
    for i in range(n):
        q = f"Which river flows through Baghdad? ({i})"
        right = answer("Tigris [1]" + " river" * (i % 3), "The Tigris flows through Baghdad.")
        wrong = answer("Nile [1]" + " river" * ((i + 1) % 3), "The Nile flows through Cairo.")
        pair = (right, wrong, 1.0) if i % 2 else (wrong, right, 0.0)
        out.append(Comparison(q, *pair, labeler="gold"))
    out.append(Comparison("Tie?", answer("Tigris"), answer("Tigris [1]"), 0.5, "gold"))
    return out


def test_reward_model_learns_and_resumes(tiny_body, tmp_path):
    data = tmp_path / "comparisons.jsonl"
    write_comparisons(data, synthetic(48))
    args = Args(
        comparisons=str(data),
        out=str(tmp_path / "rm"),
        model=str(tiny_body),
        epochs=6,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=2,
        val_fraction=0.25,
    )
    meta = train_rm(args)
    val = meta["validation"]
    assert val["n"] >= 8 and val["accuracy"] >= 0.9, meta["history"]
    assert {"longer_answer_accuracy", "more_quotes_accuracy", "reward_length_correlation"} <= set(
        val
    )
    strict = json.loads(  # reward.json is strict JSON: no NaN where a statistic is undefined
        (tmp_path / "rm" / "reward.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"reward.json holds {c}"),
    )
    assert strict["validation"]["accuracy"] == val["accuracy"]
    assert pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None  # all answers empty: a reader's
    scorer = RewardScorer(tmp_path / "rm")
    good, bad = scorer.score(
        "Which river flows through Baghdad? (99)",
        [
            answer("Tigris [1]", "The Tigris flows through Baghdad."),
            answer("Nile [1]", "The Nile flows through Cairo."),
        ],
    )
    assert good > bad
    assert json.loads((tmp_path / "rm" / "reward.json").read_text())["pooling"] == "last"
    # a rerun with the same --out resumes after the last finished epoch (here: all of them)
    again = subprocess.run(
        [
            str(BIN / "webagent"),
            "train",
            "rm",
            str(data),
            "--out",
            str(tmp_path / "rm"),
            "--model",
            str(tiny_body),
            "--epochs",
            "6",
            "--batch-size",
            "8",
            "--learning-rate",
            "3e-3",
            "--warmup-steps",
            "2",
            "--val-fraction",
            "0.25",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout and "after epoch 6/6" in again.stdout


def test_cap_per_question_spreads_comparisons_over_questions():
    many = [Comparison("Q1", answer(f"a{i}"), answer(f"b{i}"), 1.0, "gold") for i in range(5)]
    few = [Comparison("Q2", answer("c"), answer("d"), 0.0, "gold")]
    items = many[:3] + few + many[3:]
    capped = cap_per_question(items, 2, seed=0)
    assert sum(c.question == "Q1" for c in capped) == 2 and few[0] in capped
    assert capped == [c for c in items if c in capped], "file order is kept"
    assert cap_per_question(items, 2, seed=0) == capped, "seeded"
    assert cap_per_question(items, None, seed=0) == items
    with pytest.raises(ValueError, match="at least 1"):
        cap_per_question(items, 0, seed=0)


def test_no_ties_trains_only_on_preferences(tiny_body, tmp_path):
    data = tmp_path / "comparisons.jsonl"
    ties = [Comparison(f"Tie {i}?", answer("x"), answer("y"), 0.5, "gold") for i in range(6)]
    write_comparisons(data, synthetic(8)[:-1] + ties)
    args = Args(
        comparisons=str(data),
        out=str(tmp_path / "rm"),
        model=str(tiny_body),
        epochs=1,
        batch_size=4,
        warmup_steps=1,
        val_fraction=0.25,
        ties=False,
        per_question=1,
    )
    meta = train_rm(args)
    assert meta["comparisons"]["train"] + meta["comparisons"]["val"] == 8, meta["comparisons"]
    write_comparisons(tmp_path / "ties.jsonl", ties)
    with pytest.raises(ValueError, match="no comparison with a preference"):
        train_rm(
            Args(
                comparisons=str(tmp_path / "ties.jsonl"),
                out=str(tmp_path / "rm2"),
                model=str(tiny_body),
                ties=False,
            )
        )


def test_agreement_counts_baselines_and_skips_ties():
    comps = synthetic(4)
    # preferences: 0, 1, 0, 1 (answer 1, 0, 1, 0 better), then a tie the model gets "wrong"
    r0 = [0.0, 1.0, 1.0, 1.0, 3.0]
    r1 = [1.0, 0.0, 0.0, 0.0, -3.0]
    m = agreement(comps, r0, r1)
    assert m["n"] == 4, "the tie is excluded from accuracy"
    assert m["accuracy"] == 0.75 and 0 <= m["longer_answer_accuracy"] <= 1
    assert m["more_quotes_accuracy"] == 0.5, "equal quote counts score half"


def test_best_of_n_picks_the_top_scored_candidate(tiny_body):
    assert pick([0.1, 0.7, 0.7, -1.0]) == 1, "the first of equal best scores"
    assert pick([2.0]) == 0
    with pytest.raises(ValueError):
        pick([])

    class Fixed:
        def score(self, question, answers):
            return [float(len(a.text)) for a in answers]

    records = [
        EpisodeRecord(str(i), "q", "wiki", answer=a) for i, a in enumerate(["ab", "abcd", "abc"])
    ]
    ranked = rank("q", records, Fixed())
    assert ranked.best == 1 and ranked.scores == [2.0, 4.0, 3.0]
    # an answer that names nothing (citations only, or none) loses to any that names something
    records += [EpisodeRecord("3", "q", "wiki", answer="[1] [2]"), EpisodeRecord("4", "q", "wiki")]
    ranked = rank("q", records, Fixed())
    assert ranked.scores[3] > ranked.scores[1] and ranked.best == 1
    assert pick([5.0, 1.0], named=[False, False]) == 0, "if nothing names an answer, scores decide"
    assert not Answer("[1]").names_something and Answer("Tigris [1]").names_something


def test_agreement_is_the_share_of_the_other_candidates_with_the_same_answer():
    answers = ["The Tigris [1]", "tigris", "Nile [2]", "[1]", None, "Tigris.[3]"]
    assert vote_agreement(answers) == [0.4, 0.4, 0.0, 0.0, 0.0, 0.4], (
        "citations and case do not count"
    )
    assert vote_agreement(["", "", "[1]"]) == [0.0, 0.0, 0.0], "empty answers agree with nothing"
    assert vote_agreement(["Tigris"]) == [0.0] and vote_agreement([]) == []
    assert vote_agreement(["The", "the"]) == [0.0, 0.0], "nothing left after normalising"


def test_the_judge_adds_the_vote_to_the_reward():
    class Fixed:
        meta = {"best_of": {"vote_weight": 1.0}}

        def score(self, question, answers):
            return [{"Nile [1]": 0.5}.get(a.text, 0.0) for a in answers]

    records = [
        EpisodeRecord(str(i), "q", "wiki", answer=a)
        for i, a in enumerate(["Nile [1]", "Tigris [1]", "The Tigris", "[1]", "[2]"])
    ]
    ranked = rank("q", records, Fixed())  # the reward model's own weight: 1
    assert ranked.scores == [0.5, 0.0, 0.0, 0.0, 0.0]
    assert ranked.agreement == [0.0, 0.25, 0.25, 0.0, 0.0]
    assert ranked.final == [0.5, 0.25, 0.25, 0.0, 0.0] and ranked.best == 0
    assert rank("q", records, Fixed(), vote_weight=4.0).best == 1, "the first of a tie"
    assert rank("q", records, Fixed(), vote_weight=0.0).final == ranked.scores
    # citation-only answers agreeing with each other are not a vote for nothing
    assert judge([0.0, 0.0, 0.0], ["[1]", "[1]", "Nile"], 5.0).best == 2
    Fixed.meta = {}
    assert vote_weight_of(Fixed()) == 0.0, "no best_of in reward.json: the reward model alone"
    for bad in [{"best_of": {"vote_weight": -1}}, {"best_of": {"vote_weight": "x"}}]:
        Fixed.meta = bad
        with pytest.raises(ValueError, match="vote weight"):
            rank("q", records, Fixed())
    with pytest.raises(ValueError, match="vote weight"):
        judge([0.0], ["a"], float("nan"))


@pytest.fixture
def cli_env(tmp_path, index_dir) -> dict:
    cache = tmp_path / "cache"
    shutil.copytree(index_dir, cache / "index", dirs_exist_ok=True)
    return {**os.environ, "WEBAGENT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def tiny_rm(tiny_body, tmp_path) -> Path:
    """An adapter-format reward model (LoRA + head; the base found from its reward.json), as
    the shipped one is: eval and ask below score with it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from reward.model import prepare_tokenizer

    model = RewardModel.from_body(tiny_body)
    model.body = get_peft_model(model.body, LoraConfig(r=4, target_modules="all-linear"))
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_body))
    model.save(tmp_path / "rm", tok, {"base_model": str(tiny_body), "max_length": 256})
    return tmp_path / "rm"


def test_best_of_curve_counts_questions_won_and_lost_against_best_of_1():
    """Equal EM can hide a reward model that wins one question and loses another."""

    def row(*cands):
        return {"candidates": [{"score": s, "em": e, "seconds": 1.0} for s, e in cands]}

    rows = [row((0, 0.0), (1, 1.0)), row((0, 1.0), (1, 0.0)), row((1, 1.0), (0, 0.0))]
    one, two = best_of_curve(rows)
    assert (one["won"], one["lost"], one["em"]) == (0, 0, 2 / 3)
    assert (two["won"], two["lost"], two["em"], two["oracle_em"]) == (1, 1, 2 / 3, 1.0)
    assert two["seconds_per_question"] == 2.0


def test_the_greedy_bonus_keeps_candidate_0_unless_the_vote_or_a_margin_beats_it():
    class Fixed:
        meta = {"best_of": {"vote_weight": 1000.0, "greedy_bonus": 50.0}}

        def score(self, question, answers):
            return [{"Nile": 0.0, "Tigris": 9.0, "Euphrates": 3.0}[a.text] for a in answers]

    def records(*answers):
        return [EpisodeRecord(str(i), "q", "wiki", answer=a) for i, a in enumerate(answers)]

    # all different: the reward model's margin (9) is below the bonus, greedy stays
    ranked = rank("q", records("Nile", "Tigris", "Euphrates"), Fixed())
    assert (ranked.best, ranked.greedy_bonus, ranked.final[0]) == (0, 50.0, 50.0)
    # two samples agree against greedy: the vote outweighs the bonus
    assert rank("q", records("Nile", "Tigris", "Tigris", "Euphrates"), Fixed()).best == 1
    # greedy in a tied vote wins it; the reward model orders the candidates greedy is not among
    assert rank("q", records("Nile", "Nile", "Tigris", "Tigris"), Fixed()).best == 0
    assert (
        rank("q", records("Nile", "Euphrates", "Euphrates", "Tigris", "Tigris"), Fixed()).best == 3
    )
    assert rank("q", records("Nile", "Tigris"), Fixed(), greedy_bonus=0.0).best == 1
    assert judge([0.0, 1.0], ["a", "b"], 0.0, 2.0).best == 0
    Fixed.meta = {}
    assert greedy_bonus_of(Fixed()) == 0.0, "no best_of in reward.json: no bonus"
    Fixed.meta = {"best_of": {"greedy_bonus": -1}}
    with pytest.raises(ValueError, match="greedy bonus"):
        rank("q", records("Nile"), Fixed())


def test_best_of_curve_counts_the_vote_among_the_first_k_only():
    def cand(answer, score, em):
        return {"answer": answer, "score": score, "em": em, "seconds": 1.0}

    # the reward model prefers Nile; Tigris wins a vote among 4 but not among 2
    row = {
        "vote_weight": 1.5,
        "candidates": [
            cand("Nile [1]", 0.4, 0.0),
            cand("Tigris [1]", 0.0, 1.0),
            cand("The Tigris", 0.0, 1.0),
            cand("Euphrates", 0.3, 0.0),
        ],
    }
    one, two, four = best_of_curve([row])
    assert (one["em"], two["em"], four["em"]) == (0.0, 0.0, 1.0)
    assert four["won"] == 1 and two["won"] == 0
    assert best_of_curve([row], vote_weight=0.0)[2]["em"] == 0.0, "an explicit weight wins"
    assert best_of_curve([{k: v for k, v in row.items() if k != "vote_weight"}])[2]["em"] == 0.0, (
        "rows from before the vote are judged by the reward model alone"
    )
    bonus = {**row, "vote_weight": 0.0, "greedy_bonus": 1.0}
    assert [c["em"] for c in best_of_curve([bonus])] == [0.0, 0.0, 0.0], "the row's bonus counts"


def test_a_compare_run_killed_between_its_two_appends_is_mended(tmp_path):
    """The episodes are appended before the comparisons: a kill in between leaves a question
    done but unpaired. The next run pairs it, once, and loses or repeats nothing."""
    qs = [
        Question("q1", "Which river flows through Baghdad?", "Tigris", ("Tigris",)),
        Question("q2", "Who painted the Mona Lisa?", "Leonardo", ("Leonardo",)),
        Question("q3", "Capital of France?", "Paris", ("Paris",)),
    ]

    def recs(q, answers):
        return [
            EpisodeRecord(
                f"{q.id}-{i}",
                q.question,
                "wiki",
                quotes=[SavedQuote(1, "T", "u", "x")],
                answer=a,
                meta={"question_id": q.id, "sample": i},
            )
            for i, a in enumerate(answers)
        ]

    out = tmp_path / "c.jsonl"
    r1, r2, r3 = (
        recs(qs[0], ["Tigris", "Nile"]),
        recs(qs[1], ["Leonardo", "Raphael", "Titian"]),
        recs(qs[2], ["Paris", "Paris"]),
    )
    assert record_question(out, qs[0], r1, "gold") == 1
    append_jsonl(episodes_path(out), r2[::-1])  # killed here, before q2's comparisons
    append_jsonl(episodes_path(out), r3)  # q3's answers agree: no comparisons to write
    assert pair_unpaired(out, qs, "gold", {}) == 3
    by_q = [c.meta["question_id"] for c in read_comparisons(out)]
    assert by_q == ["q1", "q2", "q2", "q2"]
    assert [c.to_dict() for c in read_comparisons(out)][1:] == [
        c.to_dict() for c in question_pairs(qs[1], r2, "gold", None)
    ], "the same pairs, in sample order, as an uninterrupted run writes"
    assert pair_unpaired(out, qs, "gold", {}) == 0 and len(read_comparisons(out)) == 4


def test_compare_and_best_of_eval_end_to_end(tiny_body, tiny_rm, cli_env, tmp_path, wiki):
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"question_id": f"q{i}", "question": q, "answer": {"value": a, "aliases": [a]}}
            )
            + "\n"
            for i, (q, a) in enumerate(
                [
                    ("Which river flows through Baghdad?", "Tigris"),
                    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
                ]
            )
        )
    )
    out = tmp_path / "comparisons.jsonl"
    cmd = [
        str(BIN / "webagent"),
        "compare",
        str(data),
        "--model",
        str(tiny_body),
        "--examples",
        "1",
        "--samples",
        "3",
        "--max-actions",
        "3",
        "--out",
        str(out),
    ]
    first = subprocess.run(
        [*cmd, "--limit", "1"], env=cli_env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "from 1 questions" in second.stdout, "the first question is not sampled again"
    other = subprocess.run(  # other sampling settings would mix two samplers in one file
        [*cmd, "--no-int8"], env=cli_env, capture_output=True, text=True, timeout=600
    )
    assert other.returncode != 0 and "different run" in other.stderr, other.stderr[-2000:]
    assert "policy.int8: true → false\nto continue it, rerun with --int8;" in other.stderr
    episodes = [
        EpisodeRecord.from_dict(r)
        for r in read_jsonl(str(out).replace(".jsonl", ".episodes.jsonl"))
    ]
    assert len(episodes) == 6 and len({e.seed for e in episodes}) == 6
    # candidates as best-of-n draws them: the first greedy, the rest at the best-of temperature
    assert [e.meta["temperature"] for e in episodes] == [0.0, *[BEST_OF_TEMPERATURE] * 2] * 2
    assert [e.meta["candidate"] for e in episodes] == [0, 1, 2] * 2
    settings = json.loads(settings_path(out).read_text())
    assert settings["greedy_candidate"] and settings["sample_temperature"] == BEST_OF_TEMPERATURE
    by_id = {e.id: e for e in episodes}
    for c in read_comparisons(out) if out.exists() else []:
        a, b = (by_id[i] for i in c.meta["episodes"])
        aliases = ["Tigris"] if "Baghdad" in c.question else ["Leonardo da Vinci"]
        assert c.preference == gold_preference(gold_rank(a, aliases), gold_rank(b, aliases))

    greedy_run = tmp_path / "greedy"  # a plain greedy eval plays each question's candidate 0
    flags = ["--model", str(tiny_body), "--examples", "1", "--max-actions", "3"]
    greedy = subprocess.run(
        [str(BIN / "webagent"), "eval", str(data), *flags, "--out", str(greedy_run)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert greedy.returncode == 0, greedy.stderr[-2000:]
    for row, first in zip(read_jsonl(greedy_run / "results.jsonl"), episodes[::3], strict=True):
        plain = EpisodeRecord.from_dict(row["episode"])
        assert plain.question == first.question and plain.answer == first.answer
        assert [(s.completion, s.token_ids) for s in plain.steps] == [
            (s.completion, s.token_ids) for s in first.steps
        ], "candidate 0 is the greedy episode"

    run = tmp_path / "eval"
    ev = subprocess.run(
        [
            str(BIN / "webagent"),
            "eval",
            str(data),
            "--model",
            str(tiny_body),
            "--examples",
            "1",
            "--max-actions",
            "3",
            "--best-of",
            "3",
            "--rm",
            str(tiny_rm),
            "--temperature",
            "1.0",
            "--out",
            str(run),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    rows = list(read_jsonl(run / "results.jsonl"))
    assert len(rows) == 2
    scorer = RewardScorer(tiny_rm)
    for row in rows:
        scores = [c["score"] for c in row["candidates"]]
        assert [c["temperature"] for c in row["candidates"]] == [0.0, 1.0, 1.0]
        assert [c["final"] for c in row["candidates"]] == scores, "this reward model: no vote"
        assert len(scores) == 3 and row["best"] == pick(scores)
        assert row["answer"] == row["candidates"][row["best"]]["answer"]
        ep = EpisodeRecord.from_dict(row["episode"])
        assert scorer.score(ep.question, [Answer.from_record(ep)])[0] == pytest.approx(
            max(scores), abs=1e-4
        )
    summary = json.loads((run / "summary.json").read_text())
    assert [c["k"] for c in summary["best_of_curve"]] == [1, 2]
    # another reward model rescores the kept candidate episodes without sampling again
    flat = [c["score"] for r in rows for c in r["candidates"]]
    again = rescore(
        [{**r, "candidates": [{**c, "score": 0.0} for c in r["candidates"]]} for r in rows], scorer
    )
    assert [c["score"] for r in again for c in r["candidates"]] == pytest.approx(flat, abs=1e-4)
    with pytest.raises(ValueError, match="episodes"):
        rescore([{**rows[0], "candidates": [{"score": 0.0, "em": 0.0}]}], scorer)
    no_rm = subprocess.run(  # (no --rm: the shipped default, tested in test_reward_adapter.py)
        [
            *(str(BIN / "webagent"), "eval", str(data), "--best-of", "2"),
            *("--rm", str(tmp_path / "none"), "--out", str(tmp_path / "x")),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_rm.returncode == 1 and "no reward model" in no_rm.stderr, no_rm.stderr

    def ask(*flags: str) -> dict:
        cmd = [str(BIN / "webagent"), "ask", "Which river flows through Baghdad?", *flags]
        cmd += ["--model", str(tiny_body), "--examples", "1", "--max-actions", "3", "--json"]
        done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    obj = ask("--best-of", "3", "--rm", str(tiny_rm), "--vote-weight", "2")
    cands = obj["candidates"]
    assert [c["temperature"] for c in cands] == [0.0, BEST_OF_TEMPERATURE, BEST_OF_TEMPERATURE]
    assert obj["vote_weight"] == 2.0 and obj["best"] == pick([c["final"] for c in cands])
    ranked = judge([c["score"] for c in cands], [c["answer"] for c in cands], 2.0)
    assert [c["agreement"] for c in cands] == ranked.agreement
    assert [c["final"] for c in cands] == pytest.approx(ranked.final)
    greedy = ask()  # candidate 0 is the plain greedy episode
    assert greedy["answer"] == cands[0]["answer"] and len(greedy["actions"]) == cands[0]["actions"]


def test_compare_answers_from_recorded_browses(tiny_body, cli_env, tmp_path, wiki):
    """`--answers-from` samples only answers, each on one of the question's recorded browses in
    turn, pairs them like whole episodes, and a rerun samples nothing again."""
    from test_demos import QUESTIONS, write_questions

    from env.browser import BrowserEnv, EnvConfig
    from env.limits import BrowseLimits
    from webagent.demos import generate

    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))  # noqa: E731
    browses = tmp_path / "browses.jsonl"
    append_jsonl(browses, [r for _, r in generate(QUESTIONS[:2], make_env) if r])
    data = write_questions(tmp_path / "q.jsonl", QUESTIONS[:3])
    out = tmp_path / "answers.jsonl"
    cmd = [
        str(BIN / "webagent"),
        "compare",
        str(data),
        "--model",
        str(tiny_body),
        "--examples",
        "0",
        "--samples",
        "3",
        "--temperature",
        "1.0",
        "--answers-from",
        str(browses),
        "--out",
        str(out),
    ]
    run = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    source = {r.meta["question_id"]: r for r in map(EpisodeRecord.from_dict, read_jsonl(browses))}
    episodes = [EpisodeRecord.from_dict(r) for r in read_jsonl(episodes_path(out))]
    assert sorted(e.meta["question_id"] for e in episodes) == sorted([*source] * 3)
    for e in episodes:  # the browse's quotes, one freshly sampled answer step
        (step,) = e.steps
        assert e.quotes == source[e.meta["question_id"]].quotes and e.meta["answer_only"]
        assert e.meta["browse"] == source[e.meta["question_id"]].id != e.id
        assert (
            step.phase == "answer" and step.token_ids and len(step.logprobs) == len(step.token_ids)
        )
    assert len({tuple(e.steps[0].token_ids) for e in episodes}) > 2, (
        "answers are sampled, not copied"
    )
    by_question: dict[str, list] = {}
    for e in episodes:
        by_question.setdefault(e.meta["question_id"], []).append(e)
    for mine in by_question.values():  # as best-of-n: the first answer greedy, the rest at 1.0
        assert [e.meta["temperature"] for e in mine] == [0.0, 1.0, 1.0]
        assert [e.meta["sample"] for e in mine] == [0, 1, 2]
    again = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "from 1 questions" in again.stdout, "only the browse-less one"
    assert len(list(read_jsonl(episodes_path(out)))) == len(episodes)


def test_compare_refuses_to_append_to_comparisons_with_no_settings_record(tmp_path):
    """A comparisons file from before the settings check may hold fp32 samples; appending int8
    ones to it is refused before anything loads, and --repair still works on it."""
    from test_demos import QUESTIONS, write_questions

    from webagent.compare import CompareArgs, check_settings

    data = write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])
    out = tmp_path / "old.jsonl"
    out.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="predates the check"):
        check_settings(CompareArgs(dataset=str(data), out=str(out)))
    fresh = CompareArgs(dataset=str(data), out=str(tmp_path / "new.jsonl"))
    check_settings(fresh)
    assert settings_path(fresh.out).exists()
    check_settings(fresh)  # the same settings resume
    fresh.samples = 2
    with pytest.raises(ValueError, match="samples"):
        check_settings(fresh)


def test_compare_refuses_comparisons_drawn_all_at_one_temperature(tmp_path):
    """A comparisons file whose K samples were all drawn at one temperature (before compare drew
    candidates as best-of-n does: one greedy, the rest sampled) is refused, not mixed, even at
    the same --temperature."""
    from test_demos import QUESTIONS, write_questions

    from webagent.compare import CompareArgs, check_settings
    from webagent.config import PolicyArgs

    data = write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])
    args = CompareArgs(dataset=str(data), out=str(tmp_path / "old.jsonl"))
    args.policy = PolicyArgs(temperature=0.7)
    check_settings(args)
    old = json.loads(settings_path(args.out).read_text())
    assert old.pop("greedy_candidate") is True and old.pop("sample_temperature") == 0.7
    settings_path(args.out).write_text(json.dumps(old))  # as the old compare wrote it
    with pytest.raises(ValueError, match="greedy_candidate") as refused:
        check_settings(args)
    assert "another version" in str(refused.value) and "sample_temperature" in str(refused.value)
