"""The episode runner: plays many episodes at once through the browser, one batch per step.

Every consumer (ask, eval, demonstrations, best-of-n, PPO) calls `run_episodes`. Episodes share
a batch slot-wise: when one finishes, the next question takes its slot, so the batch stays
full. Each episode gets its own seed (`seed + index`) and each of its steps a generator seeded
from that, so an episode is the same whether it ran alone or in a batch of 8.
The policy's fields (prompt, completion, token ids, log-probs, seconds) are written onto the
environment's own steps, so the record is complete when the episode ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from env.admissible import Admissible
from env.browser import BrowserEnv
from env.observation import render_answer
from env.questions import QuestionError, check_question
from env.record import EpisodeRecord, RecordError, numbered_lines
from webagent.answers import confident
from webagent.policy import Generation, HFPolicy, Sampling
from webagent.prompts import NO_QUOTES_ANSWER, completion_to_action

if TYPE_CHECKING:
    from webagent.reader import Reader


@dataclass(frozen=True)
class RunConfig:
    """How episodes are played."""

    batch_size: int = 8
    """Episodes decoded together (CPU throughput comes from here)."""
    sampling: Sampling = field(default_factory=Sampling)
    browse_max_new_tokens: int = 64
    """A command is cut at the first newline or this many tokens."""
    answer_max_new_tokens: int = 96
    admissible_only: bool = True
    """Decode only what the environment deems admissible (`BrowserEnv.admissible`): listed
    commands, free text after Search / Find in page:, extractive answers citing a quote. Keeps
    a few-shot base model on track; a trained policy can turn it off."""
    reader: Reader | None = None
    """Under the aid, lists only the reader's best quotes on an article (`webagent.reader`);
    None: the environment's admissible set as it is."""

    cite_min_logprob: float | None = None
    """The citation gate: an answer keeps its `[n]` only when the policy's log-probability of
    what it wrote is at least this (`confident`); None: no gate."""

    def aid(self, env: BrowserEnv) -> Admissible:
        """What the policy may decode in `env` now: the admissible set, narrowed by the reader."""
        return env.admissible() if self.reader is None else self.reader.aid(env)


@dataclass
class Task:
    """One episode to play: a question plus anything the record should carry (gold answers…)."""

    question: str
    meta: dict = field(default_factory=dict)
    seed: int | None = None
    """Sampling seed of this episode; default `sampling.seed + task index`. Callers that resume
    give each task its position in the whole job, so a resumed run samples what an
    uninterrupted one would have."""
    temperature: float | None = None
    """Sampling temperature of this episode (0 greedy); None: the run's `sampling`. Best-of-n
    plays its greedy candidate beside its sampled ones in one batch; the record's meta then
    says which it was (`meta["temperature"]`)."""

    def sampling(self, run: Sampling) -> Sampling:
        """This episode's sampling: the run's, at this task's temperature if it has one."""
        return run if self.temperature is None else replace(run, temperature=self.temperature)


def best_of_tasks(
    question: str, n: int, temperature: float, *, meta: dict | None = None, seed: int = 0
) -> list[Task]:
    """Best-of-n's n episodes of one question: candidate 0 greedy (so best-of-1 is the greedy
    policy, and best-of-n can only add to it), candidates 1..n-1 sampled at `temperature`.
    Candidate k samples with seed `seed + k` and carries `meta` plus `candidate: k`."""
    return [
        Task(
            question,
            {**(meta or {}), "candidate": k},
            seed=seed + k,
            temperature=0.0 if k == 0 else temperature,
        )
        for k in range(n)
    ]


@dataclass
class _Slot:
    index: int
    task: Task
    env: BrowserEnv
    observation: str
    seed: int
    steps: int = 0
    gate: dict | None = None


StepCallback = Callable[[int, EpisodeRecord, str], None]
"""Called after every step with (episode index, record so far, phase of that step)."""

Steer = Callable[[int, BrowserEnv, str, str], str]
"""Called before every step the policy decides, with (episode index, the environment before the
step, the policy's prompt, the policy's action); returns the action taken. DAgger
(`webagent.dagger`) labels the state there and may hand the step to its expert."""


