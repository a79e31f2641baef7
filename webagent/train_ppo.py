"""PPO from the reward model over whole browsing episodes (the RL step of RLHF, as WebGPT ran it).

    webagent train ppo ../shared/data/triviaqa/train.jsonl --policy runs/bc/policy --rm runs/rm/minilm --out runs/ppo
    accelerate launch --multi_gpu --num_processes 2 -m webagent.train_ppo DATASET --policy … --rm … --out …

One file, CleanRL style: `Args` names and documents every setting; `main` is the loop, a short
list of named steps.

An iteration (each step is the function named in brackets; `main` calls them in turn):
1. **Rollout** (`collect_episodes`). The current policy plays `episodes_per_iteration` whole
   episodes (browse, then answer) in the environment with plain sampling at `temperature` (no
   admissible-action aid: PPO needs the log-probabilities of exactly the distribution it
   samples from). Each step's prompt (the observation) is context; the tokens the policy wrote
   are the actions. `EpisodeSeeds` gives every episode of the run its own seed.
2. **Scoring** (`score_episodes`). The reward model scores the final answer with its quotes
   (`reward.text.reward_text`), normalised by a running mean/std of scores. An episode with no
   answer gets `no_answer_reward` instead; one that ran out of actions also gets `budget_penalty`.
3. **Per-token rewards** (`compute_advantages`). Each generated token gets
   -kl_coef * (log pi(a) - log pi_ref(a)), the KL penalty to the frozen behaviour-cloned
   policy; the last generated token of the episode also gets the episode's score. An
   episode's generated tokens, across all its steps, form one trajectory.
4. **GAE** (`compute_advantages`) over that trajectory (gamma = 1, lambda = 0.95 by default),
   values from a scalar head on the policy's last hidden states; advantages whitened over the
   batch.
5. **Update** (`update`). `update_epochs` passes of minibatches of steps: clipped ratio
   objective, clipped value loss, optional entropy bonus, gradient clipping. Only the generated
   tokens carry loss.
6. **Log and checkpoint** (`adapt_kl`, `log_row`, `save_checkpoint`; at the end `save_final`).
The policy is the BC LoRA adapter trained further; the reference is a frozen copy of it. The
model stays in eval mode throughout (no dropout), so the log-probabilities recomputed for the
update are those of the policy that sampled, up to int8's rounding: by default the rollouts
sample with an int8 copy of the current weights (`rollout_policy`, ~3x faster episodes; on a
CPU only), the update stays fp32; `--no-int8` samples with the fp32 weights themselves. Every
iteration is checkpointed to OUT/last; a rerun continues from there (a larger --iterations
extends a finished run).

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
from typing import Annotated, Any

import torch
import tyro

from env.browser import BrowserEnv
from env.record import EpisodeRecord
from reward.checkpoint import flag_names, load_resume, restore_trainable, trainable_state, write_dir
from webagent.checkpoints import save_policy
from webagent.config import EnvArgs
from webagent.models import (
    checkpoint_meta,
    hidden_states,
    load,
    logits_for,
    reward_model_dir,
    trainable_policy,
)
from webagent.rollout import answerable


@dataclass
class Args:
    """PPO on a question set, starting from a behaviour-cloned policy, against a reward model."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Training questions (any layout `eval` reads); answers, when present, only feed the EM log."""
    policy: str = "bc-gemma3-270m"
    """The BC policy checkpoint (LoRA): the starting point and the frozen KL reference."""
    rm: str = "runs/rm/model"
    """Reward model: a directory (`webagent train rm`) or a shipped name (rm-gemma3-270m)."""
    out: str = "runs/ppo"
    """Run directory: the trained policy, OUT/last (resume state), log.jsonl and log.png."""
    env: EnvArgs = field(default_factory=EnvArgs)
    """Page source and budgets of the training episodes."""
    iterations: int = 20
    """Rollout-then-update iterations in all (a rerun with more extends a finished run)."""
    episodes_per_iteration: int = 16
    """Episodes sampled per iteration per process."""
    batch: int = 8
    """Episodes decoded together during rollouts."""
    temperature: float = 1.0
    """Sampling temperature of rollouts; the log-probabilities trained are those at it."""
    learning_rate: float = 1e-5
    """Adam step size for the LoRA adapter and the value head."""
    adam_eps: float = 1e-5
    """Adam epsilon (CleanRL's 1e-5 rather than PyTorch's 1e-8)."""
    update_epochs: int = 2
    """Passes over an iteration's steps in the update."""
    minibatch_steps: int = 8
    """Steps (prompt + generated tokens) per minibatch."""
    gamma: float = 1.0
    """Discount per generated token (1: an episode's score reaches its first token undiminished)."""
    gae_lambda: float = 0.95
    """GAE's lambda: 1 is the Monte-Carlo return, 0 the one-step TD error."""
    clip_coef: float = 0.2
    """Clip range of the probability ratio in the surrogate objective."""
    vf_clip: float = 0.2
    """Clip range of the value change in the value loss."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 1.0
    """Gradient norm clip per minibatch."""
    kl_coef: float = 0.02
    """Per-token KL penalty to the BC policy."""
    adaptive_kl: bool = False
    """Adapt kl_coef towards target_kl (Ziegler et al. 2019's proportional controller)."""
    target_kl: float = 6.0
    """Target KL per episode (nats) for --adaptive-kl."""
    kl_horizon: int = 10_000
    """Episodes over which --adaptive-kl moves kl_coef by its (clipped) relative error."""
    no_answer_reward: float = -1.0
    """Score (after normalisation) of an episode that gave no answer."""
    budget_penalty: float = 0.0
    """Added to the score of an episode that exhausted its action budget."""
    normalize_reward: bool = True
    """Divide reward-model scores by a running std after subtracting a running mean."""
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
    """Tokens the policy may write per step (a command or the answer)."""
    int8: bool = True
    """Roll out with an int8 copy of the current weights (webagent.int8, made afresh each
    iteration: ~3x faster episodes); the log-probs, values and update stay fp32. CPU only: on
    a CUDA device the rollouts are fp32 (said at the start, kept in the saved policy's
    webagent.json as `rollouts`). --no-int8 samples with the fp32 weights being trained."""
    seed: int = 0
    """Seeds the question picks, budgets, episode sampling and minibatch order."""
    debug: bool = False
    """Show tracebacks."""


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
        stats = {
            "pg_loss": float(pg_loss),
            "value_loss": float(v_loss),
            "entropy": float(ent),
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clipfrac": float(((ratio - 1).abs() > args.clip_coef).float().mean()),
        }
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


def spread(segments: list[Segment], **flat: torch.Tensor) -> None:
    """Cut per-token tensors, flat over `segments`' generated tokens in order, back into the
    segments' fields of the same names."""
    sizes = [len(s.action_ids) for s in segments]
    for name, values in flat.items():
        for s, part in zip(segments, torch.split(values, sizes), strict=True):
            setattr(s, name, part)


def whiten_advantages(segments: list[Segment]) -> None:
    """Advantages to zero mean and unit std over the whole batch (std 1 for a single token)."""
    if not segments:
        return
    flat = torch.cat([s.advantages for s in segments])
    std = flat.std().clamp(min=1e-8) if len(flat) > 1 else torch.tensor(1.0)
    spread(segments, advantages=(flat - flat.mean()) / std)


def targets_of(segments: list[Segment]) -> dict[str, torch.Tensor]:
    """What `ppo_loss` compares a minibatch's new log-probs and values against."""
    return {
        "old_logp": torch.cat([s.old_logprobs for s in segments]),
        "advantages": torch.cat([s.advantages for s in segments]),
        "old_values": torch.cat([s.values for s in segments]),
        "returns": torch.cat([s.returns for s in segments]),
    }


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
        spread(part, old_logprobs=logp, values=values, ref_logprobs=ref_logp)


# --------------------------------------------------------------------------------------------
# Episodes: three sources, one seed scheme
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSeeds:
    """The seeds of one process's episodes in one iteration: the one home of PPO's seed
    arithmetic, so that no two episodes of a run (on any process) share a seed while the run
    samples fewer than 10,000 episodes (re-answers start at that offset).

    Process `rank` of `world` owns slot `iteration * world + rank` of the run. Its n-th episode
    (whole, or on a recorded browse, whose place in the cycle of browses it also is) samples
    with `episode(n)`, its n-th re-answer of its own browses with `reanswer(n)`; its Python RNG
    (question picks, budgets, which browses to re-answer, minibatch order) is seeded per slot."""

    base: int
    rng_seed: int

    @classmethod
    def of(cls, args: Args, iteration: int, rank: int, world: int) -> EpisodeSeeds:
        slot = iteration * world + rank
        return cls(base=slot * args.episodes_per_iteration, rng_seed=args.seed * 1_000_003 + slot)

    def episode(self, n: int) -> int:
        return self.base + n

    def reanswer(self, n: int) -> int:
        return self.base + 10_000 + n

    def rng(self) -> random.Random:
        return random.Random(self.rng_seed)


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


def answer_only(
    policy, records: list[EpisodeRecord], seeds: list[int], args: Args
) -> list[EpisodeRecord]:
    """WebGPT's answer-only episodes: each record's question and quotes, a newly sampled answer."""
    from webagent.policy import Sampling
    from webagent.rollout import RunConfig, reanswer

    config = RunConfig(
        batch_size=args.batch,
        sampling=Sampling(temperature=args.temperature),
        answer_max_new_tokens=args.max_new_tokens,
        admissible_only=False,
    )
    return reanswer(policy, records, seeds, config)


def browses_of(path: str, questions) -> list[tuple[int, EpisodeRecord]]:
    """(question index, record) for every recorded browse of these questions."""
    from webagent.rollout import recorded_browses

    index = {q.id: i for i, q in enumerate(questions)}
    out = [
        (index[r.meta["question_id"]], r)
        for r in recorded_browses(path)
        if r.meta.get("question_id") in index
    ]
    if not out:
        raise ValueError(f"{path}: no episode with quotes and an answer step for these questions")
    return out


Episodes = list[tuple[int, EpisodeRecord]]
"""(question index, record) pairs: an iteration's episodes on one process, in seed order."""


def whole_episodes(run: Trainer, seeds: EpisodeSeeds, rng: random.Random) -> Episodes:
    """Source 1: browse-then-answer episodes on questions picked at random."""
    from webagent.rollout import Task, run_episodes

    questions = run.questions
    picks = [rng.randrange(len(questions)) for _ in range(run.args.episodes_per_iteration)]
    tasks = [
        Task(questions[j].question, {"question_id": questions[j].id}, seed=seeds.episode(n))
        for n, j in enumerate(picks)
    ]
    records = run_episodes(run.acting, tasks, env_factory(run.args, rng), run.run_config)
    return [(picks[i], r) for i, r in sorted(records, key=lambda x: x[0])]


def recorded_browse_episodes(run: Trainer, seeds: EpisodeSeeds) -> Episodes:
    """Source 2 (--browses): answer-only episodes on recorded browses, in a fixed cycle."""
    order = run.browse_order
    n = run.args.episodes_per_iteration
    chosen = [order[seeds.episode(k) % len(order)] for k in range(n)]
    answers = answer_only(
        run.acting, [r for _, r in chosen], [seeds.episode(k) for k in range(n)], run.args
    )
    return [(q, r) for (q, _), r in zip(chosen, answers, strict=True)]


def reanswered(
    run: Trainer, episodes: Episodes, seeds: EpisodeSeeds, rng: random.Random
) -> Episodes:
    """Source 3 (--answer-only-fraction): answerable browses of this iteration answered again."""
    fraction = run.args.answer_only_fraction
    again = [(q, r) for q, r in episodes if answerable(r) and rng.random() < fraction]
    seeds_again = [seeds.reanswer(n) for n in range(len(again))]
    answers = answer_only(run.acting, [r for _, r in again], seeds_again, run.args)
    return [(q, r) for (q, _), r in zip(again, answers, strict=True)]


# --------------------------------------------------------------------------------------------
# The steps of an iteration
# --------------------------------------------------------------------------------------------


@dataclass
class Trainer:
    """What `setup` builds and the steps of the loop share: models, optimizer, data, and the
    running state a checkpoint saves (log, kl_coef, reward statistics)."""

    args: Args
    accelerator: Any
    questions: list
    browse_order: Episodes | None
    """Recorded browses (--browses), shuffled once: the cycle source 2 walks."""
    net: PolicyAndValue
    wrapped: Any
    """`net` as accelerate prepared it (DDP over processes)."""
    reference: Any
    optimizer: Any
    params: list
    scorer: Any
    acting: Any
    """The policy that samples (an HFPolicy over the same LM as `net`, or with int8 rollouts
    over this iteration's int8 copy of it: `rollout_policy`)."""
    int8: bool
    """Whether rollouts really sample with int8 weights (`rollout_int8`)."""
    loaded: Any
    """The LM being trained and its tokenizer (`webagent.models.LoadedModel`)."""
    run_config: Any
    pad_id: int
    parent_meta: dict
    """webagent.json of the BC policy PPO starts from."""
    fingerprint: dict
    reward_stats: RunningMeanStd
    kl_coef: float
    start: int = 0
    log: list[dict] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def out(self) -> Path:
        return Path(self.args.out)


@dataclass
class Rollout:
    """One iteration's data on one process, filled in by the steps in turn."""

    episodes: Episodes
    raw: list[float] = field(default_factory=list)
    """Reward-model scores."""
    scores: list[float] = field(default_factory=list)
    """The scores trained on (normalised; no-answer and budget rules applied)."""
    segments: list[Segment] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    """KL to the reference per episode (nats, summed over its generated tokens)."""


def setup(args: Args) -> Trainer:
    """Questions, models (policy + value head, frozen reference, reward model), optimizer, and
    OUT/last's state when the run is resumed. Bad input fails before any model loads."""
    from accelerate import Accelerator

    from reward.lm import ensure_pad_token
    from reward.model import RewardScorer
    from webagent.config import policy_of
    from webagent.datasets import load_questions
    from webagent.policy import Sampling
    from webagent.rollout import RunConfig

    args.env.check()  # the browser flags (--max-actions, --search, ...) before anything loads
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(args.seed)
    questions = load_questions(args.dataset, require_answers=False)
    if not questions:
        raise ValueError(f"{args.dataset} holds no questions")
    browses = browses_of(args.browses, questions) if args.browses else None  # before any model
    rm = reward_model_dir(args.rm)  # a shipped name or a directory, checked before any model
    loaded = trainable_policy(args.policy)
    reference = load(args.policy).model.eval()
    reference.requires_grad_(False)
    # eval: no dropout, so the log-probs recomputed for the update are those that sampled
    net = PolicyAndValue(loaded.model, args.temperature).eval()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=args.adam_eps)
    scorer = RewardScorer(rm)
    # one shuffle, then a cycle: a slice no larger than one iteration's episodes replays the
    # same browses every iteration, so its mean reward tracks the policy alone
    browse_order = (
        None if browses is None else random.Random(args.seed).sample(browses, len(browses))
    )
    fingerprint = {k: v for k, v in asdict(args).items() if k not in ("iterations", "out", "debug")}
    fingerprint = json.loads(json.dumps({**fingerprint, "world": accelerator.num_processes}))
    run = Trainer(
        args=args,
        accelerator=accelerator,
        questions=questions,
        browse_order=browse_order,
        net=net,
        wrapped=net,
        reference=reference,
        optimizer=optimizer,
        params=params,
        scorer=scorer,
        acting=None,
        int8=rollout_int8(args.int8, accelerator.device),
        loaded=loaded,
        run_config=None,
        pad_id=ensure_pad_token(loaded.tokenizer),
        parent_meta=checkpoint_meta(loaded.source_path),
        fingerprint=fingerprint,
        reward_stats=RunningMeanStd(),
        kl_coef=args.kl_coef,
    )
    if args.int8 and not run.int8:
        accelerator.print(
            f"--int8 rollouts run on a CPU only (torch._int_mm on {accelerator.device.type} "
            "needs more than 16 rows; decoding has one per episode): rolling out in fp32"
        )
    last = run.out / "last"
    if (state := load_resume(last, fingerprint, flags=flag_names(args))) is not None:
        restore_trainable(net, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        run.start, run.log, run.kl_coef = state["iteration"], state["log"], state["kl_coef"]
        run.reward_stats.__dict__.update(state["reward_stats"])
        torch.set_rng_state(state["rng"])
        accelerator.print(f"resuming from {last} at iteration {run.start}/{args.iterations}")
    run.wrapped, run.optimizer = accelerator.prepare(net, optimizer)
    run.acting = policy_of(loaded, name=f"ppo:{Path(args.policy).name}", cache_prefix=False)
    run.run_config = RunConfig(
        batch_size=args.batch,
        sampling=Sampling(temperature=args.temperature, seed=args.seed),
        admissible_only=False,
        browse_max_new_tokens=args.max_new_tokens,
        answer_max_new_tokens=args.max_new_tokens,
    )
    return run


def rollout_int8(wanted: bool, device: torch.device) -> bool:
    """Whether rollouts sample with an int8 copy: --int8 on a CPU where the int8 kernel runs
    (`webagent.int8.unavailable`). On CUDA `torch._int_mm` refuses products of 16 rows or
    fewer, which decoding a few episodes at once makes."""
    from webagent.int8 import unavailable

    return wanted and torch.device(device).type == "cpu" and unavailable() is None


def rollout_policy(run: Trainer):
    """An HFPolicy over an int8 copy of the weights as they are now (webagent.int8). Its
    samples differ slightly from what the fp32 weights would draw; PPO's ratio and KL use the
    fp32 log-probs of those tokens (`evaluate_segments`), as RL with a fast sampler does."""
    import copy

    from webagent.config import policy_of
    from webagent.int8 import quantize

    with torch.no_grad():
        model = quantize(copy.deepcopy(run.loaded.model))
    name = f"ppo:{Path(run.args.policy).name}+int8"
    return policy_of(replace(run.loaded, model=model), name=name, cache_prefix=False)


def collect_episodes(run: Trainer, seeds: EpisodeSeeds, rng: random.Random) -> Rollout:
    """1. Rollout: this process's episodes from the source the settings choose, plus
    re-answers of its browses with --answer-only-fraction."""
    run.net.eval()
    if run.int8:
        run.acting = None  # last iteration's int8 copy (~0.9 GB) goes before the next is made
        run.acting = rollout_policy(run)
    if run.browse_order is not None:
        episodes = recorded_browse_episodes(run, seeds)
    else:
        episodes = whole_episodes(run, seeds, rng)
    if run.args.answer_only_fraction > 0:
        episodes += reanswered(run, episodes, seeds, rng)
    return Rollout(episodes)


def score_episodes(run: Trainer, batch: Rollout) -> None:
    """2. Scoring: the reward model's score of each answer with its quotes, normalised by
    running statistics; `no_answer_reward` without an answer; `budget_penalty` for a browse
    that ran out of actions."""
    from reward.text import Answer, reward_text

    args = run.args
    texts = [reward_text(r.question, Answer.from_record(r)) for _, r in batch.episodes]
    batch.raw = run.scorer.score_texts(texts)
    scored = list(zip([r for _, r in batch.episodes], batch.raw, strict=True))
    if args.normalize_reward:
        run.reward_stats.update([s for r, s in scored if r.answer])
    for r, s in scored:
        if not r.answer:
            score = args.no_answer_reward
        else:
            score = run.reward_stats.normalize(s) if args.normalize_reward else s
        if r.end == "budget" and not r.meta.get("answer_only"):
            score += args.budget_penalty
        batch.scores.append(score)


def compute_advantages(run: Trainer, batch: Rollout) -> None:
    """3-4. Per-token rewards (KL penalty, plus the score on the last token), values and GAE
    over each episode's generated tokens; advantages whitened over the batch."""
    encode = run.acting.encode
    batch.segments = [
        s for e, (_, r) in enumerate(batch.episodes) for s in segments_of(r, e, encode)
    ]
    evaluate_segments(run.net, run.reference, batch.segments, run.pad_id)
    for e, score in enumerate(batch.scores):
        mine = [s for s in batch.segments if s.episode == e]
        if not mine:
            continue
        old = torch.cat([s.old_logprobs for s in mine])
        ref = torch.cat([s.ref_logprobs for s in mine])
        values = torch.cat([s.values for s in mine])
        batch.kls.append(float((old - ref).sum()))
        rewards = token_rewards(score, old, ref, run.kl_coef)
        adv, ret = gae(rewards, values, run.args.gamma, run.args.gae_lambda)
        spread(mine, advantages=adv, returns=ret)
    whiten_advantages(batch.segments)


def update(run: Trainer, segments: list[Segment], rng: random.Random) -> list[dict]:
    """5. Update: `update_epochs` shuffled passes of minibatches of steps; every process runs
    the same number of minibatches (DDP all-reduces each). Returns each minibatch's stats."""
    args, accelerator = run.args, run.accelerator
    stats: list[dict] = []
    order = list(range(len(segments)))
    n_minibatches = math.ceil(len(segments) / args.minibatch_steps)
    if run.world > 1:
        n_minibatches = int(accelerator.gather(torch.tensor([n_minibatches])).min())
    for _ in range(args.update_epochs):
        rng.shuffle(order)
        for i in range(n_minibatches):
            rows = order[i * args.minibatch_steps : (i + 1) * args.minibatch_steps]
            part = [segments[j] for j in rows]
            new_logp, entropy, new_values = run.wrapped(**collate(part, run.pad_id))
            loss, st = ppo_loss(new_logp, entropy, new_values, targets_of(part), args)
            run.optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(run.params, args.max_grad_norm)
            run.optimizer.step()
            stats.append(st)
    return stats


def adapt_kl(run: Trainer, batch: Rollout) -> float:
    """The iteration's mean KL per episode; with --adaptive-kl, kl_coef moves towards target_kl
    (a proportional controller, its error clipped to +-20%)."""
    mean_kl = sum(batch.kls) / max(1, len(batch.kls))
    if run.args.adaptive_kl:
        error = max(-0.2, min(0.2, mean_kl / run.args.target_kl - 1))
        run.kl_coef *= 1 + error * len(batch.episodes) / run.args.kl_horizon
    return mean_kl


STATS = ("pg_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
"""`ppo_loss` statistics logged as their mean over an iteration's minibatches."""


def log_row(
    run: Trainer, iteration: int, batch: Rollout, mean_kl: float, stats: list[dict], seconds: float
) -> dict:
    """The iteration's line of log.jsonl (float entries averaged over processes)."""
    from webagent.metrics import exact_match

    episodes, n = batch.episodes, max(1, len(batch.episodes))
    questions = run.questions
    ems = [exact_match(r.answer, questions[q].aliases) for q, r in episodes if questions[q].aliases]
    if batch.segments:
        values = torch.cat([s.values for s in batch.segments])
        ev = explained_variance(values, torch.cat([s.returns for s in batch.segments]))
    else:
        ev = float("nan")
    browse_steps = sum(len([s for s in r.steps if s.phase == "browse"]) for _, r in episodes)
    row = {
        "iteration": iteration + 1,
        "reward": sum(batch.raw) / max(1, len(batch.raw)),
        "score": sum(batch.scores) / max(1, len(batch.scores)),
        "kl": mean_kl,
        "kl_coef": run.kl_coef,
        "episode_length": browse_steps / n,
        "answered": len([r for _, r in episodes if r.answer]) / n,
        "em": sum(ems) / len(ems) if ems else None,
        "explained_variance": ev,
        "seconds": seconds,
        **{k: sum(s[k] for s in stats) / max(1, len(stats)) for k in STATS},
    }
    if run.world > 1:
        reduce = run.accelerator.reduce
        row = {
            k: float(reduce(torch.tensor(v), "mean")) if isinstance(v, float) else v
            for k, v in row.items()
        }
    return row


def save_checkpoint(run: Trainer) -> None:
    """OUT/last (atomic: everything a resumed run needs) and log.jsonl, after every iteration."""
    if run.accelerator.is_main_process:
        net = run.accelerator.unwrap_model(run.wrapped)
        state = {
            "trainable": trainable_state(net),
            "optimizer": run.optimizer.state_dict(),
            "iteration": len(run.log),
            "log": run.log,
            "kl_coef": run.kl_coef,
            "reward_stats": dict(run.reward_stats.__dict__),
            "fingerprint": run.fingerprint,
            "rng": torch.get_rng_state(),
        }
        write_dir(run.out / "last", lambda tmp: torch.save(state, tmp / "state.pt"))
        with open(run.out / "log.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in run.log)
    run.accelerator.wait_for_everyone()


def save_final(run: Trainer) -> None:
    """The trained policy in OUT, a policy checkpoint like BC's plus the value head, and the
    log's plot."""
    from safetensors.torch import save_file

    if run.accelerator.is_main_process:
        net, args, parent = run.accelerator.unwrap_model(run.wrapped), run.args, run.parent_meta
        meta = {
            "base_model": parent.get("base_model"),
            "kind": "ppo",
            "adapter": "lora",
            "prompt": parent.get("prompt", {"examples": 0}),
            "answers": parent.get("answers", "extractive"),
            "parent_policy": args.policy,
            "reward_model": args.rm,
            "iterations": len(run.log),
            "rollouts": "int8" if run.int8 else "fp32",
            "log": run.log,
            "args": {k: v for k, v in asdict(args).items() if k != "debug"},
        }
        head = {k: v.contiguous() for k, v in net.value_head.state_dict().items()}
        save_policy(
            net.model,
            run.acting.tokenizer,
            run.out,
            meta,
            extra=lambda tmp: save_file(head, tmp / "value_head.safetensors"),
        )
        plot(run.log, run.out / "log.png")
        run.accelerator.print(
            f"saved PPO policy -> {run.out} (log: {run.out / 'log.jsonl'}, {run.out / 'log.png'})"
        )
    run.accelerator.wait_for_everyone()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def main(args: Args) -> Path:
    """PPO: setup, then per iteration rollout, scoring, advantages, update, log and checkpoint;
    then the trained policy. Returns OUT."""
    from tqdm import tqdm

    run = setup(args)
    bar = tqdm(
        total=args.iterations,
        initial=run.start,
        desc="ppo",
        disable=not run.accelerator.is_main_process,
        dynamic_ncols=True,
    )
    for iteration in range(run.start, args.iterations):
        t0 = time.time()
        seeds = EpisodeSeeds.of(args, iteration, run.rank, run.world)
        rng = seeds.rng()
        batch = collect_episodes(run, seeds, rng)  # 1. rollout
        score_episodes(run, batch)  # 2. scores
        compute_advantages(run, batch)  # 3-4. per-token rewards, GAE
        stats = update(run, batch.segments, rng)  # 5. PPO update
        mean_kl = adapt_kl(run, batch)  # 6. log and checkpoint
        run.log.append(log_row(run, iteration, batch, mean_kl, stats, time.time() - t0))
        bar.update(1)
        row = run.log[-1]
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.2f}", em=row["em"])
        save_checkpoint(run)
    bar.close()
    save_final(run)
    return run.out


def plot(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in log]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = [
        ("reward", "mean reward-model score"),
        ("kl", "KL to BC (nats / episode)"),
        ("em", "EM on the sampled questions"),
    ]
    for ax, (key, title) in zip(axes, panels, strict=True):
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
