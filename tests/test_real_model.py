"""Integration on the real SmolLM2-135M-Instruct weights: the runner, batching and replay."""

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from webagent.policy import HFPolicy, Sampling
from webagent.replay import replay
from webagent.rollout import RunConfig, Task, run_episodes

QUESTIONS = [
    "Which river flows through Baghdad?",
    "Who painted the Mona Lisa?",
    "What is the capital of Peru?",
]


def test_real_model_episodes_batch_equals_single_and_replay(smollm2, wiki, page_cache):
    policy = HFPolicy(smollm2.model, smollm2.tokenizer, name=smollm2.name)
    assert policy.format.style == "chat"  # SmolLM2-Instruct has a chat template

    def make_env():
        return BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=4)), cache=page_cache)  # noqa: E731

    runs = {}
    for batch in (1, 3):
        config = RunConfig(batch_size=batch, sampling=Sampling(temperature=0.7, seed=5))
        runs[batch] = dict(run_episodes(policy, [Task(q) for q in QUESTIONS], make_env, config))
    for i in range(len(QUESTIONS)):
        a, b = runs[1][i], runs[3][i]
        assert [s.action for s in a.steps] == [s.action for s in b.steps]
        assert [s.token_ids for s in a.steps] == [s.token_ids for s in b.steps]
    for record in runs[3].values():
        browse = [s for s in record.steps if s.phase == "browse"]
        assert len(browse) == 4 and browse[0].action.startswith(
            "Search"
        )  # constrained: admissible only
        assert all(s.error is None or "quote" in s.error for s in browse)
        assert replay(record, page_cache).ok
