"""Prompts, batched generation and the episode runner, on a tiny random model built here."""

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.record import EpisodeRecord
from webagent.answers import cited, format_answer, strip_citations, to_json
from webagent.policy import HFPolicy, Sampling
from webagent.prompts import (
    ANSWER_INSTRUCTION,
    BASE_BROWSE_INSTRUCTION,
    BROWSE_INSTRUCTION,
    PromptFormat,
    completion_to_action,
    format_for,
)
from webagent.rollout import RunConfig, Task, run_episodes


@pytest.fixture(scope="module")
def policy():
    tok = tiny_tokenizer()
    return HFPolicy(tiny_model(len(tok)), tok, name="tiny")


def test_base_prompt_has_instruction_examples_and_observation():
    fmt = PromptFormat("base", examples=8)
    text = fmt.browse("●Question\nQ?\n●Next action")
    assert text.startswith(BASE_BROWSE_INSTRUCTION)
    assert text.count("●Question\n") == 9, "two worked episodes of four steps, then the live one"
    assert text.endswith("●Question\nQ?\n●Next action\n")
    # each worked example is an observation followed by its command on the next line
    assert "●Next action\nSearch Baghdad river\n" in text
    assert "●Next action\nQuote: The Tigris passes through Baghdad, the capital of Iraq.\n" in text
    assert "●Next action\nEnd: Answer\n" in text
    assert PromptFormat("base", examples=0).browse("OBS") == BASE_BROWSE_INSTRUCTION + "\n\nOBS\n"
    answer = fmt.answer("Question: Q?\nAnswer:")
    # answers continue their `Answer:` line, like the retrieve-then-read baseline's
    assert answer.startswith(ANSWER_INSTRUCTION) and answer.endswith("\n\nQuestion: Q?\nAnswer:")
    assert "Passage [1] Tigris: The Tigris passes through Baghdad" in answer
    assert "\nAnswer: The Tigris [1]\n\n" in answer and fmt.lead("answer") == " "
    assert fmt.lead("browse") == "" and PromptFormat("chat", 0, "x").lead("answer") == ""


def test_worked_examples_use_commands_the_parser_accepts():
    from env.commands import parse
    from webagent.prompts import _example_steps

    for observation, command in _example_steps():
        parse(command)
        assert observation.endswith("●Next action")


def test_chat_prompt_uses_the_template():
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fmt = format_for(tok, examples=1)
    assert fmt.style == "chat" and not fmt.add_special_tokens
    text = fmt.browse("OBS", tok)
    assert text.startswith("<|system|>" + BROWSE_INSTRUCTION)
    assert "<|assistant|>Search Baghdad river\n<|user|>OBS\n<|assistant|>" in text
    assert format_for(tok, prefer_chat=False).style == "base"


def test_completion_to_action_keeps_first_line():
    assert completion_to_action("  Search Tigris \nClicked on link 0") == "Search Tigris"
    assert completion_to_action("") == ""


def test_a_completion_ends_at_the_first_newline_after_text(policy):
    """After `Answer:` a model may open a new line first: that blank line is not the answer."""
    nl = policy.tokenizer.encode("\n", add_special_tokens=False)
    word = policy.tokenizer.encode("Tigris", add_special_tokens=False)
    assert not policy._ends_line(nl) and not policy._ends_line(nl + nl)
    assert not policy._ends_line(nl + word) and policy._ends_line(nl + word + nl)


