"""PPO on tiny models: masks, KL against itself, GAE by hand, one update, resume, 2 processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_demos import QUESTIONS, write_questions
from tiny import save_tiny

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.record import append_jsonl
from reward.model import RewardModel, prepare_tokenizer
from webagent.config import EnvArgs, PolicyArgs, load_policy
from webagent.demos import generate
from webagent.models import trainable_policy
from webagent.policy import Sampling
from webagent.rollout import RunConfig, Task, run_episodes
from webagent.train_bc import Args as BCArgs
from webagent.train_bc import main as train_bc
from webagent.train_ppo import (
    Args,
    EpisodeSeeds,
    PolicyAndValue,
    Segment,
    answer_only,
    browses_of,
    collate,
    evaluate_segments,
    gae,
    ppo_loss,
    segments_of,
    setup,
    spread,
    token_rewards,
    whiten_advantages,
)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bc_policy(tmp_path_factory, wiki) -> Path:
    """A tiny behaviour-cloned LoRA policy (two steps on real expert demonstrations)."""
    root = tmp_path_factory.mktemp("ppo")
    tiny = save_tiny(root / "tiny")
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))  # noqa: E731
    demos = root / "demos.jsonl"
    append_jsonl(demos, [r for _, r in generate(QUESTIONS[:2], make_env) if r])
    train_bc(
        BCArgs(
            demos=str(demos),
            model=str(tiny),
            out=str(root / "bc"),
            max_steps=2,
            max_length=192,
            micro_batch=2,
            grad_accum=1,
            warmup_steps=1,
        )
    )
    return root / "bc"


@pytest.fixture(scope="module")
def tiny_rm(bc_policy) -> Path:
    from transformers import AutoTokenizer

    body = bc_policy.parent / "tiny"
    out = bc_policy.parent / "rm"
    RewardModel.from_body(body).save(
        out,
        prepare_tokenizer(AutoTokenizer.from_pretrained(body)),
        {"base_model": str(body), "max_length": 256},
    )
    return out


def episodes(policy, wiki, n=3, max_actions=3):
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=max_actions)))  # noqa: E731
    config = RunConfig(
        batch_size=3,
        sampling=Sampling(temperature=1.0, seed=3),
        admissible_only=False,
        browse_max_new_tokens=12,
        answer_max_new_tokens=12,
    )
    tasks = [Task(q.question) for q in QUESTIONS[:n]]
    return [r for _, r in sorted(run_episodes(policy, tasks, make_env, config), key=lambda x: x[0])]


def test_masks_cover_exactly_the_generated_tokens_and_kl_to_itself_is_zero(bc_policy, wiki):
    policy = load_policy(PolicyArgs(model=str(bc_policy), int8=False))
    records = episodes(policy, wiki)
    segments = [s for e, r in enumerate(records) for s in segments_of(r, e, policy.encode)]
    written = [step for r in records for step in r.steps if step.token_ids]
    assert len(segments) == len(written) > 0
    batch = collate(segments, policy.tokenizer.pad_token_id)
    for row, (seg, step) in enumerate(zip(segments, written, strict=True)):
        assert batch["input_ids"][row][batch["action_mask"][row]].tolist() == step.token_ids
        assert int(batch["action_mask"][row].sum()) == len(step.token_ids)
        assert len(seg.prompt_ids) == step.prompt_tokens
    net = PolicyAndValue(policy.model).eval()
    reference = load_policy(PolicyArgs(model=str(bc_policy), int8=False)).model
    evaluate_segments(net, reference, segments, policy.tokenizer.pad_token_id)
    for seg, step in zip(segments, written, strict=True):
        assert torch.allclose(seg.old_logprobs, seg.ref_logprobs, atol=1e-6), (
            "same weights: KL is 0"
        )
        # the update recomputes exactly the log-probs the sampler drew with (temperature 1, no aid)
        assert torch.allclose(seg.old_logprobs, torch.tensor(step.logprobs), atol=1e-4)
        rewards = token_rewards(0.0, seg.old_logprobs, seg.ref_logprobs, kl_coef=0.5)
        assert torch.allclose(rewards, torch.zeros_like(rewards), atol=1e-6)


def test_gae_matches_a_hand_computed_case():
    rewards = torch.tensor([0.0, 0.0, 1.0])
    values = torch.tensor([0.5, 0.2, 0.1])
    adv, ret = gae(rewards, values, gamma=1.0, lam=0.95)
    # delta2 = 1 - 0.1 = 0.9; delta1 = 0.1 - 0.2 = -0.1; delta0 = 0.2 - 0.5 = -0.3
    expected = torch.tensor([-0.3 + 0.95 * (-0.1 + 0.95 * 0.9), -0.1 + 0.95 * 0.9, 0.9])
    assert torch.allclose(adv, expected) and torch.allclose(ret, expected + values)
    adv, _ = gae(rewards, values, gamma=0.5, lam=0.0)  # one-step TD errors
    assert torch.allclose(adv, torch.tensor([0.0 + 0.5 * 0.2 - 0.5, 0.5 * 0.1 - 0.2, 1.0 - 0.1]))
    kl = token_rewards(2.0, torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]), kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([-0.05, 0.1 + 2.0]))


def test_one_ppo_update_lowers_the_loss(bc_policy, wiki):
    loaded = trainable_policy(str(bc_policy))
    policy = load_policy(PolicyArgs(model=str(bc_policy), int8=False))
    records = episodes(policy, wiki, n=2)
    segments = [s for e, r in enumerate(records) for s in segments_of(r, e, policy.encode)]
    net = PolicyAndValue(loaded.model).eval()
    evaluate_segments(net, loaded.model, segments, policy.tokenizer.pad_token_id)
    gen = torch.Generator().manual_seed(0)
    for s in segments:
        s.advantages = torch.randn(len(s.action_ids), generator=gen)
        s.returns = s.values + torch.randn(len(s.action_ids), generator=gen)
    batch = collate(segments, policy.tokenizer.pad_token_id)
    targets = {
        "old_logp": torch.cat([s.old_logprobs for s in segments]),
        "advantages": torch.cat([s.advantages for s in segments]),
        "old_values": torch.cat([s.values for s in segments]),
        "returns": torch.cat([s.returns for s in segments]),
    }
    args = Args(dataset="x", learning_rate=1e-3)
    params = [p for p in net.parameters() if p.requires_grad]
    assert params and all(p.requires_grad for n, p in net.named_parameters() if "lora_" in n)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    before, stats = ppo_loss(*net(**batch), targets, args)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats["clipfrac"] == 0.0
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after, _ = ppo_loss(*net(**batch), targets, args)
    assert after.item() < before.item()


@pytest.fixture
def train_env(tmp_path, index_dir) -> dict:
    cache = tmp_path / "cache"
    shutil.copytree(index_dir, cache / "index", dirs_exist_ok=True)
    return {
        **os.environ,
        "WEBAGENT_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def _questions(tmp_path) -> Path:
    return write_questions(tmp_path / "q.jsonl", QUESTIONS[:3])


def ppo_cmd(bc_policy, tiny_rm, out, data, flags: str) -> list[str]:
    """`webagent train ppo` on the tiny policy and reward model, plus `flags`."""
    paths = ["--policy", str(bc_policy), "--rm", str(tiny_rm), "--out", str(out)]
    return [str(BIN / "webagent"), "train", "ppo", str(data), *paths, *flags.split()]


def test_ppo_cli_resumes_and_extends(bc_policy, tiny_rm, tmp_path, train_env):
    out = tmp_path / "ppo"
    flags = "--episodes-per-iteration 3 --batch 3 --max-actions 3 --max-new-tokens 12"
    flags += " --budget-range 2 4 --answer-only-fraction 0.5"
    cmd = ppo_cmd(bc_policy, tiny_rm, out, _questions(tmp_path), flags)
    first = subprocess.run(
        [*cmd, "--iterations", "1"], env=train_env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(
        [*cmd, "--iterations", "2"], env=train_env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout and "at iteration 1/2" in second.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]
    keys = {"reward", "kl", "entropy", "clipfrac", "value_loss", "explained_variance"}
    assert keys | {"episode_length", "em"} <= set(log[0])
    assert (out / "log.png").stat().st_size > 0 and (out / "value_head.safetensors").exists()
    meta = json.loads((out / "webagent.json").read_text())
    assert meta["kind"] == "ppo" and meta["iterations"] == 2 and meta["prompt"]["examples"] == 0
    assert meta["rollouts"] == "int8", "int8 by default on a CPU, and recorded"
    assert load_policy(PolicyArgs(model=str(out))).format.examples == 0


LAUNCH = (
    "launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
)
"""accelerate's two-process CPU launch (gloo), as a user would type it."""


