"""Train the dense search's query adapter: questions move toward passages that hold an answer.

    python -m webagent.train_retriever ../shared/data/triviaqa/train.jsonl

The encoder (all-MiniLM-L6-v2) was trained for sentence similarity, not for "question -> the
passage that answers it" (TriviaQA's answer is often on another page than the question's topic).
`env.dense.QueryAdapter` is a residual linear map on query vectors only: the passage vectors
stay frozen, so the corpus's cached (and shipped) vectors stay valid and a search costs one more
384 x 384 product. With the passages frozen the loss can use every passage of the corpus:

    loss = -log( sum_{p holds an alias} e^{s(q,p)/t} / sum_{all p} e^{s(q,p)/t} )

Positives: passages of the default corpus (title + window, as encoded) in which an answer alias
occurs (TriviaQA normalisation, whole words: `webagent.metrics.normalize`). Questions with no
such passage are skipped. The last `held_out` questions of the file are never read (bench/
retrieval.py tunes the fusion on them); of the rest, the last `val` pick the epoch (dense
recall@10 over pages). dev.jsonl is never used.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from env import dense
from env.dense import QueryAdapter, dense_index
from env.sources.local import index_cache_dir
from env.sources.wiki import load_summaries
from webagent.datasets import Question, load_questions
from webagent.metrics import normalize


@dataclass
class Args:
    """Query-adapter training."""

    questions: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="QUESTIONS")]
    """Training questions with aliases (train.jsonl; never dev.jsonl)."""
    held_out: int = 1000
    """The file's last questions, never read here (the fusion is tuned on them)."""
    val: int = 200
    """Of the remaining questions, the last ones: they pick the epoch."""
    epochs: int = 40
    """Passes over the training questions."""
    batch: int = 32
    """Questions per step."""
    lr: float = 2e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay (pulls the adapter toward the identity map)."""
    temperature: float = 0.05
    """Softmax temperature over cosine scores."""
    max_positives: int = 50
    """Questions whose aliases are in more passages are skipped (a common word is no signal)."""
    seed: int = 0
    """Order of the questions."""
    out: Path | None = None
    """Where to write the adapter (default: the shipped one, env/data/embeddings/)."""
    threads: int = 1
    """torch threads (the machine is shared)."""


def positives(texts: list[str], questions: list[Question]) -> list[np.ndarray]:
    """For each question, the passages whose text holds one of its aliases as whole words.

    Candidates come from an inverted index of normalised words, then the phrase is checked.
    """
    normed = [f" {normalize(t)} " for t in texts]
    postings: dict[str, set[int]] = {}
    for i, t in enumerate(normed):
        for word in set(t.split()):
            postings.setdefault(word, set()).add(i)
    out = []
    for q in questions:
        found: set[int] = set()
        for alias in {normalize(a) for a in q.aliases}:
            words = alias.split()
            if not words or any(w not in postings for w in words):
                continue
            candidates = set.intersection(*(postings[w] for w in words))
            needle = f" {alias} "
            found.update(i for i in candidates if needle in normed[i])
        out.append(np.array(sorted(found), dtype=np.int64))
    return out


def main(args: Args) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    questions = load_questions(args.questions)
    if len(questions) <= args.held_out + args.val:
        raise SystemExit(
            f"{args.questions}: {len(questions)} questions; need more than held_out + val"
        )
    usable = questions[: len(questions) - args.held_out]
    train_q, val_q = usable[: -args.val], usable[-args.val :]
    docs = load_summaries()
    encoder = dense.shared_encoder(adapter=False)
    index = dense_index(docs, index_cache_dir(), encoder=encoder, shipped=dense.SHIPPED_DIR)
    texts = index.passages.texts
    start = time.perf_counter()
    pos_train = positives(texts, train_q)
    pos_val = positives(texts, val_q)
    print(f"positives found in {time.perf_counter() - start:.1f} s", flush=True)
    keep = [i for i, p in enumerate(pos_train) if 0 < len(p) <= args.max_positives]
    print(
        f"{len(keep)} of {len(train_q)} training questions have 1-{args.max_positives} passages"
        " holding an answer"
    )

    q_train = torch.from_numpy(encoder.encode([train_q[i].question for i in keep]))
    q_val = encoder.encode([q.question for q in val_q])
    p_train = [pos_train[i] for i in keep]
    passages = torch.from_numpy(index.vectors)
    doc_of = index.passages.doc_of
    val_pages = [set(doc_of[p].tolist()) for p in pos_val]

    def val_recall(adapter: QueryAdapter | None) -> float:
        qv = adapter(q_val) if adapter is not None else q_val
        hits = 0
        for vec, pages in zip(qv, val_pages, strict=True):
            top = index.search_vector(vec, 10)
            hits += any(d in pages for d, _ in top)
        return hits / len(val_q)

    weight = torch.zeros(passages.shape[1], passages.shape[1], requires_grad=True)
    opt = torch.optim.AdamW([weight], lr=args.lr, weight_decay=args.weight_decay)
    best = (val_recall(None), 0, np.zeros(tuple(weight.shape), dtype=np.float32))
    print(f"epoch 0 (stock encoder): val dense recall@10 {best[0]:.3f}", flush=True)
    rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(keep))
        total = 0.0
        for s in range(0, len(order), args.batch):
            rows = order[s : s + args.batch]
            q = q_train[rows]
            q = q + q @ weight
            q = q / q.norm(dim=-1, keepdim=True)
            logits = (q @ passages.T) / args.temperature
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for r, row in enumerate(rows):
                mask[r, torch.from_numpy(p_train[row])] = True
            pos_lse = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=-1)
            loss = (torch.logsumexp(logits, dim=-1) - pos_lse).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        adapter = QueryAdapter(weight.detach().numpy().copy())
        recall = val_recall(adapter)
        print(f"epoch {epoch}: loss {total / len(keep):.3f}, val dense recall@10 {recall:.3f}")
        if recall > best[0]:
            best = (recall, epoch, adapter.weight.copy())
    out = args.out or dense.adapter_path(encoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    QueryAdapter(best[2]).save(out)
    meta = {
        **{k: str(v) for k, v in asdict(args).items()},
        "encoder": encoder.id,
        "best_epoch": best[1],
        "val_dense_recall@10": best[0],
        "train_questions": len(keep),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"best epoch {best[1]} (val recall@10 {best[0]:.3f}) -> {out}")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
