"""Behaviour cloning: fine-tune a causal LM to write the demonstrator's next command.

    webagent train bc runs/bc/demos.jsonl --out runs/bc/policy
    accelerate launch --multi_gpu --num_processes 2 -m webagent.train_bc runs/bc/demos.jsonl --out DIR

(`--multi_gpu` is accelerate's torchrun launcher; on a machine without CUDA the processes form
a CPU group over gloo. `torchrun --nproc_per_node 2 -m webagent.train_bc …` works too.)

One file, CleanRL style: `Args` names every setting, `main` is the whole loop.
- **Data**: episode records (demonstrations) or TRL {"prompt","completion"} lines. Records are
  turned into rows with the policy's own prompt format (`webagent.prompts`, zero-shot), so
  training and acting see the same text. Validation holds out whole episodes.
- **Loss**: next-token cross-entropy on the completion tokens only; prompt tokens carry no loss
  (and the LM head is applied at completion positions only: Gemma's head is 262k wide).
  The loss of a micro-batch is the mean over its completion tokens.
- **Optimisation**: LoRA (peft) on every linear layer by default, full fine-tuning with
  `--full`; AdamW; linear warmup then cosine decay to `min_lr_ratio`; gradient accumulation;
  gradient clipping.
- **Processes**: `accelerate` (DDP). Micro-batches are dealt round-robin to processes from one
  seeded global order, so a run's data order does not depend on how it is resumed.
- **Checkpoints**: `OUT/last/` holds adapter + optimizer + step, written atomically every
  `save_every` steps and on Ctrl-C; a rerun with the same OUT continues from it. The finished
  policy is OUT itself: the adapter (or full weights) plus `webagent.json` (base model, data
  hash, steps, losses, settings), loadable anywhere a model spec is (`--model OUT`).
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro

from env.paths import file_sha256
from env.record import EpisodeRecord, read_jsonl
from reward.checkpoint import flag_names, load_resume, restore_trainable, trainable_state, write_dir
from reward.lm import ensure_pad_token
from webagent.answers import cited
from webagent.checkpoints import save_policy
from webagent.models import (
    checkpoint_meta,
    hidden_states,
    load,
    logits_for,
    resolve,
    trainable_policy,
)


@dataclass
class Args:
    """Behaviour cloning on demonstrations (episode records or prompt/completion lines)."""

    demos: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DEMOS")]
    """JSON lines: demonstration episode records, or {"prompt","completion"} rows."""
    out: str = "runs/bc/policy"
    """Checkpoint directory (the trained policy); a rerun resumes from OUT/last."""
    model: str = "gemma3-270m"
    """Base model spec (see `webagent.models`)."""
    init: str | None = None
    """Continue from this LoRA policy (a checkpoint directory or shipped policy name): its
    adapter is trained further and its base model is used (--model is ignored)."""
    full: bool = False
    """Fine-tune every weight instead of a LoRA adapter."""
    lora_r: int = 16
    """LoRA rank: the inner dimension of each adapter."""
    lora_alpha: int = 32
    """LoRA scale: an adapter's update is multiplied by lora_alpha / lora_r."""
    lora_dropout: float = 0.05
    """Dropout on the adapters' inputs while training."""
    lora_targets: str = "all-linear"
    """peft target_modules: all-linear or a comma-separated list of module names."""
    chat: bool = True
    """Use the model's chat template when it has one (must match how the policy will act)."""
    epochs: float = 1.0
    """Passes over the training rows (fractions allowed)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    micro_batch: int = 4
    """Rows per forward pass per process."""
    grad_accum: int = 4
    """Micro-batches per optimizer step per process (effective batch: micro_batch x grad_accum x processes)."""
    learning_rate: float = 2e-4
    """Peak learning rate (LoRA); use ~2e-5 with --full."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to learning_rate x this."""
    warmup_steps: int = 10
    """Optimizer steps of linear warmup to the peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's beta1 and beta2."""
    max_grad_norm: float = 1.0
    """Gradient norm clip per optimizer step."""
    max_length: int = 1024
    """Tokens per row; longer prompts lose their oldest tokens (the completion is kept whole)."""
    val_fraction: float = 0.05
    """Share of episodes held out for the validation loss."""
    val_seed: int = 0
    """Picks the held-out episodes; keep it when continuing a run (`--init`) with a new --seed,
    so validation stays unseen."""
    max_val_rows: int = 96
    """Validation rows used (a forward pass over each, every eval_every steps)."""
    eval_every: int = 25
    """Optimizer steps between validation passes (and at the end)."""
    save_every: int = 25
    """Optimizer steps between resumable checkpoints."""
    seed: int = 0
    """Seeds the training order and the adapters' initial weights."""
    limit: int | None = None
    """Only the first N rows (smoke runs)."""
    phases: tuple[str, ...] = ("browse", "answer")
    """Train on rows of these phases only (e.g. `--phases answer` to teach answering)."""
    keep_browse: float = 1.0
    """Share of browse rows kept (a seeded random subset): weights a run toward answering
    while browse rows still anchor the browsing it learnt (answer rows alone make it drift).
    The subset is drawn with --val-seed, not --seed: it is part of the data, like the split,
    so runs that differ only in --seed train on the same rows."""
    cited_weight: int = 1
    """Training answer rows that cite a quote appear this many times per epoch. Cited answers
    are the expert's only on-target ones (18% of the recall demonstrations), too rare for the
    policy to learn when to copy and cite; validation rows are never repeated."""
    decision_weight: int = 1
    """Training browse rows that make a choice (a click on a link other than 0, Back, or a
    search after the episode's first) appear this many times per epoch. They are a fifth of the
    grounded expert's rows and one short command each, so the loss is spent on quotes and the
    habitual first click; validation rows are never repeated."""
    debug: bool = False
    """Show tracebacks."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_rows(path: str | Path, fmt, tokenizer) -> list[dict]:
    """Prompt/completion rows with an `episode_id` (for the held-out split)."""
    from webagent.demos import to_prompt_completion

    rows: list[dict] = []
    for i, obj in enumerate(read_jsonl(path), start=1):
        if "prompt" in obj and "completion" in obj:
            rows.append({"episode_id": obj.get("episode_id", f"row{i}"), **obj})
        elif "steps" in obj:
            rows.extend(to_prompt_completion(EpisodeRecord.from_dict(obj), fmt, tokenizer))
        else:
            raise ValueError(f"{path}:{i}: neither an episode record nor a prompt/completion row")
    if not rows:
        raise ValueError(f"{path} holds no training rows")
    return rows


def tokenize_row(tokenizer, fmt, row: dict, max_length: int) -> tuple[list[int], int]:
    """(token ids, number of prompt tokens): the prompt encoded exactly as the policy encodes it
    when acting, then the completion's tokens. Overlong prompts lose their oldest tokens."""
    prompt = tokenizer(row["prompt"], add_special_tokens=fmt.add_special_tokens).input_ids
    completion = tokenizer(row["completion"], add_special_tokens=False).input_ids
    if not completion:
        raise ValueError(f"empty completion in episode {row.get('episode_id')}")
    keep = max(1, max_length - len(completion))
    if len(prompt) > keep:
        prompt = prompt[:1] + prompt[len(prompt) - keep + 1 :]  # keep BOS / first token
    return prompt + completion, len(prompt)