def test_ppo_runs_on_two_processes(bc_policy, tiny_rm, tmp_path, train_env):
    launch = [str(BIN / "accelerate"), *LAUNCH.split(), "-m", "webagent.train_ppo"]
    flags = (
        "--iterations 1 --episodes-per-iteration 2 --batch 2 --max-actions 3 --max-new-tokens 12"
    )
    cmd = ppo_cmd(bc_policy, tiny_rm, tmp_path / "ppo2", _questions(tmp_path), flags)
    run = subprocess.run(
        [*launch, *cmd[3:]], env=train_env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "ppo2" / "webagent.json").read_text())["iterations"] == 1


def eval_rows(path: Path, browses) -> Path:
    """`webagent eval` rows (best-of: the kept episode plus its candidates) holding `browses`."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "question_id": r.meta["question_id"],
                    "episode": r.to_dict(),
                    "candidates": [{"score": 0.0, "episode": r.to_dict()}],
                }
            )
            + "\n"
            for _, r in browses
        )
    )
    return path


def test_answer_only_episodes_reuse_recorded_quotes_with_tempered_logprobs(bc_policy, wiki):
    """Answer-only episodes answer a recorded browse's quotes; at temperature 0.5 the update
    recomputes the log-probs the sampler drew with (the policy is the tempered one)."""
    from webagent.datasets import load_questions

    policy = load_policy(PolicyArgs(model=str(bc_policy), int8=False))
    demos = bc_policy.parent / "demos.jsonl"
    data = _questions(bc_policy.parent)
    browses = browses_of(str(demos), load_questions(str(data)))
    assert sorted(q for q, _ in browses) == [0, 1]
    args = Args(dataset=str(data), temperature=0.5, batch=2, max_new_tokens=10)
    records = answer_only(policy, [r for _, r in browses], [7, 8], args)
    for (_, browse), record in zip(browses, records, strict=True):
        assert record.quotes == browse.quotes and record.meta["answer_only"]
        (step,) = record.steps
        assert step.phase == "answer" and step.token_ids and browse.quotes[0].extract in step.prompt
    segments = [s for e, r in enumerate(records) for s in segments_of(r, e, policy.encode)]
    net = PolicyAndValue(policy.model, temperature=0.5).eval()
    evaluate_segments(net, policy.model, segments, policy.tokenizer.pad_token_id)
    for seg, record in zip(segments, records, strict=True):
        assert torch.allclose(seg.old_logprobs, torch.tensor(record.steps[0].logprobs), atol=1e-4)
    untempered = PolicyAndValue(policy.model).eval()
    evaluate_segments(untempered, policy.model, segments, policy.tokenizer.pad_token_id)
    assert not torch.allclose(
        segments[0].old_logprobs, torch.tensor(records[0].steps[0].logprobs), atol=1e-3
    )
    other = [
        q
        for q in load_questions(str(data))
        if q.id not in {r.meta["question_id"] for _, r in browses}
    ]
    with pytest.raises(ValueError, match="no episode with quotes"):
        browses_of(str(demos), other)
    # an eval results file serves too: each row's episode and every best-of candidate's
    rows = eval_rows(bc_policy.parent / "eval-results.jsonl", browses)
    again = browses_of(str(rows), load_questions(str(data)))
    assert [r.id for _, r in again] == [r.id for _, b in browses for r in (b, b)]


def test_ppo_cli_answer_only_on_recorded_browses(bc_policy, tiny_rm, tmp_path, train_env):
    """`--browses`: every episode answers a recorded browse's quotes (no browsing)."""
    out = tmp_path / "ppo-answers"
    demos = bc_policy.parent / "demos.jsonl"
    flags = f"--browses {demos} --iterations 2 --episodes-per-iteration 3 --batch 3"
    flags += " --temperature 0.7 --max-new-tokens 8"
    run = subprocess.run(
        ppo_cmd(bc_policy, tiny_rm, out, _questions(tmp_path), flags),
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]
    assert all(r["episode_length"] == 0 and r["answered"] > 0 for r in log), "answer phase only"
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-4), "the first rollout is the reference's"