def test_generation_records_tokens_logprobs_and_stops(policy):
    (gen,) = policy.generate(
        ["Search"], max_new_tokens=7, sampling=Sampling(temperature=1.0), seeds=[5]
    )
    assert 1 <= len(gen.token_ids) <= 7 and len(gen.logprobs) == len(gen.token_ids)
    assert all(lp <= 0 for lp in gen.logprobs)
    # the recorded log-probs are those of the model: recompute them with one forward pass
    enc = policy.tokenizer(["Search"], return_tensors="pt")
    ids = torch.cat([enc.input_ids, torch.tensor([gen.token_ids])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(policy.model(ids).logits[0, enc.input_ids.shape[1] - 1 : -1], -1)
    expected = logp[torch.arange(len(gen.token_ids)), torch.tensor(gen.token_ids)]
    assert torch.allclose(expected, torch.tensor(gen.logprobs), atol=1e-4)


def test_greedy_is_deterministic_and_batch_equals_single(policy):
    prompts = [
        "Which river flows through Baghdad?",
        "Search",
        "Clicked on link 0 and then more words",
    ]
    for sampling in [Sampling(), Sampling(temperature=1.0, top_p=0.9)]:
        batch = policy.generate(prompts, max_new_tokens=6, sampling=sampling, seeds=[1, 2, 3])
        single = [
            policy.generate([p], max_new_tokens=6, sampling=sampling, seeds=[s])[0]
            for p, s in zip(prompts, [1, 2, 3], strict=True)
        ]
        assert [g.token_ids for g in batch] == [g.token_ids for g in single]


def _run(policy, wiki, batch_size, max_actions=3):
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=max_actions)))  # noqa: E731
    config = RunConfig(
        batch_size=batch_size, sampling=Sampling(temperature=1.0, seed=11), browse_max_new_tokens=8
    )
    tasks = [
        Task(q, {"i": i})
        for i, q in enumerate(["Who was Ray Charles?", "Which river?", "What is jazz?"])
    ]
    out = dict(run_episodes(policy, tasks, make_env, config))
    return [out[i] for i in range(len(tasks))]


def test_runner_batch_and_single_give_the_same_episodes(policy, wiki):
    single = _run(policy, wiki, 1)
    batched = _run(policy, wiki, 3)
    assert [r.seed for r in single] == [11, 12, 13]
    for a, b in zip(single, batched, strict=True):
        assert [s.action for s in a.steps] == [s.action for s in b.steps]
        assert [s.token_ids for s in a.steps] == [s.token_ids for s in b.steps]
    record = batched[1]
    assert record.meta["i"] == 1 and record.model == "tiny"
    browse = [s for s in record.steps if s.phase == "browse"]
    assert len(browse) == 3
    for step in browse:
        assert step.prompt.endswith(step.observation + "\n")
        assert len(step.logprobs) == len(step.token_ids) <= 8 and step.seconds > 0
        assert step.prompt_tokens > 100


def test_each_row_samples_at_its_own_temperature(policy):
    """A greedy row decodes the same beside sampled rows as in a greedy batch, and a sampled
    row the same beside a greedy one as in a sampled batch."""
    prompts = ["Which river flows through Baghdad?", "Search", "Clicked on link 0 and more"]
    greedy, hot = Sampling(), Sampling(temperature=1.0, top_p=0.9)
    mixed = policy.generate(prompts, max_new_tokens=6, sampling=[hot, greedy, hot], seeds=[1, 2, 3])
    all_greedy = policy.generate(prompts, max_new_tokens=6, sampling=greedy, seeds=[1, 2, 3])
    all_hot = policy.generate(prompts, max_new_tokens=6, sampling=hot, seeds=[1, 2, 3])
    assert mixed[1].token_ids == all_greedy[1].token_ids
    assert mixed[1].logprobs == pytest.approx(all_greedy[1].logprobs, abs=1e-5)
    assert [mixed[i].token_ids for i in (0, 2)] == [all_hot[i].token_ids for i in (0, 2)]
    with pytest.raises(ValueError, match="2 samplings for 3 prompts"):
        policy.generate(prompts, sampling=[hot, greedy])


def test_a_greedy_task_among_sampled_ones_plays_the_greedy_episode(policy, wiki):
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=3)))  # noqa: E731
    questions = ["Who was Ray Charles?", "Which river?", "What is jazz?"]

    def run(temperature, tasks):
        config = RunConfig(
            batch_size=3,
            sampling=Sampling(temperature=temperature, seed=11),
            browse_max_new_tokens=8,
        )
        out = dict(run_episodes(policy, tasks, make_env, config))
        return [out[i] for i in range(len(tasks))]

    greedy = run(0.0, questions)
    sampled = run(1.0, questions)
    mixed = run(
        1.0, [Task(q, temperature=0.0 if i == 1 else None) for i, q in enumerate(questions)]
    )
    tokens = lambda r: [s.token_ids for s in r.steps]  # noqa: E731
    assert tokens(sampled[1]) != tokens(greedy[1]), "the test needs sampling to matter"
    for a, b in [(mixed[1], greedy[1]), (mixed[0], sampled[0]), (mixed[2], sampled[2])]:
        assert [s.action for s in a.steps] == [s.action for s in b.steps]
        assert [s.token_ids for s in a.steps] == [s.token_ids for s in b.steps]
        assert a.answer == b.answer
    assert mixed[1].meta["temperature"] == 0.0 and "temperature" not in mixed[0].meta
    assert greedy[1].seed == mixed[1].seed == 12
    with pytest.raises(ValueError, match="task 0: temperature"):
        next(run_episodes(policy, [Task("Q?", temperature=-1.0)], make_env))