def split_episodes(rows: list[dict], val_fraction: float, seed: int) -> tuple[list, list]:
    """Hold out whole episodes (rows of one episode share their early observations), and all
    episodes of one question together (several trajectories of a question share its pages)."""

    def group(r: dict) -> str:
        return r.get("question_id") or r["episode_id"]

    ids = sorted({group(r) for r in rows})
    random.Random(seed).shuffle(ids)
    n_val = 0 if val_fraction <= 0 or len(ids) < 2 else max(1, round(len(ids) * val_fraction))
    val_ids = set(ids[:n_val])
    return [r for r in rows if group(r) not in val_ids], [r for r in rows if group(r) in val_ids]


def weigh_cited(rows: list[dict], weight: int) -> list[dict]:
    """Repeat answer rows whose completion cites a quote `weight` times (others once)."""
    if weight < 1:
        raise ValueError(f"--cited-weight must be at least 1, got {weight}")
    return [
        r
        for r in rows
        for _ in range(weight if r.get("phase") == "answer" and cited(r["completion"]) else 1)
    ]


def row_command(row: dict):
    """The browser command a browse row's completion writes (None for answers and non-commands)."""
    from env.commands import CommandError, parse

    if row.get("phase", "browse") != "browse":
        return None
    try:
        return parse(row["completion"])
    except CommandError:
        return None


