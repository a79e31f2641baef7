"""DAgger's data: the policy browses, the gold-guided expert labels every state it reaches.

    webagent dagger ../shared/data/triviaqa/train.jsonl --out runs/dagger/rows.jsonl
    webagent train bc runs/dagger/rows.jsonl --init bc-gemma3-270m --out runs/dagger/policy

Behaviour cloning on the expert's own episodes (`webagent.demos`) teaches the states the expert
visits; a policy that strays (opens the wrong result, quotes an off-target sentence) is then in
states it never saw demonstrated, and falls back on a ritual (issue 20). DAgger (Ross et al.,
2011) runs the policy and asks the expert, at every state the *policy* visits, what it would do
next; training on those labels teaches recovery from the policy's own mistakes.

`expert_action` is the expert as a function of the browser's current state: it judges only
from what the page shows (`demos.grounded_order`, the lines in view) plus the answer aliases,
used the way the demonstrator uses them, and always names a command the environment lists as
admissible. Each row is TRL's {"prompt","completion"}: the prompt exactly as the policy saw
it, the completion the expert's command in the demonstrations' format, so `train bc` reads the
file as it is. With `--beta` the expert takes the step instead of the policy that often.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tyro

from env import commands as cmds
from env.browser import BrowserEnv
from env.observation import strip_markup
from env.queries import query_variants
from env.record import append_jsonl, read_jsonl
from webagent.compare import episodes_path  # the policy's own episodes, beside the rows
from webagent.config import EnvArgs, PolicyArgs, at_least
from webagent.datasets import Question
from webagent.demos import (
    EXPERT_MAX_RESULTS,
    alias_quotes,
    answer_line_word,
    expert_answer,
    grounded_order,
    on_topic_quote,
    written_answer,
)
from webagent.metrics import holds_alias

if TYPE_CHECKING:  # the CLI imports this module: torch loads only when episodes are played
    from webagent.rollout import RunConfig

# ----------------------------------------------------------------------------- the expert


def searched_queries(env: BrowserEnv) -> list[str]:
    """The queries this episode has searched, in order (from the environment's record)."""
    return [
        s.request.removeprefix("search:")
        for s in env.record.steps
        if s.request and s.request.startswith("search:")
    ]


def opened_urls(env: BrowserEnv) -> set[str]:
    """The pages this episode has opened from a results page (clicked links)."""
    return {
        s.request for s in env.record.steps if s.request and not s.request.startswith("search:")
    }


def page_kind(env: BrowserEnv) -> str:
    """Where the policy is: start (no page yet), results, article, or answer (the answer phase)."""
    if env.phase != "browse":
        return "answer"
    if env.page is None:
        return "start"
    return "results" if env.page.kind == "search" else "article"


def _unopened(results, question: str, aliases: Sequence[str], opened: Collection[str], cap: int):
    """The results worth opening (`grounded_order`, its first `cap`) not opened yet, best first."""
    return [
        i
        for i in grounded_order(results, question, aliases)[:cap]
        if results.links[i].url not in opened
    ]


def _link_line(page, link_id: int) -> int | None:
    marker = f"【{link_id}†"
    return next((j for j, line in enumerate(page.lines) if marker in line), None)


def _toward(env: BrowserEnv, line: int) -> str:
    """The scroll that brings a line toward the view."""
    return "Scrolled down 1" if line >= env.cursor else "Scrolled up 1"


def expert_action(
    env: BrowserEnv,
    question: str,
    aliases: Sequence[str],
    tried_queries: Collection[str] = (),
    *,
    max_results: int = EXPERT_MAX_RESULTS,
) -> str:
    """The gold-guided expert's next browse command from `env`'s current state, one that
    `env.admissible()` lists (or a `Find in page:` it allows as a prefix). In order:

    - a quote holds an answer alias: `End: Answer`;
    - an article: quote a sentence in view holding an alias; else, when the page holds one out of
      view, `Find in page:` a question word that lands on it (`demos.answer_line_word`) or scroll
      toward it; else leave: Back to the results page when it has results still worth opening,
      else search again;
    - a results page: open the first result worth opening (`grounded_order`, at most
      `max_results` of them, not opened before), scrolling it into view; none: search again;
    - no page yet: search.

    Searching again uses the first of `query_variants` not in `tried_queries`. The aid lists no
    Search on a results page (re-searching from one loops), so from there the expert goes Back,
    or with nothing to go back to opens the top unopened result, to search from that page.
    Near the budget, when the aid lists only quotes, it quotes the most on-topic sentence."""
    adm = env.admissible()
    listed = set(adm.commands)
    for wish in _wishes(env, adm.commands, question, aliases, tried_queries, max_results):
        if wish in listed or any(wish.startswith(p + " ") for p in adm.prefixes):
            return wish
    fallback = on_topic_quote(adm.commands, question) or (adm.commands[0] if adm.commands else None)
    if fallback is None:
        raise ValueError(
            "nothing is admissible in this state (is the episode in its browse phase?)"
        )
    return fallback


def _wishes(
    env: BrowserEnv,
    listed: Sequence[str],
    question: str,
    aliases: Sequence[str],
    tried: Collection[str],
    max_results: int,
):
    """The expert's commands for this state, preferred first (`expert_action` takes the first
    the aid lists)."""
    if any(holds_alias(q.extract, aliases) for q in env.quotes):
        yield "End: Answer"
        return
    variants = query_variants(question)
    fresh = [v for v in variants if v not in tried]
    search = f"Search {(fresh or variants)[0]}"
    page = env.page
    opened = opened_urls(env)
    if page is None:
        yield search
        return
    if page.kind == "search":
        todo = _unopened(page, question, aliases, opened, max_results)
        for i in todo[:1]:
            line = _link_line(page, i)
            yield f"Clicked on link {i}"
            if line is not None:
                yield _toward(env, line)
        # nothing (more) worth opening: search again, which the aid lists only off this page
        yield "Back"
        if fresh:
            yield from (
                f"Clicked on link {i}"
                for i, link in enumerate(page.links)
                if link.url not in opened
            )
        yield search
        yield "End: Answer"  # every way on is spent: answer from what is quoted
        return
    # an article
    yield from alias_quotes(listed, aliases)[:1]
    window = env.config.limits.window_lines
    lines = [strip_markup(line) for line in page.lines]
    hits = [i for i, line in enumerate(lines) if holds_alias(line, aliases)]
    below = [i for i in hits if i >= env.cursor + window] or (
        [len(lines)] if not hits and holds_alias("\n".join(lines), aliases) else []
    )
    above = [i for i in hits if i < env.cursor]
    if below:
        word = answer_line_word(page, env.cursor, question, aliases)
        if word is not None:
            yield f"Find in page: {word}"
        yield "Scrolled down 1"
    elif above:
        yield "Scrolled up 1"
    behind = env.history[-1][0] if env.history else None
    more = (
        behind is not None
        and behind.kind == "search"
        and bool(_unopened(behind, question, aliases, opened, max_results))
    )
    if more or not fresh:
        yield "Back"
    yield search
    yield "Back"
    yield "End: Answer"


# ----------------------------------------------------------------------------- collection


def agree(policy_action: str, expert: str) -> bool:
    """The policy wrote the expert's command (commands compared as the grammar reads them)."""
    try:
        return str(cmds.parse(policy_action)) == str(cmds.parse(expert))
    except cmds.CommandError:
        return policy_action.strip() == expert.strip()


def _looks_like_dev(path: str) -> bool:
    return re.search(r"(^|[^a-z])dev([^a-z]|$)", Path(path).name.lower()) is not None


@dataclass
class DaggerArgs:
    """DAgger rows: the policy browses train questions; the gold-guided expert labels each
    state it visits with its own next command (TRL prompt/completion lines for `train bc`)."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Train questions with answers (any layout `eval` reads). NEVER dev.jsonl: a dev-looking
    file name is refused (the rows are training data)."""
    out: str = "runs/dagger/rows.jsonl"
    """Rows are appended here, one question's when its episode ends; a rerun skips questions
    already there. The policy's episodes go beside it (*.episodes.jsonl)."""
    policy: PolicyArgs = field(default_factory=PolicyArgs)
    env: EnvArgs = field(default_factory=EnvArgs)
    limit: int | None = None
    """Only the first N questions."""
    beta: float = 0.0
    """Share of steps the expert takes instead of the policy (each step drawn, seeded by
    --seed, the question and the step): 0 is pure DAgger on the policy's own states."""
    batch: int = 8
    """Episodes decoded together."""
    max_results: int = EXPERT_MAX_RESULTS
    """Results per search the expert would open (as `demos --max-results`)."""
    recall: bool = True
    """Label answer states whose quotes hold no alias with the canonical answer, uncited (as
    `demos --recall` does), so the answer phase learns to answer from memory without a false
    citation on the states the policy reaches; --no-recall leaves those states unlabelled."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        at_least(1, limit=self.limit, batch=self.batch, max_results=self.max_results)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"--beta must be between 0 and 1, got {self.beta}")
        if _looks_like_dev(self.dataset):
            raise ValueError(
                f"{self.dataset} looks like an evaluation set: DAgger rows are training data, "
                "collect them on train questions only"
            )
        if Path(self.out).resolve() == Path(self.dataset).resolve():
            raise ValueError("--out must not be the dataset")
        from env.record import check_writable

        check_writable(self.out)
        check_writable(episodes_path(self.out))


def done_ids(out: str | Path) -> set[str]:
    """Question ids with rows already in OUT (for resuming)."""
    p = Path(out)
    return {r.get("question_id") for r in read_jsonl(p)} if p.exists() else set()


def collect(
    policy,
    questions: Sequence[Question],
    make_env: Callable[[], BrowserEnv],
    out: str | Path,
    config: RunConfig | None = None,
    *,
    beta: float = 0.0,
    seed: int = 0,
    max_results: int = EXPERT_MAX_RESULTS,
    first_index: Sequence[int] | None = None,
    recall: bool = True,
) -> int:
    """Play one policy episode per question, labelling every state with the expert's command;
    a question's rows (and its episode) are appended when its episode ends, the rows in one
    write, last (a kill between the two writes leaves that episode twice in the episodes file,
    never a question's rows twice or in part). Returns rows written. `first_index[k]` is
    question k's position in the whole job (its episode's seed), so a resumed run plays what an
    uninterrupted one would have. With `recall`, an answer state whose quotes hold no alias is
    labelled with the canonical answer, uncited (`demos --recall`'s answer)."""
    from webagent.rollout import RunConfig, Task, run_episodes

    config = config or RunConfig()
    fmt = getattr(policy, "format", None)
    lead = fmt.lead if fmt is not None else (lambda phase: "")
    tasks = [
        Task(
            q.question,
            {"question_id": q.id, "dagger": {"beta": beta}},
            seed=None if first_index is None else first_index[k],
        )
        for k, q in enumerate(questions)
    ]
    pending: dict[int, list[dict]] = {k: [] for k in range(len(questions))}

    def steer(k: int, env: BrowserEnv, prompt: str, action: str) -> str:
        q = questions[k]
        step = len(env.record.steps)
        recalled = False
        if env.phase == "browse":
            label = expert_action(
                env, q.question, q.aliases, searched_queries(env), max_results=max_results
            )
        else:
            label = expert_answer(env.quotes, q.aliases)
            if label is None and recall:  # the quotes miss: answer from memory, citing nothing
                label, recalled = written_answer(q), True
            if label is None:
                return action
        take_expert = beta > 0 and random.Random(f"{seed}/{q.id}/{step}").random() < beta
        pending[k].append(
            {
                "prompt": prompt,
                "completion": lead(env.phase) + label.strip() + "\n",
                "phase": env.phase,
                "episode_id": env.record.id,
                "question_id": q.id,
                "meta": {
                    "question_id": q.id,
                    "step": step,
                    "page": page_kind(env),
                    "policy_action": action,
                    "expert_action": label,
                    "agree": agree(action, label),
                    "took": "expert" if take_expert else "policy",
                    "recall": recalled,
                },
            }
        )
        return label if take_expert else action

    written = 0
    for k, record in run_episodes(policy, tasks, make_env, config, steer=steer):
        append_jsonl(episodes_path(out), [record])
        rows = pending.pop(k)
        append_jsonl(out, rows)  # last: a question counts as done once its rows are in
        written += len(rows)
    return written


STATES = ("start", "results", "article", "answer", "recall")
"""Where a row was labelled, in the summary's order: `page_kind`'s four, and "recall" for an
answer state whose quotes miss (labelled with the canonical answer)."""


def summary(out: str | Path) -> list[str]:
    """Rows in OUT and how often the policy wrote the expert's command, by where it was."""
    rows = list(read_jsonl(out)) if Path(out).exists() else []
    by: dict[str, Counter] = {}
    for r in rows:
        meta = r.get("meta", {})
        kind = "recall" if meta.get("recall") else meta.get("page", "?")
        c = by.setdefault(kind, Counter())
        c["rows"] += 1
        c["agree"] += bool(meta.get("agree"))
    questions = len({r.get("question_id") for r in rows})
    lines = [f"{len(rows)} rows from {questions} questions -> {out}"]
    total = sum(c["agree"] for c in by.values())
    lines.append(f"  {'state':<8} {'rows':>6} {'policy = expert':>16}")
    for kind in (*STATES, *sorted(set(by) - set(STATES))):
        if kind in by:
            c = by[kind]
            lines.append(f"  {kind:<8} {c['rows']:>6} {c['agree'] / c['rows']:>16.3f}")
    lines.append(f"  {'all':<8} {len(rows):>6} {total / max(1, len(rows)):>16.3f}")
    return lines


def run(args: DaggerArgs) -> list[str]:
    """`webagent dagger`: rows for DATASET's questions with aliases not yet in OUT; the summary."""
    from webagent.config import load_policy, run_config
    from webagent.datasets import load_questions

    questions = [q for q in load_questions(args.dataset)[: args.limit] if q.aliases]
    done = done_ids(args.out)
    todo = [(i, q) for i, q in enumerate(questions) if q.id not in done]
    if todo:
        make_env = args.env.env_factory()
        policy = load_policy(args.policy)
        print(
            f"{len(todo)} questions to play ({len(done)} done before)", file=sys.stderr, flush=True
        )
        collect(
            policy,
            [q for _, q in todo],
            make_env,
            args.out,
            run_config(args.policy, batch_size=args.batch),
            beta=args.beta,
            seed=args.policy.seed,
            max_results=args.max_results,
            first_index=[i for i, _ in todo],
            recall=args.recall,
        )
    return summary(args.out)