def test_int8_rollouts_are_cpu_only():
    """torch._int_mm on CUDA refuses products of 16 rows or fewer: rollouts there are fp32."""
    from webagent.train_ppo import rollout_int8

    assert rollout_int8(True, torch.device("cpu"))
    assert not rollout_int8(True, torch.device("cuda", 0))  # a device name: no GPU needed
    assert not rollout_int8(False, torch.device("cpu"))


def test_episode_seeds_never_repeat_across_processes_iterations_and_sources():
    args = Args(dataset="x", episodes_per_iteration=4)
    seen: set[int] = set()
    for iteration in range(3):
        for rank in range(2):
            seeds = EpisodeSeeds.of(args, iteration, rank, world=2)
            mine = {seeds.episode(n) for n in range(4)} | {seeds.reanswer(n) for n in range(4)}
            assert len(mine) == 8 and not mine & seen
            seen |= mine
    first = EpisodeSeeds.of(args, 0, 0, 1)
    assert first.rng().random() == EpisodeSeeds.of(args, 0, 0, 1).rng().random()
    assert first.rng().random() != EpisodeSeeds.of(args, 1, 0, 1).rng().random()


def test_spread_and_whitening_follow_each_segment_s_generated_tokens():
    segments = [Segment(0, [1], [5, 6]), Segment(0, [1, 2], [7]), Segment(1, [3], [8, 9, 4])]
    spread(segments, advantages=torch.arange(6.0))
    assert [s.advantages.tolist() for s in segments] == [[0, 1], [2], [3, 4, 5]]
    whiten_advantages(segments)
    flat = torch.cat([s.advantages for s in segments])
    assert flat.mean().abs() < 1e-6 and (flat.std() - 1).abs() < 1e-6
    assert [len(s.advantages) for s in segments] == [2, 1, 3]


@pytest.mark.parametrize(
    ("env", "flag"),
    [(EnvArgs(source="web", search="bm25"), "--search"), (EnvArgs(max_actions=0), "--max-actions")],
)
def test_browser_flags_fail_before_any_model_loads(env, flag, tmp_path):
    """PPO's browser flags are checked as every browsing command's are: the policy named here
    does not exist, so an error about it would mean the flag was checked after loading (or never:
    --search bm25 on the live web was accepted and ignored)."""
    data = _questions(tmp_path)
    args = Args(dataset=str(data), policy=str(tmp_path / "no-such-policy"), env=env)
    with pytest.raises(ValueError, match=flag):
        setup(args)