def weigh_decisions(rows: list[dict], weight: int) -> list[dict]:
    """Repeat browse rows that choose `weight` times (others once): a click on a link other
    than 0, Back, or a search after an earlier search of its episode. Rows of an episode are in
    step order, as `load_rows` gives them, which tells a first search from a later one."""
    from env.commands import Back, Click, Search

    if weight < 1:
        raise ValueError(f"--decision-weight must be at least 1, got {weight}")
    searched: set[str] = set()
    out = []
    for r in rows:
        command = row_command(r)
        choice = (
            isinstance(command, Back)
            or (isinstance(command, Click) and command.link_id != 0)
            or (isinstance(command, Search) and r["episode_id"] in searched)
        )
        out.extend([r] * (weight if choice else 1))
        if isinstance(command, Search):
            searched.add(r["episode_id"])
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with `loss_mask` = 1 exactly on completion tokens."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, n_prompt : len(ids)] = True
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def micro_batches(
    lengths: list[int], micro_batch: int, epochs: float, seed: int, group: int = 1
) -> list[list[int]]:
    """The run's global order of micro-batches: a fresh shuffle per epoch, seeded. Each run of
    `group` micro-batches (one optimizer step's worth) is sorted by length before it is cut,
    so rows of similar length share a micro-batch (less padding, same data per step)."""
    n_rows = len(lengths)
    order: list[int] = []
    epoch = 0
    while len(order) < epochs * n_rows:
        perm = list(range(n_rows))
        random.Random(seed * 1000 + epoch).shuffle(perm)
        order.extend(perm)
        epoch += 1
    order = order[: max(1, math.ceil(epochs * n_rows))]
    span = micro_batch * group
    for i in range(0, len(order), span):
        order[i : i + span] = sorted(order[i : i + span], key=lambda j: lengths[j])
    return [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class CompletionLoss(torch.nn.Module):
    """Wraps the LM so DDP sees one forward: summed NLL of the completion tokens and their count.

    The LM head runs only on positions whose next token is a completion token."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, loss_mask):
        hidden = hidden_states(self.model, input_ids, attention_mask)
        targets_mask = loss_mask[:, 1:]
        logits = logits_for(self.model, hidden[:, :-1], targets_mask)
        targets = input_ids[:, 1:][targets_mask]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        return nll, targets.numel()


def lr_at(step: int, total: int, args: Args) -> float:
    """Linear warmup to the peak, then cosine decay to peak x min_lr_ratio (nanoGPT's shape)."""
    if step < args.warmup_steps:
        return args.learning_rate * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, total - args.warmup_steps))
    ratio = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return args.learning_rate * ratio


def with_lora(model, args: Args):
    from peft import LoraConfig, get_peft_model

    targets: Any = args.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def answer_style(rows: list[dict], init_meta: dict | None) -> str:
    """ "free" when the policy was taught uncited answers from memory (recall demonstrations),
    here or by the policy it continues, so the decoding aid must not hold its answers to quote
    spans; else "extractive"."""

    if init_meta is not None and init_meta.get("answers") == "free":
        return "free"
    uncited = any(r.get("phase") == "answer" and not cited(r["completion"]) for r in rows)
    return "free" if uncited else "extractive"


def _provenance(spec: str, meta: dict) -> dict:
    """Where a continued run started: the policy's spec and what it was trained on."""
    return {
        "spec": str(spec),
        "data": meta.get("data"),
        "data_sha256": meta.get("data_sha256"),
        "steps": meta.get("steps"),
        "init": meta.get("init"),
    }


def save_state(directory: Path, model, optimizer, step: int, meta: dict) -> None:
    """Everything a resumed run needs, in OUT/last (written beside, then swapped in): state.pt
    holds it all (`meta`: fingerprint and log), meta.json shows `meta` to people."""
    trainable = trainable_state(model)

    def fill(tmp: Path) -> None:
        torch.save(
            {
                "trainable": trainable,
                "optimizer": optimizer.state_dict(),
                "step": step,
                "rng": torch.get_rng_state(),
                **meta,
            },
            tmp / "state.pt",
        )
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    write_dir(directory, fill)


