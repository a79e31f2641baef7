"""Reward model training on comparisons: Bradley-Terry with soft labels.

    webagent train rm runs/rm/comparisons.jsonl --out runs/rm/minilm --model all-minilm-l6-v2

One file, CleanRL style: `Args` names every setting, `main` is the whole loop.
- **Model**: `reward.model.RewardModel` (body + scalar head) over `reward.text.reward_text`.
- **Loss**: P(answer 0 better) = sigmoid(r0 - r1); binary cross-entropy against the comparison's
  preference, so a tie (0.5) pulls the two rewards together instead of being thrown away.
- **Validation**: whole questions are held out. Accuracy counts non-tied comparisons where the
  higher reward goes to the preferred answer. Next to it, two length-bias baselines human
  raters are known to fall for: "prefer the longer answer" and "prefer more quotes" (a length
  tie counts half), and the correlation between reward and answer length.
- **Checkpoints**: the model is saved after every epoch (OUT/last holds the optimizer too); a
  rerun with the same OUT resumes at the next epoch. The final model and its metrics go to OUT.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated

import torch
import tyro

from env.paths import file_sha256
from reward.checkpoint import load_resume, write_dir
from reward.comparisons import Comparison, read_comparisons
from reward.label import labels_path, merged
from reward.model import META, RewardModel, encode, prepare_tokenizer
from reward.text import reward_text


@dataclass
class Args:
    """Train a reward model on labeled comparisons."""

    comparisons: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="COMPARISONS")]
    """JSON lines of comparisons with a preference (unlabeled and skipped ones are ignored); a
    person's labels beside it (FILE.labels.jsonl from `webagent label`) take precedence."""
    out: str = "runs/rm/model"
    """Output directory: the trained reward model; OUT/last holds the resume state."""
    model: str = "gemma3-270m"
    """Body: a HF model directory (`webagent train rm` also accepts webagent's model names)."""
    lora: bool = False
    """Train LoRA adapters on the body instead of every weight; the reward model is then saved
    as the adapter and head alone (megabytes), on the base model named by --model."""
    lora_r: int = 16
    """LoRA rank with --lora (its alpha is twice the rank)."""
    epochs: int = 2
    """Passes over the training comparisons."""
    batch_size: int = 8
    """Comparisons per optimizer step (2 x this many texts)."""
    learning_rate: float = 3e-5
    """Peak AdamW learning rate (linear warmup, then cosine decay to 0)."""
    warmup_steps: int = 10
    """Optimizer steps of linear warmup to the peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient norm clip per optimizer step."""
    max_length: int = 384
    """Tokens per reward text (the quotes are capped first; the answer is never cut)."""
    val_fraction: float = 0.15
    """Share of questions held out."""
    ties: bool = True
    """Train on tied comparisons (preference 0.5). With gold labels most pairs are two wrong
    answers: `--no-ties` spends the compute on pairs that say which answer is better."""
    per_question: int | None = None
    """Keep at most this many comparisons per question (a seeded choice, in training and
    validation alike): many questions with a few pairs each teach judging unseen questions,
    where a few questions with many pairs teach their answers."""
    seed: int = 0
    """Seeds the held-out questions, the per-question choice, the data order and the head."""
    debug: bool = False
    """Show tracebacks."""


def pair_texts(chunk: list[Comparison]) -> list[str]:
    """Reward texts of every answer 0, then every answer 1 (rewards split at len(chunk))."""
    return [reward_text(c.question, c.answer_0) for c in chunk] + [
        reward_text(c.question, c.answer_1) for c in chunk
    ]


def split_by_question(items: list[Comparison], val_fraction: float, seed: int):
    questions = sorted({c.question for c in items})
    random.Random(seed).shuffle(questions)
    n_val = 0 if len(questions) < 2 else max(1, round(len(questions) * val_fraction))
    held = set(questions[:n_val])
    return [c for c in items if c.question not in held], [c for c in items if c.question in held]