def test_no_quotes_means_no_answer_attempted(policy, wiki):
    (record,) = _run(policy, wiki, 2, max_actions=1)[:1]  # one search, then out of actions
    assert record.quotes == [] and record.answer is None
    answer_step = record.steps[-1]
    assert answer_step.phase == "answer" and answer_step.prompt is None  # the model was not asked
    assert "No answer: browsing collected no quotes." in format_answer(record)


def test_answer_helpers():
    from env.observation import SavedQuote

    record = EpisodeRecord(
        id="x",
        question="Q?",
        source="wiki",
        answer="Tigris [1][3]",
        quotes=[SavedQuote(1, "Tigris", "https://en.wikipedia.org/wiki/Tigris", "It flows.")],
    )
    assert cited(record.answer) == [1, 3] and strip_citations(record.answer) == "Tigris"
    text = format_answer(record)
    assert (
        "cites [3] that no quote has" in text
        and "[1] Tigris — https://en.wikipedia.org/wiki/Tigris" in text
    )
    reference = {
        "n": 1,
        "title": "Tigris",
        "url": "https://en.wikipedia.org/wiki/Tigris",
        "extract": "It flows.",
    }
    assert to_json(record) == {
        "question": "Q?",
        "answer": "Tigris [1][3]",
        "raw_answer": None,
        "supported_by_quotes": None,
        "citation_gate": None,
        "actions": [],
        "references": [reference],
    }


def _tiny_gemma(vocab_size: int, window: int = 8):
    """Gemma 3's layout (sliding-window and full layers) at toy size: a window of 8 tokens."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"] * 2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_prefix_cache_and_merged_batches_are_exact(arch):
    """Cached-prefix row prefill + merged decode == HF generate on each prompt alone."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)) if arch == "llama" else _tiny_gemma(len(tok))
    policy = HFPolicy(model, tok, name=arch, prompt_format=PromptFormat("base", examples=2))
    observations = [
        "●Question\nQ?\n●Next action",
        "●Question\nWhich river flows through Baghdad? " * 3,
        "x",
    ]
    prompts = [policy.prompt("browse", o) for o in observations] + ["no shared prefix at all"]
    batch = policy.generate(prompts, max_new_tokens=10, stop_at_newline=False)
    assert policy._mergeable and policy._prefixes, "the fast path was taken"
    for prompt, got in zip(prompts, batch, strict=True):
        enc = tok(prompt, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=0)
        assert got.token_ids == ref[0, enc.input_ids.shape[1] :].tolist()[: len(got.token_ids)]


def test_admissible_constraint_yields_only_admissible_commands(policy, wiki):
    from env.commands import parse

    env = BrowserEnv(wiki)
    env.reset("Which river flows through Baghdad?")
    env.step("Search Baghdad")
    env.step("Clicked on link 0")
    admissible = env.admissible()
    assert "End: Answer" not in admissible.commands  # nothing quoted yet
    assert any(c.startswith("Quote: Baghdad is the capital") for c in admissible.commands)
    assert "Clicked on link 1" in admissible.commands and "Back" in admissible.commands
    prompt = policy.prompt("browse", env.observation())
    gens = policy.generate(
        [prompt] * 6,
        max_new_tokens=300,
        sampling=Sampling(temperature=1.5),
        seeds=range(6),
        constrained=[admissible] * 6,
    )
    for gen in gens:
        text = completion_to_action(gen.text)
        if text in admissible.commands:
            continue
        assert text.startswith(admissible.prefixes), text
        parse(text)  # free text after Search / Find in page: still makes a command
    # on a results page searching again is not offered: the model must choose a result
    env.step("Back")
    assert not any(c.startswith("Search") for c in env.admissible().commands)