def run_episodes(
    policy: HFPolicy,
    tasks: Sequence[Task | str],
    make_env: Callable[[], BrowserEnv],
    config: RunConfig = RunConfig(),
    *,
    on_step: StepCallback | None = None,
    steer: Steer | None = None,
) -> Iterator[tuple[int, EpisodeRecord]]:
    """Yield (task index, finished record) as episodes end (not necessarily in task order).
    With `steer`, the action taken at each step the policy decides is what it returns (the
    step's `completion` stays the policy's own)."""
    pending = [(i, t if isinstance(t, Task) else Task(t)) for i, t in enumerate(tasks)]
    for i, task in pending:  # every question, before the first episode starts
        try:
            check_question(task.question)
        except QuestionError as exc:
            raise QuestionError(f"task {i}: {exc}") from None
        if task.temperature is not None and not task.temperature >= 0:
            raise ValueError(f"task {i}: temperature must be 0 (greedy) or more")
    pending.reverse()
    slots: list[_Slot] = []

    def fill() -> None:
        while pending and len(slots) < config.batch_size:
            i, task = pending.pop()
            env = make_env()
            seed = config.sampling.seed + (i if task.seed is None else task.seed)
            obs, _ = env.reset(task.question, seed=seed, options={"meta": task.meta})
            slots.append(_Slot(i, task, env, obs, seed))

    fill()
    while slots:
        # episodes whose browsing gathered no quotes answer nothing, without the model
        ready: list[_Slot] = []
        for slot in list(slots):
            if slot.env.phase == "answer" and not slot.env.quotes:
                finished = _advance(slot, NO_QUOTES_ANSWER, None, 0.0, on_step)
                if finished is not None:
                    slots.remove(slot)
                    yield slot.index, _stamp(finished, policy, slot, config)
            else:
                ready.append(slot)
        if ready:
            prompts = [policy.prompt(s.env.phase, s.observation) for s in ready]
            caps = [
                config.browse_max_new_tokens
                if s.env.phase == "browse"
                else config.answer_max_new_tokens
                for s in ready
            ]
            seeds = [s.seed * 1_000_003 + s.steps for s in ready]
            t0 = time.perf_counter()
            constrained = [
                led(config.aid(s.env), policy, s.env.phase)
                if config.admissible_only and not (policy.free_answers and s.env.phase == "answer")
                else None
                for s in ready
            ]
            generations = policy.generate(
                prompts,
                max_new_tokens=caps,
                sampling=[s.task.sampling(config.sampling) for s in ready],
                seeds=seeds,
                constrained=constrained,
            )
            seconds = (time.perf_counter() - t0) / len(ready)
            for slot, prompt, gen in zip(ready, prompts, generations, strict=True):
                action = completion_to_action(gen.text)
                if slot.env.phase == "answer":
                    action, slot.gate = confident(action, gen.logprobs, config.cite_min_logprob)
                if steer is not None:
                    action = steer(slot.index, slot.env, prompt, action)
                finished = _advance(slot, action, (prompt, gen), seconds, on_step)
                if finished is not None:
                    slots.remove(slot)
                    yield slot.index, _stamp(finished, policy, slot, config)
        fill()


def led(admissible: Admissible, policy, phase: str) -> Admissible:
    """The admissible set as the policy writes it after its prompt (a base prompt's answer
    follows `Answer:` after a space: `PromptFormat.lead`)."""
    fmt = getattr(policy, "format", None)
    lead = fmt.lead(phase) if fmt is not None else ""
    if not lead:
        return admissible
    return Admissible(tuple(lead + c for c in admissible.commands), admissible.prefixes)


def _advance(
    slot: _Slot,
    action: str,
    generated: tuple[str, Generation] | None,
    seconds: float,
    on_step: StepCallback | None,
) -> EpisodeRecord | None:
    env = slot.env
    phase = env.phase
    obs, _, terminated, truncated, info = env.step(action)
    step = env.record.steps[-1]
    if generated is not None:
        prompt, gen = generated
        step.prompt = prompt
        step.completion = gen.text
        step.prompt_tokens = gen.prompt_tokens
        step.token_ids = gen.token_ids
        step.logprobs = gen.logprobs
        step.seconds = seconds
    slot.observation = obs
    slot.steps += 1
    if on_step is not None:
        on_step(slot.index, env.record, phase)
    if terminated or truncated:
        return info["record"]
    return None


def _stamp(
    record: EpisodeRecord, policy: HFPolicy, slot: _Slot, config: RunConfig
) -> EpisodeRecord:
    record.model = policy.name
    record.seed = slot.seed
    record.meta.update(getattr(policy, "record_meta", {}))  # a served policy: server, decoding aid
    if config.reader is not None and config.admissible_only:
        record.meta["reader"] = config.reader.name
    if slot.task.temperature is not None:
        record.meta["temperature"] = slot.task.temperature
    if slot.gate is not None:
        record.meta["citation_gate"] = slot.gate
    return record


def grouped(
    finished: Iterable[tuple[int, EpisodeRecord]], k: int
) -> Iterator[tuple[int, list[EpisodeRecord]]]:
    """K samples per question: `run_episodes` over tasks laid out question by question (task
    i is sample i % k of question i // k) -> (question index, its k records in sample order),
    each question as soon as its last sample ends, so a caller can save it before the next."""
    pending: dict[int, dict[int, EpisodeRecord]] = {}
    for i, record in finished:
        question, sample = divmod(i, k)
        pending.setdefault(question, {})[sample] = record
        if len(pending[question]) == k:
            done = pending.pop(question)
            yield question, [done[j] for j in range(k)]