def cap_per_question(items: list[Comparison], cap: int | None, seed: int) -> list[Comparison]:
    """At most `cap` comparisons per question, a seeded choice kept in file order."""
    if cap is None:
        return items
    if cap < 1:
        raise ValueError(f"--per-question must be at least 1, got {cap}")
    by_question: dict[str, list[int]] = {}
    for i, c in enumerate(items):
        by_question.setdefault(c.question, []).append(i)
    rng = random.Random(seed)
    keep = {i for ids in by_question.values() for i in rng.sample(ids, min(cap, len(ids)))}
    return [c for i, c in enumerate(items) if i in keep]


def bt_loss(r0: torch.Tensor, r1: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry cross-entropy with soft labels: -p log s(r0-r1) - (1-p) log s(r1-r0)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(r0 - r1, preference)


def _pick(a: float, b: float) -> float:
    """1 if a > b, 0 if a < b, 0.5 on a tie."""
    return 1.0 if a > b else 0.0 if a < b else 0.5


def agreement(items: list[Comparison], r0: list[float], r1: list[float]) -> dict[str, float]:
    """Accuracy on non-tied comparisons for the model and the two length-bias baselines, and
    the Pearson correlation between reward and answer length (characters)."""
    rows = [(c, a, b) for c, a, b in zip(items, r0, r1, strict=True) if not c.is_tie]
    if not rows:
        return {"n": 0}

    def acc(score) -> float:
        hits = 0.0
        for c, a, b in rows:
            p = score(c, a, b)
            hits += p if c.preference > 0.5 else 1 - p
        return hits / len(rows)

    rewards = [x for pair in zip(r0, r1, strict=True) for x in pair]
    lengths = [float(len(a.text)) for c in items for a in (c.answer_0, c.answer_1)]
    return {
        "n": len(rows),
        "accuracy": acc(lambda c, a, b: _pick(a, b)),
        "longer_answer_accuracy": acc(
            lambda c, a, b: _pick(len(c.answer_0.text), len(c.answer_1.text))
        ),
        "more_quotes_accuracy": acc(
            lambda c, a, b: _pick(len(c.answer_0.quotes), len(c.answer_1.quotes))
        ),
        "reward_length_correlation": pearson(rewards, lengths),
    }


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """None where it is undefined (fewer than two points, or one side constant: a reader's
    answers are all empty): reward.json is strict JSON, which has no NaN."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sxy / (sx * sy) if sx and sy else None


@torch.no_grad()
def rewards_of(
    model, tokenizer, items: list[Comparison], args: Args
) -> tuple[list[float], list[float]]:
    model.eval()
    r0: list[float] = []
    r1: list[float] = []
    for i in range(0, len(items), args.batch_size):
        chunk = items[i : i + args.batch_size]
        texts = pair_texts(chunk)
        batch = encode(tokenizer, texts, args.max_length)
        r = model(batch["input_ids"], batch["attention_mask"]).float().tolist()
        r0 += r[: len(chunk)]
        r1 += r[len(chunk) :]
    model.train()
    return r0, r1


def main(args: Args, base_name: str | None = None) -> dict:
    """Train and save; `base_name` is how the loading application names the body (webagent's
    `train rm` resolves --model, e.g. gemma3-270m, to the directory in args.model and passes the
    name, which an adapter reward model records to find its base again; default args.model)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    torch.manual_seed(args.seed)
    out = Path(args.out)
    # a person's labels (`webagent label`, kept beside the file) override the file's own
    labeled = (
        merged(args.comparisons)
        if labels_path(args.comparisons).exists()
        else read_comparisons(args.comparisons)
    )
    items = [c for c in labeled if c.preference is not None]
    if not items:
        raise ValueError(f"{args.comparisons} holds no labeled comparisons")
    items = cap_per_question(
        items if args.ties else [c for c in items if not c.is_tie], args.per_question, args.seed
    )
    if not items:
        raise ValueError(f"{args.comparisons} holds no comparison with a preference")
    train, val = split_by_question(items, args.val_fraction, args.seed)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(args.model, local_files_only=True))
    model = RewardModel.from_body(args.model)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model.body = get_peft_model(
            model.body,
            LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear"),
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs

    def lr_at(step: int) -> float:
        if step < args.warmup_steps:
            return args.learning_rate * (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
        return args.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    fingerprint = {
        "data_sha256": file_sha256(args.comparisons),
        "model": args.model,
        "lora": args.lora,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "ties": args.ties,
        "per_question": args.per_question,
    }
    start_epoch, history = 0, []
    if (state := load_resume(out / "last", fingerprint)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        torch.set_rng_state(state["rng"])
        print(f"resuming from {out / 'last'} after epoch {start_epoch}/{args.epochs}")

    t0 = time.time()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, args.epochs):
        order = list(range(len(train)))
        random.Random(args.seed * 1000 + epoch).shuffle(order)
        bar = tqdm(
            range(steps_per_epoch), desc=f"rm epoch {epoch + 1}/{args.epochs}", dynamic_ncols=True
        )
        losses = []
        for k in bar:
            chunk = [train[j] for j in order[k * args.batch_size : (k + 1) * args.batch_size]]
            texts = pair_texts(chunk)
            batch = encode(tokenizer, texts, args.max_length)
            r = model(batch["input_ids"], batch["attention_mask"])
            pref = torch.tensor([c.preference for c in chunk], dtype=r.dtype)
            loss = bt_loss(r[: len(chunk)], r[len(chunk) :], pref)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        metrics = agreement(val, *rewards_of(model, tokenizer, val, args)) if val else {}
        history.append(
            {"epoch": epoch + 1, "train_loss": sum(losses) / max(1, len(losses)), **metrics}
        )
        print(json.dumps(history[-1]))
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "fingerprint": fingerprint,
            "rng": torch.get_rng_state(),
        }
        write_dir(out / "last", lambda tmp, state=state: torch.save(state, tmp / "state.pt"))

    final = history[-1] if history else {}
    meta = {
        "base_model": base_name or args.model,
        "max_length": args.max_length,
        "data": args.comparisons,
        "data_sha256": fingerprint["data_sha256"],
        "comparisons": {"train": len(train), "val": len(val)},
        "validation": {k: v for k, v in final.items() if k not in ("epoch", "train_loss")},
        "history": history,
        "args": asdict(args),
        "seconds_this_session": round(time.time() - t0, 1),
    }
    model.save(out, tokenizer, meta)
    (out / CARD).write_text(model_card(out))
    print(f"saved reward model -> {out} (facts for its card in {out / CARD})")
    return meta


CARD = "MODEL_CARD.md"
"""A reward model's card, beside its reward.json (a shipped one keeps it in the package)."""


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        # a learning rate of 2e-4 is not 0.000
        return f"{value:.3f}" if value == 0 or abs(value) >= 0.001 else f"{value:.2g}"
    return "—" if value is None else str(value)


def model_card(directory: str | Path, name: str | None = None) -> str:
    """The card's facts, from what training recorded in reward.json: data, recipe, and held-out
    accuracy beside the two length baselines, per epoch. Sections marked TODO are the writer's
    (why this model, what it is for, limits): figures come from here, never typed by hand."""
    directory = Path(directory)
    meta = json.loads((directory / META).read_text())
    args = meta.get("args", {})
    base = meta.get("base_model", "?")
    name = name or directory.name
    weights = directory / "adapter_model.safetensors"
    if meta.get("format") == "adapter" and weights.is_file():
        from safetensors.torch import load_file

        n = sum(t.numel() for t in load_file(weights).values())
        size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        body = (
            f"A LoRA adapter (rank {args.get('lora_r')}, alpha {2 * args.get('lora_r', 0)}, every "
            f"linear layer; {n:,} parameters) and a scalar head on **{base}** "
            f"({meta.get('base', {}).get('parameters', 0):,} parameters, frozen; "
            f"{size / 2**20:.1f} MB in all)"
        )
    else:
        body = f"**{base}** fine-tuned in full, with a scalar head"
    val = meta.get("validation", {})
    counts = meta.get("comparisons", {})
    defaults = {f.name: f.default for f in fields(Args)}
    flags = [
        (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}"
        for k, v in ((k.replace("_", "-"), v) for k, v in args.items() if defaults.get(k) != v)
        if k not in ("comparisons", "out", "model", "debug")
    ]
    command = " ".join(["webagent train rm", str(meta.get("data")), "--model", str(base), *flags])
    lines = [
        f"# {name}: a webagent reward model",
        "",
        f"{body}, pooled at its "
        f"{'last token' if meta.get('pooling') == 'last' else 'mean token'}. It scores an answer "
        "with its quotes (`reward.text.reward_text`, at most "
        f"{meta.get('max_length')} tokens); `webagent ask/eval --best-of N` keep the candidate "
        "it scores highest.",
        "",
        "TODO: why this model, and what it was trained to prefer.",
        "",
        "## Data",
        "",
        f"- Comparisons: `{meta.get('data')}` (sha256 `{meta.get('data_sha256')}`).",
        f"- {counts.get('train')} training and {counts.get('val')} held-out comparisons; whole "
        f"questions are held out ({args.get('val_fraction')} of them, seed {args.get('seed')}); "
        f"ties {'kept (preference 0.5)' if args.get('ties', True) else 'dropped'}, "
        + (
            f"at most {args['per_question']} comparisons per question."
            if args.get("per_question")
            else "every comparison of each question."
        ),
        "",
        "## Training",
        "",
        f"`{command}`",
        "",
        "| setting | value |",
        "|---|---|",
        *(
            f"| {k} | {_fmt(args.get(k))} |"
            for k in (
                "epochs",
                "batch_size",
                "learning_rate",
                "warmup_steps",
                "weight_decay",
                "max_length",
                "lora_r",
            )
        ),
        f"| seconds (last session) | {meta.get('seconds_this_session')} |",
        "",
        "Loss: Bradley-Terry cross-entropy with soft labels (a tie pulls the two rewards together).",
        "",
        "## Held-out accuracy",
        "",
        "Non-tied held-out comparisons where the higher score goes to the preferred answer, beside "
        "two length biases a judge can fall for (a length tie counts half):",
        "",
        "| epoch | train loss | n | accuracy | prefer longer answer | prefer more quotes "
        "| reward-length correlation |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {h.get('epoch')} | {_fmt(h.get('train_loss'))} | {_fmt(h.get('n'))} | "
            f"{_fmt(h.get('accuracy'))} | {_fmt(h.get('longer_answer_accuracy'))} | "
            f"{_fmt(h.get('more_quotes_accuracy'))} | {_fmt(h.get('reward_length_correlation'))} |"
            for h in meta.get("history", [])
        ),
        "",
        f"Final: accuracy {_fmt(val.get('accuracy'))} on {_fmt(val.get('n'))} comparisons "
        f"(longer answer {_fmt(val.get('longer_answer_accuracy'))}, more quotes "
        f"{_fmt(val.get('more_quotes_accuracy'))}).",
        "",
        "## Use",
        "",
        f'`webagent ask "…" --best-of 4 --rm {name}` (`--rm` is not needed if it is the default, '
        "`webagent.config.DEFAULT_RM`); `webagent eval DATASET --best-of 4 --temperature 0.7`.",
        "",
        "## Limits",
        "",
        "TODO: what it misjudges (e.g. its length correlation above), the data it has not seen.",
        "",
    ]
    return "\n".join(lines)


if (
    __name__ == "__main__"
):  # `webagent train rm …` is the usual entry; this serves accelerate launch -m
    main(tyro.cli(Args, config=(tyro.conf.OmitArgPrefixes,)))