def load_state(
    directory: Path, model, optimizer, fingerprint: dict, flags: Collection[str] = ()
) -> tuple[int, dict] | None:
    """Restore OUT/last if it was written by a run with the same data and settings
    (`reward.checkpoint.load_resume`, `flags` naming the settings that are flags): (step, log),
    or None when there is nothing to resume."""
    state = load_resume(directory, fingerprint, flags=flags)
    if state is None:
        return None
    restore_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state["step"], state["log"]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def main(args: Args) -> Path:
    from accelerate import Accelerator
    from tqdm import tqdm

    from webagent.prompts import format_for

    accelerator = Accelerator(
        gradient_accumulation_steps=args.grad_accum, cpu=not torch.cuda.is_available()
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(args.seed)
    out = Path(args.out)
    weigh_cited([], args.cited_weight)  # a bad weight fails before any model loads
    weigh_decisions([], args.decision_weight)
    if args.init is not None:
        if args.full:
            raise ValueError("--init continues a LoRA adapter; it cannot be combined with --full")
        loaded = trainable_policy(args.init)
        base_model, init_meta = loaded.base_spec, checkpoint_meta(loaded.source_path)
    else:
        if resolve(args.model).kind == "checkpoint":  # refuse before loading any weights
            raise ValueError(
                f"{args.model} is already a policy checkpoint; use --init {args.model} to train it"
                " further, or train from its base model"
            )
        loaded, base_model, init_meta = load(args.model), args.model, None
    tokenizer, model = loaded.tokenizer, loaded.model
    fmt = format_for(tokenizer, prefer_chat=args.chat, examples=0)
    pad_id = ensure_pad_token(tokenizer)

    rows = [
        r for r in load_rows(args.demos, fmt, tokenizer) if r.get("phase", "browse") in args.phases
    ]
    if args.keep_browse < 1.0:
        pick = random.Random(args.val_seed)
        rows = [r for r in rows if r.get("phase") != "browse" or pick.random() < args.keep_browse]
    rows = rows[: args.limit]
    if not rows:
        raise ValueError(f"{args.demos} holds no rows of phase {', '.join(args.phases)}")
    train_rows, val_rows = split_episodes(rows, args.val_fraction, args.val_seed)
    train_rows = weigh_cited(weigh_decisions(train_rows, args.decision_weight), args.cited_weight)
    train = [tokenize_row(tokenizer, fmt, r, args.max_length) for r in train_rows]
    val_rows = random.Random(args.val_seed).sample(val_rows, min(len(val_rows), args.max_val_rows))
    val = [tokenize_row(tokenizer, fmt, r, args.max_length) for r in val_rows]
    lengths = [len(ids) for ids, _ in train]
    per_step = args.grad_accum * world
    schedule = micro_batches(lengths, args.micro_batch, args.epochs, args.seed, per_step)
    total_steps = max(1, len(schedule) // per_step)
    if args.max_steps is not None:
        total_steps = args.max_steps
        while len(schedule) < total_steps * per_step:  # more epochs than --epochs asked for
            schedule += micro_batches(
                lengths, args.micro_batch, 1, args.seed + len(schedule), per_step
            )

    if args.full:
        model.requires_grad_(True)
    elif args.init is None:
        model = with_lora(model, args)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.learning_rate, betas=args.adam_betas, weight_decay=args.weight_decay
    )
    fingerprint = {
        "data_sha256": file_sha256(args.demos),
        "model": args.model,
        "full": args.full,
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "world": world,
        "seed": args.seed,
        "val_seed": args.val_seed,
        "total_steps": total_steps,
        "limit": args.limit,
        "learning_rate": args.learning_rate,
        "lora_r": args.lora_r,
        "init": args.init,
        "phases": list(args.phases),
        "keep_browse": args.keep_browse,
        "cited_weight": args.cited_weight,
        "decision_weight": args.decision_weight,
        # the rest that shapes the rows, the adapter or the schedule: a resumed run is one run
        "chat": args.chat,
        "max_length": args.max_length,
        "val_fraction": args.val_fraction,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "lora_targets": args.lora_targets,
        "warmup_steps": args.warmup_steps,
        "min_lr_ratio": args.min_lr_ratio,
        "weight_decay": args.weight_decay,
        "adam_betas": list(args.adam_betas),
        "max_grad_norm": args.max_grad_norm,
    }
    step, log = 0, {"train": [], "val": []}
    resumed = load_state(out / "last", model, optimizer, fingerprint, flag_names(args))
    if resumed is not None:
        step, log = resumed
        accelerator.print(f"resuming from {out / 'last'} at step {step}/{total_steps}")
    wrapped = CompletionLoss(model)
    wrapped, optimizer = accelerator.prepare(wrapped, optimizer)

    def validate() -> float | None:
        if not val:
            return None
        wrapped.eval()
        nll, count = torch.zeros(()), torch.zeros(())
        with torch.no_grad():
            for i in range(rank * args.micro_batch, len(val), world * args.micro_batch):
                batch = to_device(
                    collate(val[i : i + args.micro_batch], pad_id), accelerator.device
                )
                s, n = wrapped(**batch)
                nll, count = nll + s.detach().cpu(), count + n
        nll, count = accelerator.reduce(nll, "sum"), accelerator.reduce(count, "sum")
        wrapped.train()
        return float(nll / count.clamp(min=1))

    def checkpoint(step: int) -> None:
        model = unwrap_ddp(accelerator, wrapped).model
        save_state(out / "last", model, optimizer, step, {"fingerprint": fingerprint, "log": log})

    meta = {
        "base_model": base_model,
        "kind": "bc",
        "init": None if args.init is None else _provenance(args.init, init_meta),
        "adapter": None if args.full else "lora",
        "prompt": {"style": fmt.style, "examples": 0},
        "answers": answer_style(rows, init_meta),
        "data": str(args.demos),
        "data_sha256": fingerprint["data_sha256"],
        "rows": {"train": len(train), "val": len(val)},
        "args": {k: v for k, v in asdict(args).items() if k not in ("debug",)},
        "processes": world,
    }
    t_start, tokens_seen = time.time(), 0
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc="bc",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    stop = StopRequest()
    try:
        while step < total_steps:
            lr = lr_at(step, total_steps, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = []
            first = step * per_step
            for k in range(args.grad_accum):
                batch_rows = schedule[first + k * world + rank]
                batch = to_device(
                    collate([train[j] for j in batch_rows], pad_id), accelerator.device
                )
                with accelerator.accumulate(wrapped):
                    nll, n = wrapped(**batch)
                    loss = nll / max(n, 1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                tokens_seen += int(batch["attention_mask"].sum()) * world
            step += 1
            train_loss = float(accelerator.reduce(torch.tensor(sum(losses) / len(losses)), "mean"))
            log["train"].append([step, round(train_loss, 5), lr])
            postfix = {
                "loss": f"{train_loss:.3f}",
                "tok/s": f"{tokens_seen / (time.time() - t_start):.0f}",
            }
            if step % args.eval_every == 0 or step == total_steps:
                v = validate()
                if v is not None:
                    log["val"].append([step, round(v, 5)])
                    postfix["val"] = f"{v:.3f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if (step % args.save_every == 0 or step == total_steps) and accelerator.is_main_process:
                checkpoint(step)
            # Ctrl-C / SIGTERM ends the run between steps, on every process at once
            if float(accelerator.reduce(torch.tensor(float(stop.requested)), "sum")) > 0:
                if accelerator.is_main_process:
                    checkpoint(step)
                    bar.close()
                    print(
                        f"\ninterrupted at step {step}/{total_steps}; saved {out / 'last'}; "
                        "rerun the same command to resume",
                        file=sys.stderr,
                    )
                raise KeyboardInterrupt
            accelerator.wait_for_everyone()
    finally:
        bar.close()
        stop.restore()
    seconds = time.time() - t_start
    if accelerator.is_main_process:
        policy = unwrap_ddp(accelerator, wrapped).model
        meta.update(
            steps=step,
            train_loss=log["train"][-1][1] if log["train"] else None,
            val_loss=log["val"][-1][1] if log["val"] else None,
            losses=log,
            seconds_this_session=round(seconds, 1),
            tokens_this_session=tokens_seen,
        )
        save_policy(policy, tokenizer, out, meta)
        with open(out / "log.jsonl", "w") as f:
            for s, loss, lr in log["train"]:
                f.write(json.dumps({"step": s, "train_loss": loss, "lr": lr}) + "\n")
            for s, v in log["val"]:
                f.write(json.dumps({"step": s, "val_loss": v}) + "\n")
        accelerator.print(
            f"saved policy -> {out} (train loss {meta['train_loss']}, val loss {meta['val_loss']})"
        )
    accelerator.wait_for_everyone()
    return out


class StopRequest:
    """Turns the first Ctrl-C (or SIGTERM) into a request honoured between optimizer steps, so
    the checkpoint written on exit is a consistent one; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def unwrap_ddp(accelerator, wrapped) -> CompletionLoss:
    return accelerator.unwrap_model(wrapped)


if (
    __name__ == "__main__"
):  # `webagent train bc …` is the usual entry; this serves accelerate launch -m
    main(tyro.cli(Args, config=(tyro.conf.OmitArgPrefixes,)))
