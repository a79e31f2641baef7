"""PPO from the reward model over whole browsing episodes (the RL step of RLHF, as WebGPT ran it).

    webagent train ppo ../shared/data/triviaqa/train.jsonl --policy runs/bc/policy --rm runs/rm/minilm --out runs/ppo
    accelerate launch --multi_gpu --num_processes 2 -m webagent.train_ppo DATASET --policy … --rm … --out …

One file, CleanRL style: `Args` names every setting, `main` is the whole loop.

An iteration:
1. **Rollout.** The current policy plays `episodes_per_iteration` whole episodes (browse, then
   answer) in the environment with plain sampling at `temperature` (no admissible-action aid:
   PPO needs the log-probabilities of exactly the distribution it samples from). Each step's
   prompt (the observation) is context; the tokens the policy wrote are the actions.
2. **Scoring.** The reward model scores the final answer with its quotes
   (`reward.text.reward_text`), normalised by a running mean/std of scores. An episode with no
   answer gets `no_answer_reward` instead; one that ran out of actions also gets `budget_penalty`.
3. **Per-token rewards.** Each generated token gets -kl_coef * (log pi(a) - log pi_ref(a)), the
   KL penalty to the frozen behaviour-cloned policy; the last generated token of the episode
   also gets the episode's score. An episode's generated tokens, across all its steps, form
   one trajectory.
4. **GAE** over that trajectory (gamma = 1, lambda = 0.95 by default), values from a scalar head
   on the policy's last hidden states; advantages whitened over the batch.
5. **Update.** `update_epochs` passes of minibatches of steps: clipped ratio objective, clipped
   value loss, optional entropy bonus, gradient clipping. Only the generated tokens carry loss.
The policy is the BC LoRA adapter trained further; the reference is a frozen copy of it. The
model stays in eval mode throughout (no dropout), so the log-probabilities recomputed for the
update are those of the policy that sampled. Every iteration is checkpointed to OUT/last; a
rerun continues from there (a larger --iterations extends a finished run).

WebGPT's options: `--budget-range 20 100` samples each episode's action budget, and
`--answer-only-fraction` adds episodes that reuse a finished browse's quotes and only answer.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated

import torch
import tyro

from env.browser import BrowserEnv
from env.record import EpisodeRecord
from reward.checkpoint import resume_state, write_dir
from webagent.config import EnvArgs
from webagent.models import (
    CHECKPOINT_META,
    checkpoint_meta,
    hidden_states,
    load,
    logits_for,
    trainable_policy,
)


@dataclass
class Args:
    """PPO on a question set, starting from a behaviour-cloned policy, against a reward model."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Training questions (any layout `eval` reads); answers, when present, only feed the EM log."""
    policy: str = "bc-gemma3-270m"
    """The BC policy checkpoint (LoRA): the starting point and the frozen KL reference."""
    rm: str = "runs/rm/model"
    """Reward model directory (`webagent train rm`)."""
    out: str = "runs/ppo"
    env: EnvArgs = field(default_factory=lambda: EnvArgs(max_actions=10))
    iterations: int = 20
    episodes_per_iteration: int = 16
    """Episodes sampled per iteration per process."""
    batch: int = 8
    """Episodes decoded together during rollouts."""
    temperature: float = 1.0
    learning_rate: float = 1e-5
    adam_eps: float = 1e-5
    update_epochs: int = 2
    minibatch_steps: int = 8
    """Steps (prompt + generated tokens) per minibatch."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    vf_clip: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 1.0
    kl_coef: float = 0.02
    """Per-token KL penalty to the BC policy."""
    adaptive_kl: bool = False
    """Adapt kl_coef towards target_kl (Ziegler et al. 2019's proportional controller)."""
    target_kl: float = 6.0
    """Target KL per episode (nats) for --adaptive-kl."""
    kl_horizon: int = 10_000
    no_answer_reward: float = -1.0
    """Score (after normalisation) of an episode that gave no answer."""
    budget_penalty: float = 0.0
    """Added to the score of an episode that exhausted its action budget."""
    normalize_reward: bool = True
    budget_range: tuple[int, int] | None = None
    """Sample each episode's action budget uniformly from this range (WebGPT: 20 100)."""
    answer_only_fraction: float = 0.0
    """Extra answer-only episodes per browse (reusing its quotes), as a fraction."""
    browses: str | None = None
    """Recorded episodes (`eval`, `compare` or `demos` output) of DATASET's questions: when set,
    every episode is answer-only, reusing one of these browses' quotes, taken in a fixed
    shuffled cycle. Answer phases are ~10x shorter than whole episodes, which is what a CPU can
    train on (bench/README.md, PPO)."""
    max_new_tokens: int = 48
    seed: int = 0
    debug: bool = False


# --------------------------------------------------------------------------------------------
# Data: one Segment per policy-written step
# --------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """One step's tokens: the prompt (context) then the policy's generated tokens (actions)."""

    episode: int
    prompt_ids: list[int]
    action_ids: list[int]
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None


def segments_of(record: EpisodeRecord, episode: int, encode) -> list[Segment]:
    """The steps the policy wrote (prompt re-encoded exactly as the policy encoded it)."""
    out = []
    for step in record.steps:
        if step.token_ids and step.prompt is not None:
            ids = encode(step.prompt)
            if step.prompt_tokens is not None and len(ids) != step.prompt_tokens:
                raise ValueError(
                    f"prompt re-encodes to {len(ids)} tokens, sampled with {step.prompt_tokens}"
                )
            out.append(Segment(episode, ids, list(step.token_ids)))
    return out


def collate(segments: list[Segment], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; `action_mask` is 1 exactly on generated tokens."""
    width = max(len(s.prompt_ids) + len(s.action_ids) for s in segments)
    ids = torch.full((len(segments), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(segments), width), dtype=torch.long)
    mask = torch.zeros((len(segments), width), dtype=torch.bool)
    for row, s in enumerate(segments):
        seq = s.prompt_ids + s.action_ids
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        mask[row, len(s.prompt_ids) : len(seq)] = True
    return {"input_ids": ids, "attention_mask": attention, "action_mask": mask}


class PolicyAndValue(torch.nn.Module):
    """The LM (with its LoRA adapter) plus a scalar value head on its last hidden states.

    forward -> (log-probs of the generated tokens, their entropies, values of the states they
    were generated in), each flattened over the batch's action positions in order."""

    def __init__(self, model, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature
        hidden = model.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        # zero: values start at 0 whatever the scale of the LM's hidden states (Gemma's are
        # large, so a random head starts at values of several units and clipped updates crawl)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, action_mask):
        hidden, where = action_hidden(self.model, input_ids, attention_mask, action_mask)
        logits = logits_for(self.model, hidden, where) / self.temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = _taken(logp_all, input_ids, where)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        values = self.value_head(hidden[where].float()).squeeze(-1)
        return logp, entropy, values


def action_hidden(model, input_ids, attention_mask, action_mask):
    """Hidden states that predict each generated token (position t predicts token t+1, and
    values the state before it) and the mask selecting them."""
    hidden = hidden_states(model, input_ids, attention_mask)[:, :-1]
    return hidden, action_mask[:, 1:]


def action_logprobs(
    model, input_ids, attention_mask, action_mask, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probabilities of the generated tokens under `model` at `temperature` (flattened)."""
    hidden, where = action_hidden(model, input_ids, attention_mask, action_mask)
    logits = logits_for(model, hidden, where) / temperature
    return _taken(torch.log_softmax(logits, dim=-1), input_ids, where)


def _taken(logp_all: torch.Tensor, input_ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Each generated token's log-probability from the rows of `logp_all` that predict it."""
    return logp_all.gather(-1, input_ids[:, 1:][where][:, None]).squeeze(-1)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over one trajectory (the value after the end is 0)."""
    advantages = torch.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages, advantages + values


def token_rewards(
    score: float, old_logp: torch.Tensor, ref_logp: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """-kl_coef * (log pi - log pi_ref) per token, plus the episode's score on the last token."""
    rewards = -kl_coef * (old_logp - ref_logp)
    rewards[-1] += score
    return rewards


def ppo_loss(new_logp, entropy, new_values, batch: dict, args: Args) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate + clipped value loss - entropy bonus, means over the minibatch's tokens."""
    log_ratio = new_logp - batch["old_logp"]
    ratio = log_ratio.exp()
    adv = batch["advantages"]
    pg_loss = torch.max(
        -adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
    ).mean()
    v_clipped = batch["old_values"] + (new_values - batch["old_values"]).clamp(
        -args.vf_clip, args.vf_clip
    )
    v_loss = (
        0.5
        * torch.max(
            (new_values - batch["returns"]) ** 2, (v_clipped - batch["returns"]) ** 2
        ).mean()
    )
    ent = entropy.mean()
    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * ent
    with torch.no_grad():
        stats = {"pg_loss": float(pg_loss), "value_loss": float(v_loss), "entropy": float(ent),
                 "approx_kl": float(((ratio - 1) - log_ratio).mean()),
                 "clipfrac": float(((ratio - 1).abs() > args.clip_coef).float().mean())}  # fmt: skip
    return loss, stats


class RunningMeanStd:
    """Running mean and variance of scores (Welford, batched), for reward normalisation."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, xs: list[float]) -> None:
        if not xs:
            return
        n = len(xs)
        mean = sum(xs) / n
        var = sum((x - mean) ** 2 for x in xs) / n
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x: float) -> float:
        return (x - self.mean) / math.sqrt(self.var + 1e-8)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def env_factory(args: Args, rng: random.Random):
    """Fresh environments; with --budget-range each gets its own action budget."""
    source, cache = args.env.open()
    base = args.env.env_config()

    def make() -> BrowserEnv:
        config = base
        if args.budget_range is not None:
            budget = rng.randint(*args.budget_range)
            config = replace(base, limits=replace(base.limits, max_actions=budget))
        return BrowserEnv(source, config, cache=cache)

    return make


@torch.no_grad()
def evaluate_segments(
    net: PolicyAndValue, ref_model, segments: list[Segment], pad_id: int, chunk: int = 4
) -> None:
    """Fill each segment's old log-probs and values (current policy) and reference log-probs."""
    for i in range(0, len(segments), chunk):
        part = segments[i : i + chunk]
        batch = collate(part, pad_id)
        logp, _, values = net(**batch)
        ref_logp = action_logprobs(ref_model, **batch, temperature=net.temperature)
        offset = 0
        for s in part:
            n = len(s.action_ids)
            s.old_logprobs, s.values, s.ref_logprobs = (
                logp[offset : offset + n],
                values[offset : offset + n],
                ref_logp[offset : offset + n],
            )
            offset += n


def answer_only(
    policy, records: list[EpisodeRecord], seeds: list[int], args: Args
) -> list[EpisodeRecord]:
    """WebGPT's answer-only episodes: each record's question and quotes, a freshly sampled answer."""
    from webagent.policy import Sampling
    from webagent.rollout import RunConfig, reanswer

    config = RunConfig(batch_size=args.batch, sampling=Sampling(temperature=args.temperature),
                       answer_max_new_tokens=args.max_new_tokens, admissible_only=False)  # fmt: skip
    return reanswer(policy, records, seeds, config)


def browses_of(path: str, questions) -> list[tuple[int, EpisodeRecord]]:
    """(question index, record) for every recorded browse of these questions."""
    from webagent.rollout import recorded_browses

    index = {q.id: i for i, q in enumerate(questions)}
    out = [(index[r.meta["question_id"]], r) for r in recorded_browses(path)
           if r.meta.get("question_id") in index]  # fmt: skip
    if not out:
        raise ValueError(f"{path}: no episode with quotes and an answer step for these questions")
    return out


def main(args: Args) -> Path:
    from accelerate import Accelerator
    from tqdm import tqdm

    from reward.model import RewardScorer
    from reward.text import Answer, reward_text
    from webagent.datasets import load_questions
    from webagent.metrics import exact_match
    from webagent.policy import HFPolicy, Sampling
    from webagent.prompts import format_for
    from webagent.rollout import RunConfig, Task, answerable, run_episodes

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(args.seed)
    out = Path(args.out)
    questions = load_questions(args.dataset, require_answers=False)
    if not questions:
        raise ValueError(f"{args.dataset} holds no questions")
    browses = browses_of(args.browses, questions) if args.browses else None  # before any model
    loaded = trainable_policy(args.policy)
    reference = load(args.policy).model.eval()
    reference.requires_grad_(False)
    trained = checkpoint_meta(loaded.source_path)
    fmt = format_for(loaded.tokenizer, examples=trained.get("prompt", {}).get("examples", 0))
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # eval: no dropout, so the log-probs recomputed for the update are those that sampled
    net = PolicyAndValue(loaded.model, args.temperature).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=args.adam_eps)
    scorer = RewardScorer(args.rm)
    if browses is not None:
        # one shuffle, then a cycle: a slice no larger than one iteration's episodes replays the
        # same browses every iteration, so its mean reward tracks the policy alone
        browse_order = random.Random(args.seed).sample(browses, len(browses))
    stats_rms = RunningMeanStd()
    kl_coef = args.kl_coef
    fingerprint = {k: v for k, v in asdict(args).items() if k not in ("iterations", "out", "debug")}
    fingerprint["world"] = world
    fingerprint = json.loads(json.dumps(fingerprint))
    start, log = 0, []
    last = out / "last"
    if (state_path := resume_state(last)) is not None:
        state = torch.load(state_path, weights_only=False)
        if state["fingerprint"] != fingerprint:
            raise ValueError(
                f"{last} was written by a different run; use another --out or delete it"
            )
        own = dict(net.named_parameters())
        for k, v in state["trainable"].items():
            own[k].data.copy_(v)
        optimizer.load_state_dict(state["optimizer"])
        start, log, kl_coef = state["iteration"], state["log"], state["kl_coef"]
        stats_rms.__dict__.update(state["reward_stats"])
        torch.set_rng_state(state["rng"])
        accelerator.print(f"resuming from {last} at iteration {start}/{args.iterations}")
    wrapped, optimizer = accelerator.prepare(net, optimizer)
    acting = HFPolicy(
        loaded.model,
        tokenizer,
        name=f"ppo:{Path(args.policy).name}",
        prompt_format=fmt,
        cache_prefix=False,
    )
    run_config = RunConfig(batch_size=args.batch, sampling=Sampling(temperature=args.temperature, seed=args.seed),
                           admissible_only=False, browse_max_new_tokens=args.max_new_tokens,
                           answer_max_new_tokens=args.max_new_tokens)  # fmt: skip
    bar = tqdm(
        total=args.iterations,
        initial=start,
        desc="ppo",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    for iteration in range(start, args.iterations):
        t0 = time.time()
        # 1. rollout: this process's share of questions, each episode with its own fixed seed
        rng = random.Random(args.seed * 1_000_003 + iteration * world + rank)
        base = (iteration * world + rank) * args.episodes_per_iteration
        net.eval()
        if browses is not None:  # answer-only episodes on recorded browses, in a fixed cycle
            chosen = [
                browse_order[(base + n) % len(browse_order)]
                for n in range(args.episodes_per_iteration)
            ]
            answers = answer_only(
                acting, [r for _, r in chosen], [base + n for n in range(len(chosen))], args
            )
            episodes = [(q, r) for (q, _), r in zip(chosen, answers, strict=True)]
        else:
            picks = [rng.randrange(len(questions)) for _ in range(args.episodes_per_iteration)]
            tasks = [
                Task(questions[j].question, {"question_id": questions[j].id}, seed=base + n)
                for n, j in enumerate(picks)
            ]
            records: list[tuple[int, EpisodeRecord]] = list(
                run_episodes(acting, tasks, env_factory(args, rng), run_config)
            )
            records.sort(key=lambda x: x[0])
            episodes = [(picks[i], r) for i, r in records]
        if args.answer_only_fraction > 0:
            again = [
                (q, r)
                for q, r in episodes
                if answerable(r) and rng.random() < args.answer_only_fraction
            ]
            seeds = [base + 10_000 + n for n in range(len(again))]
            episodes += list(
                zip(
                    [q for q, _ in again],
                    answer_only(acting, [r for _, r in again], seeds, args),
                    strict=True,
                )
            )

        # 2. scores
        raw = scorer.score_texts(
            [reward_text(r.question, Answer.from_record(r)) for _, r in episodes]
        )
        answered = [s for (_, r), s in zip(episodes, raw, strict=True) if r.answer]
        if args.normalize_reward:
            stats_rms.update(answered)
        scores = []
        for (_, r), s in zip(episodes, raw, strict=True):
            score = (
                (stats_rms.normalize(s) if args.normalize_reward else s)
                if r.answer
                else args.no_answer_reward
            )
            if r.end == "budget" and not r.meta.get("answer_only"):
                score += args.budget_penalty
            scores.append(score)

        # 3-4. per-token rewards, values, GAE (per episode, over all its generated tokens)
        segments: list[Segment] = []
        for e, (_, r) in enumerate(episodes):
            segments += segments_of(r, e, acting.encode)
        evaluate_segments(net, reference, segments, pad_id)
        kls = []
        for e in range(len(episodes)):
            mine = [s for s in segments if s.episode == e]
            if not mine:
                continue
            old = torch.cat([s.old_logprobs for s in mine])
            ref = torch.cat([s.ref_logprobs for s in mine])
            values = torch.cat([s.values for s in mine])
            kls.append(float((old - ref).sum()))
            adv, ret = gae(
                token_rewards(scores[e], old, ref, kl_coef), values, args.gamma, args.gae_lambda
            )
            offset = 0
            for s in mine:
                n = len(s.action_ids)
                s.advantages, s.returns = adv[offset : offset + n], ret[offset : offset + n]
                offset += n
        if segments:
            all_adv = torch.cat([s.advantages for s in segments])
            mean, std = (
                all_adv.mean(),
                all_adv.std().clamp(min=1e-8) if len(all_adv) > 1 else torch.tensor(1.0),
            )
            for s in segments:
                s.advantages = (s.advantages - mean) / std

        # 5. update: every process runs the same number of minibatches (DDP all-reduces each)
        stats: list[dict] = []
        order = list(range(len(segments)))
        n_minibatches = math.ceil(len(segments) / args.minibatch_steps)
        if world > 1:
            n_minibatches = int(accelerator.gather(torch.tensor([n_minibatches])).min())
        for _ in range(args.update_epochs):
            rng.shuffle(order)
            for i in range(n_minibatches):
                part = [
                    segments[j]
                    for j in order[i * args.minibatch_steps : (i + 1) * args.minibatch_steps]
                ]
                batch = collate(part, pad_id)
                new_logp, entropy, new_values = wrapped(**batch)
                targets = {"old_logp": torch.cat([s.old_logprobs for s in part]), "advantages": torch.cat([s.advantages for s in part]),
                           "old_values": torch.cat([s.values for s in part]), "returns": torch.cat([s.returns for s in part])}  # fmt: skip
                loss, st = ppo_loss(new_logp, entropy, new_values, targets, args)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                stats.append(st)

        # logs
        mean_kl = sum(kls) / max(1, len(kls))
        if args.adaptive_kl:  # proportional controller on the per-episode KL
            error = max(-0.2, min(0.2, mean_kl / args.target_kl - 1))
            kl_coef *= 1 + error * len(episodes) / args.kl_horizon
        ems = [
            exact_match(r.answer, questions[q].aliases) for q, r in episodes if questions[q].aliases
        ]
        if segments:
            v = torch.cat([s.values for s in segments])
            ret = torch.cat([s.returns for s in segments])
            ev = explained_variance(v, ret)
        else:
            ev = float("nan")
        row = {
            "iteration": iteration + 1,
            "reward": sum(raw) / max(1, len(raw)),
            "score": sum(scores) / max(1, len(scores)),
            "kl": mean_kl,
            "kl_coef": kl_coef,
            "episode_length": sum(len([s for s in r.steps if s.phase == "browse"]) for _, r in episodes) / max(1, len(episodes)),
            "answered": len(answered) / max(1, len(episodes)),
            "em": sum(ems) / len(ems) if ems else None,
            "explained_variance": ev,
            "seconds": time.time() - t0,
            **{k: sum(s[k] for s in stats) / max(1, len(stats)) for k in ("pg_loss", "value_loss", "entropy", "approx_kl", "clipfrac")},
        }  # fmt: skip
        row = {k: (float(accelerator.reduce(torch.tensor(v), "mean")) if isinstance(v, float) and world > 1 else v)
               for k, v in row.items()}  # fmt: skip
        log.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.2f}", em=row["em"])
        if accelerator.is_main_process:
            _save_state(last, accelerator.unwrap_model(wrapped), optimizer, iteration + 1, log, kl_coef,
                        stats_rms, fingerprint)  # fmt: skip
            with open(out / "log.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in log)
        accelerator.wait_for_everyone()
    bar.close()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(wrapped)
        _save_policy(final, out, args, trained, log)
        plot(log, out / "log.png")
        accelerator.print(
            f"saved PPO policy -> {out} (log: {out / 'log.jsonl'}, {out / 'log.png'})"
        )
    accelerator.wait_for_everyone()
    return out


def _save_state(
    last: Path, net: PolicyAndValue, optimizer, iteration: int, log, kl_coef, rms, fingerprint
) -> None:
    trainable = {k: v.detach().cpu() for k, v in net.named_parameters() if v.requires_grad}
    write_dir(last, lambda tmp: torch.save(
        {"trainable": trainable, "optimizer": optimizer.state_dict(), "iteration": iteration, "log": log,
         "kl_coef": kl_coef, "reward_stats": dict(rms.__dict__), "fingerprint": fingerprint,
         "rng": torch.get_rng_state()}, tmp / "state.pt"))  # fmt: skip


def _save_policy(net: PolicyAndValue, out: Path, args: Args, parent: dict, log: list[dict]) -> None:
    """A policy checkpoint like BC's (adapter + webagent.json), plus the value head."""
    from safetensors.torch import save_file

    net.model.save_pretrained(out)
    save_file(
        {k: v.contiguous() for k, v in net.value_head.state_dict().items()},
        out / "value_head.safetensors",
    )
    meta = {"base_model": parent.get("base_model"), "kind": "ppo", "adapter": "lora", "prompt": parent.get("prompt", {"examples": 0}), "answers": parent.get("answers", "extractive"),
            "parent_policy": args.policy, "reward_model": args.rm, "iterations": len(log), "log": log,
            "args": {k: v for k, v in asdict(args).items() if k != "debug"}}  # fmt: skip
    (out / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def plot(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in log]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in [(axes[0], "reward", "mean reward-model score"), (axes[1], "kl", "KL to BC (nats / episode)"),
                           (axes[2], "em", "EM on the sampled questions")]:  # fmt: skip
        ax.plot(its, [r[key] if r[key] is not None else float("nan") for r in log], marker="o")
        ax.set_title(title)
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if (
    __name__ == "__main__"
):  # `webagent train ppo …` is the usual entry; this serves accelerate launch -m
    args = tyro.cli(Args, config=(tyro.conf.OmitArgPrefixes,))
    try:
        main(args)
    except KeyboardInterrupt:
        sys.exit(130)