def run_one(
    policy: HFPolicy,
    question: str,
    make_env: Callable[[], BrowserEnv],
    config: RunConfig = RunConfig(),
    *,
    on_step: StepCallback | None = None,
) -> EpisodeRecord:
    """A single episode (the `ask` path)."""
    ((_, record),) = list(run_episodes(policy, [question], make_env, config, on_step=on_step))
    return record


def reanswer(
    policy: HFPolicy,
    records: Sequence[EpisodeRecord],
    seeds: Sequence[int],
    config: RunConfig = RunConfig(),
    temperatures: Sequence[float] | None = None,
) -> list[EpisodeRecord]:
    """Answer-only episodes (WebGPT's): each record's question and quotes with a freshly
    sampled answer, its one step carrying tokens and log-probs like any other. The answer prompt
    is rendered afresh from the quotes (as the BC export does), so browses recorded under an
    older layout answer in the current one. Answers are free text (no decoding aid).

    `temperatures`, one per record, overrides the run's (as `Task.temperature` does; `compare`
    answers as best-of-n draws: one greedy, the rest sampled); the record's meta then says it."""
    if temperatures is not None and len(temperatures) != len(records):
        raise ValueError(f"{len(temperatures)} temperatures for {len(records)} records")
    out = []
    for i in range(0, len(records), config.batch_size):
        part, part_seeds = records[i : i + config.batch_size], seeds[i : i + config.batch_size]
        part_temps = temperatures[i : i + config.batch_size] if temperatures is not None else None
        observations = [render_answer(question=r.question, quotes=r.quotes) for r in part]
        prompts = [policy.prompt("answer", o) for o in observations]
        t0 = time.perf_counter()
        generations = policy.generate(
            prompts,
            max_new_tokens=config.answer_max_new_tokens,
            sampling=config.sampling
            if part_temps is None
            else [replace(config.sampling, temperature=t) for t in part_temps],
            seeds=part_seeds,
        )
        seconds = (time.perf_counter() - t0) / len(part)
        for j, (record, seed, obs, prompt, gen) in enumerate(
            zip(part, part_seeds, observations, prompts, generations, strict=True)
        ):
            clone = EpisodeRecord.from_dict(record.to_dict())
            clone.id, clone.seed = f"{record.id}.answer-{seed}", seed  # its own episode
            last = record.answer_step
            if last is None:
                raise ValueError(f"record {record.id} has no answer step to answer again")
            action, gate = confident(
                completion_to_action(gen.text), gen.logprobs, config.cite_min_logprob
            )
            clone.steps = [
                replace(
                    last,
                    observation=obs,
                    prompt=prompt,
                    action=action,
                    completion=gen.text,
                    token_ids=gen.token_ids,
                    logprobs=gen.logprobs,
                    prompt_tokens=gen.prompt_tokens,
                    seconds=seconds,
                    command=None,
                    error=None,
                )
            ]
            clone.finish_answer(action, record.quotes)  # as the browser's answer step does
            clone.model = policy.name
            clone.meta = {
                **clone.meta,
                **getattr(policy, "record_meta", {}),
                "answer_only": True,
                "browse": record.id,
            }
            clone.meta.pop("citation_gate", None)  # the browse's answer's decision, not this one's
            if gate is not None:
                clone.meta["citation_gate"] = gate
            if part_temps is not None:
                clone.meta["temperature"] = part_temps[j]
            out.append(clone)
    return out


def recorded_browses(path: str | Path) -> Iterator[EpisodeRecord]:
    """Episodes that quoted and reached the answer phase, from an episode-records file (`demos`,
    `compare`'s *.episodes.jsonl) or a `webagent eval` results.jsonl (every best-of candidate
    too), each carrying its `question_id` in meta: what answer-only episodes reuse."""
    for i, obj in numbered_lines(path):
        eval_row = "episode" in obj and "question_id" in obj
        episodes = (
            [obj["episode"], *(c["episode"] for c in obj.get("candidates", []) if "episode" in c)]
            if eval_row
            else [obj]
        )
        try:
            records = [EpisodeRecord.from_dict(e) for e in episodes]
        except RecordError as exc:
            raise RecordError(f"{path}:{i}: {exc}") from exc
        for r in records if eval_row else ():
            r.meta.setdefault("question_id", obj["question_id"])
        yield from filter(answerable, records)


def answerable(record: EpisodeRecord) -> bool:
    """Whether an answer-only episode can reuse this record: it quoted and reached the answer
    phase (whose step `reanswer` replaces)."""
    return bool(record.quotes) and record.answer_step is not None