def test_free_answer_policy_is_not_held_to_quote_spans(wiki):
    """Under the aid a few-shot model's answer is a quote span citing it; a policy taught to
    answer from memory (`free_answers`) writes what it likes."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    answers = {}
    for free in (False, True):
        policy = HFPolicy(model, tok, name="tiny", free_answers=free)

        def make_env():
            env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=3)))
            return env

        tasks = [Task("Which river flows through Baghdad?", seed=s) for s in range(4)]
        config = RunConfig(batch_size=4, sampling=Sampling(temperature=1.5))
        records = [r for _, r in run_episodes(policy, tasks, make_env, config)]
        # as decoded (raw_answer): the citation check may drop a [n] afterwards (env/citations.py)
        answers[free] = [(r.raw_answer, [q.extract for q in r.quotes]) for r in records if r.quotes]
        if not free:  # the aid's answers continue `Answer:` after a space, as BC rows do
            answered = [r.steps[-1] for r in records if r.quotes]
            assert answered and all(s.phase == "answer" for s in answered)
            assert all(s.completion.startswith(policy.format.lead("answer")) for s in answered)
            assert policy.format.lead("answer") == " "
    assert answers[False] and answers[True]
    for answer, quotes in answers[False]:
        assert cited(answer) and any(strip_citations(answer) in q for q in quotes), answer
    assert any(
        not (cited(a) and any(strip_citations(a) in q for q in quotes))
        for a, quotes in answers[True]
    ), "free answers are not forced into quote spans"


def test_forced_tails_are_appended_exactly(policy, wiki):
    """Appending a command's forced tail without forward passes gives the same tokens and
    log-probs as decoding it, greedy and sampled, and saves the passes."""
    env = BrowserEnv(wiki)
    env.reset("Which river flows through Baghdad?")
    env.step("Search Baghdad Tigris")
    env.step("Clicked on link 0")
    admissible = env.admissible()
    prompt = policy.prompt("browse", env.observation())
    calls = []
    forward = policy._forward
    policy._forward = lambda *a: calls.append(a[0].shape) or forward(*a)
    try:
        out = {}
        for jump in (False, True):
            policy.jump_forward = jump
            calls.clear()
            for sampling in (Sampling(), Sampling(temperature=1.5)):
                gens = policy.generate(
                    [prompt] * 4,
                    max_new_tokens=300,
                    sampling=sampling,
                    seeds=range(4),
                    constrained=[admissible] * 4,
                )
                out[jump, sampling.temperature] = [(g.token_ids, g.logprobs) for g in gens]
            out[jump] = len(calls)
    finally:
        policy.jump_forward = True
        policy._forward = forward
    for temperature in (0.0, 1.5):
        assert out[True, temperature] == out[False, temperature]
    assert out[True] < out[False]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_step_reuses_the_start_it_shares_with_the_last_one(arch):
    """The next observation of an episode repeats the start of the last one: it is prefilled on
    that cache, and decodes as HF generate does on the whole prompt."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)) if arch == "llama" else _tiny_gemma(len(tok), window=1024)
    policy = HFPolicy(model, tok, name=arch, prompt_format=PromptFormat("base", examples=1))
    first = policy.prompt("browse", "●Question\nWhich river flows through Baghdad?\n●Quotes\nNone")
    second = policy.prompt("browse", "●Question\nWhich river flows through Baghdad?\n●Past")
    starts = []
    recent_start = policy._recent_start
    policy._recent_start = lambda ids, floor: starts.append(recent_start(ids, floor)) or starts[-1]
    for prompt in (first, second):
        (got,) = policy.generate([prompt], max_new_tokens=8, stop_at_newline=False)
        enc = tok(prompt, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert got.token_ids == ref[0, enc.input_ids.shape[1] :].tolist()[: len(got.token_ids)]
    assert starts[0] is None and starts[1] is not None
    assert starts[1][0] > len(policy._prefix_ids["browse"]) + 5
