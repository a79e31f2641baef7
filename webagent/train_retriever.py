"""Train the dense search: questions move toward passages that hold an answer.

    python -m webagent.train_retriever ../shared/data/triviaqa/train.jsonl              # encoder
    python -m webagent.train_retriever ../shared/data/triviaqa/train.jsonl --mode adapter

`--mode lora` (default) fine-tunes the encoder itself, queries and passages alike, through a
low-rank delta (LoRA, peft) on every linear layer of its transformer, saved as (A, B) pairs
(`env.dense.save_lora`, ~1 MB) and merged into the weights at load. Examples: (question, a
passage of the default corpus holding an alias, a hard negative = the best passage of a page
the stock hybrid search ranks high that holds no alias); the loss is a softmax over the batch's
positives and hard negatives (in-batch negatives, as sentence-transformers'
MultipleNegativesRankingLoss), scale 1/temperature. Passages move, so the corpus's vectors must
be re-embedded with the tuned encoder: its id carries the delta's hash, so every embedding cache
key changes with it. The epoch is picked by the validation questions' recall@3 when the stock
hybrid's top 10 pages are re-ranked by the tuned encoder (cheap: no corpus re-embedding).

`--mode adapter`:
The encoder (all-MiniLM-L6-v2) was trained for sentence similarity, not for "question -> the
passage that answers it" (TriviaQA's answer is often on another page than the question's topic).
`env.dense.QueryAdapter` is a residual linear map on query vectors only: the passage vectors
stay frozen, so the corpus's cached (and shipped) vectors stay valid and a search costs one more
384 x 384 product. With the passages frozen the loss can use every passage of the corpus:

    loss = -log( sum_{p holds an alias} e^{s(q,p)/t} / sum_{all p} e^{s(q,p)/t} )

Positives: passages of the default corpus (title + window, as encoded) in which an answer alias
occurs (TriviaQA normalisation, whole words: `webagent.metrics.normalize_answer`). Questions with no
such passage are skipped. The last `held_out` questions of the file are never read (bench/
retrieval.py tunes the fusion on them); of the rest, the last `val` pick the epoch (dense
recall@10 over pages). dev.jsonl is never used.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from env import dense
from env.dense import HybridRetriever, QueryAdapter, dense_index
from env.sources.local import index_cache_dir
from env.sources.wiki import corpus_key, load_summaries, local_wikipedia
from webagent.datasets import Question, load_questions
from webagent.metrics import normalize_answer


@dataclass
class Args:
    """Query-adapter training."""

    questions: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="QUESTIONS")]
    """Training questions with aliases (train.jsonl; never dev.jsonl)."""
    mode: Literal["lora", "adapter"] = "lora"
    """lora: fine-tune the encoder (queries and passages); adapter: a linear map on queries."""
    rank: int = 16
    """lora: rank of the delta of each linear layer."""
    alpha: float = 32.0
    """lora: the delta is scaled by alpha / rank."""
    layers: int = 6
    """lora: adapt only the top this many transformer layers (MiniLM has 6)."""
    hard_negatives: int = 1
    """lora: hard negatives per question in a batch (sampled from its top 5)."""
    val_pool: int = 10
    """lora: stock hybrid pages re-ranked per validation question to pick the epoch."""
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
    """For each question, the passages whose text holds one of its aliases as whole words
    (`metrics.holds_alias`, which a test checks this against, made fast by an index).

    Candidates come from an inverted index of normalised words, then the phrase is checked.
    """
    normed = [f" {normalize_answer(t)} " for t in texts]
    postings: dict[str, set[int]] = {}
    for i, t in enumerate(normed):
        for word in set(t.split()):
            postings.setdefault(word, set()).add(i)
    out = []
    for q in questions:
        found: set[int] = set()
        for alias in {normalize_answer(a) for a in q.aliases}:
            words = alias.split()
            if not words or any(w not in postings for w in words):
                continue
            candidates = set.intersection(*(postings[w] for w in words))
            needle = f" {alias} "
            found.update(i for i in candidates if needle in normed[i])
        out.append(np.array(sorted(found), dtype=np.int64))
    return out


def main(args: Args) -> Path:
    if args.mode == "lora":
        return train_lora(args)
    return train_adapter(args)


def train_adapter(args: Args) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_q, val_q = split_questions(args)
    encoder = dense.shared_encoder(adapter=False, tuned=False)
    index = default_corpus_index(encoder)
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
    return record(out, args, encoder.id, best[:2], "val dense recall@10", len(keep))


def record(
    out: Path, args: Args, encoder: str, best: tuple[float, int], metric: str, n: int
) -> Path:
    """Write what was trained, how, and its validation score next to it (out.json)."""
    meta = {
        **{k: str(v) for k, v in asdict(args).items()},
        "encoder": encoder,
        "best_epoch": best[1],
        metric: best[0],
        "train_questions": n,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"best epoch {best[1]} ({metric} {best[0]:.3f}) -> {out}")
    return out


def default_corpus_index(encoder: dense.Encoder) -> dense.DenseIndex:
    """The default corpus's passage vectors under `encoder` (the shipped ones when they are
    its, else embedded once and cached, as the search itself finds them)."""
    docs = load_summaries()
    return dense_index(
        docs,
        index_cache_dir(),
        encoder=encoder,
        shipped=dense.SHIPPED_DIR,
        corpus_key=corpus_key("en-us", docs),
    )


def split_questions(args: Args) -> tuple[list[Question], list[Question]]:
    """(training, validation) questions: the file minus its last `held_out`, whose last `val`
    validate."""
    questions = load_questions(args.questions)
    if len(questions) <= args.held_out + args.val:
        raise SystemExit(
            f"{args.questions}: {len(questions)} questions; need more than held_out + val"
        )
    usable = questions[: len(questions) - args.held_out]
    return usable[: -args.val], usable[-args.val :]


@dataclass
class Example:
    """One training question with its candidate positive and hard-negative passages."""

    question: str
    positives: np.ndarray
    """Passages holding an alias, best (stock cosine) first."""
    negatives: list[int]
    """Best passages of highly ranked pages holding no alias, best first."""
    positive_set: frozenset[int]


def examples(
    questions: list[Question], hybrid: HybridRetriever, qvecs: np.ndarray, args: Args
) -> tuple[list[Example], list[set[int]]]:
    """Training examples (questions with 1..max_positives positive passages and a hard
    negative) and, for every question, the pages holding an alias."""
    index = hybrid.dense
    texts = index.passages.texts
    doc_of = index.passages.doc_of
    pos = positives(texts, questions)
    out = []
    pages = []
    for q, p, vec in zip(questions, pos, qvecs, strict=True):
        good = set(doc_of[p].tolist())
        pages.append(good)
        if not 0 < len(p) <= args.max_positives:
            continue
        _, scores = index.page_scores(vec)
        ranked = hybrid.search_passages(q.question, 30, qvec=vec)
        negs = [index.best_passage(d, scores) for d, _, _ in ranked if d not in good]
        if not negs:
            continue
        order = p[np.argsort(-scores[p], kind="stable")]
        out.append(Example(q.question, order, negs, frozenset(p.tolist())))
    return out, pages


def train_lora(args: Args) -> Path:
    """Fine-tune the encoder with LoRA (see the module docstring); writes the delta."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_q, val_q = split_questions(args)
    stock = dense.Encoder(dense.DEFAULT_ENCODER)
    index = default_corpus_index(stock)
    bm25 = local_wikipedia(dense=False).index
    hybrid = HybridRetriever(bm25, index, dense.DEFAULT_HYBRID)
    texts = index.passages.texts
    start = time.perf_counter()
    train_ex, _ = examples(train_q, hybrid, stock.encode([q.question for q in train_q]), args)
    val_vecs = stock.encode([q.question for q in val_q])
    _, val_pages = examples(val_q, hybrid, val_vecs, args)
    # validation: each question's stock hybrid top pages, re-ranked by the tuned encoder
    pools = [
        [d for d, _, _ in hybrid.search_passages(q.question, args.val_pool, qvec=v)]
        for q, v in zip(val_q, val_vecs, strict=True)
    ]
    pool_passages = sorted({int(i) for pool in pools for d in pool for i in index.passages_of(d)})
    print(
        f"{len(train_ex)} of {len(train_q)} training questions have 1-{args.max_positives}"
        f" positive passages and a hard negative; {len(pool_passages)} validation passages"
        f" ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )

    model = stock.model
    bert = model[0].auto_model
    first = bert.config.num_hidden_layers - args.layers
    targets = (
        r".*encoder\.layer\.("
        + "|".join(str(i) for i in range(first, bert.config.num_hidden_layers))
        + r")\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense"
        r"|output\.dense)"
    )
    lora = get_peft_model(
        bert,
        LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=targets),
    )

    def embed(batch: list[str], grad: bool) -> torch.Tensor:
        features = model.tokenize(batch)
        with torch.set_grad_enabled(grad):
            return model(features)["sentence_embedding"]

    def val_recall() -> float:
        model.eval()
        vecs = {}
        with torch.inference_mode():
            for s in range(0, len(pool_passages), 64):
                ids = pool_passages[s : s + 64]
                for i, v in zip(ids, embed([texts[i] for i in ids], False), strict=True):
                    vecs[i] = v
            qv = torch.cat(
                [
                    embed([q.question for q in val_q[s : s + 64]], False)
                    for s in range(0, len(val_q), 64)
                ]
            )
        hits = 0
        for q, pool, good in zip(qv, pools, val_pages, strict=True):
            score = {d: max(float(vecs[i] @ q) for i in index.passages_of(d)) for d in pool}
            top = sorted(pool, key=lambda d: (-score[d], pool.index(d)))[:3]
            hits += any(d in good for d in top)
        model.train()
        return hits / len(val_q)

    params = [p for p in lora.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * ((len(train_ex) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps)
    )
    best = (val_recall(), 0, _lora_pairs(lora))
    print(f"epoch 0 (stock encoder): val re-ranked recall@3 {best[0]:.3f}", flush=True)
    rng = np.random.default_rng(args.seed)
    model.train()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train_ex))
        total, t0 = 0.0, time.perf_counter()
        for s in range(0, len(order), args.batch):
            batch = [train_ex[i] for i in order[s : s + args.batch]]
            pos_ids = [int(e.positives[rng.integers(min(3, len(e.positives)))]) for e in batch]
            neg_ids = [
                int(e.negatives[j])
                for e in batch
                for j in rng.choice(
                    min(5, len(e.negatives)),
                    size=min(args.hard_negatives, len(e.negatives)),
                    replace=False,
                )
            ]
            cand = pos_ids + neg_ids
            q = embed([e.question for e in batch], True)
            p = embed([texts[i] for i in cand], True)
            logits = q @ p.T / args.temperature
            # a candidate that holds question r's answer is not its negative
            false_neg = torch.tensor(
                [
                    [c in e.positive_set and j != r for j, c in enumerate(cand)]
                    for r, e in enumerate(batch)
                ]
            )
            logits = logits.masked_fill(false_neg, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        recall = val_recall()
        print(
            f"epoch {epoch}: loss {total / len(train_ex):.3f} ({time.perf_counter() - t0:.0f} s),"
            f" val re-ranked recall@3 {recall:.3f}",
            flush=True,
        )
        if recall > best[0]:
            best = (recall, epoch, _lora_pairs(lora))
    out = args.out or dense.tuned_path(dense.DEFAULT_ENCODER)
    dense.save_lora(out, best[2])
    return record(out, args, stock.id, best[:2], "val re-ranked recall@3", len(train_ex))


def _lora_pairs(model: object) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (A, scaled B) pairs of a peft LoRA model, named as the base model's modules."""
    pairs = {}
    for name, module in model.named_modules():  # type: ignore[attr-defined]
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        a = module.lora_A["default"].weight.detach().numpy().copy()
        b = module.lora_B["default"].weight.detach().numpy() * module.scaling["default"]
        base = name.split("base_model.model.", 1)[-1]
        pairs[base] = (a, b.copy())
    return pairs


if __name__ == "__main__":
    main(tyro.cli(Args))
