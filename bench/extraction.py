"""How much of an article the model sees: main-content extraction on 181 real pages.

    .venv/bin/python bench/extraction.py               # all pages
    .venv/bin/python bench/extraction.py --limit 20    # quick look

Data: ../shared/data/pages/article-extraction-benchmark (scrapinghub/article-extraction-benchmark,
MIT): html/<id>.html.gz and ground-truth.json {id: {"articleBody", "url"}}. The scoring follows
the upstream evaluate.py: text is tokenised as `\\w+` runs; each page is scored on the multiset
overlap of its 4-token shingles (tp/fp/fn normalised per page so long articles do not dominate);
precision and recall are averaged over pages and F1 is their harmonic mean. The bag-of-tokens
F1 (1-token shingles) is printed beside it.

Compared: (a) what the model sees, `html_to_page(main_content=True)` with link markers replaced
by their text; (b) `trafilatura.extract` plain text, the upstream trafilatura entry (reference);
(c) our renderer on the whole page (`main_content=False`), the no-extraction baseline.
"""

from __future__ import annotations

import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from env.observation import strip_markup  # noqa: E402
from env.pages import html_to_page  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pages" / "article-extraction-benchmark"
_TOKEN = re.compile(r"\w+")


@dataclass
class Args:
    """Main-content extraction benchmark."""

    data_dir: Path = DEFAULT_DATA
    """Folder holding ground-truth.json and html/*.html.gz."""
    limit: int = 0
    """Score only the first N pages (sorted by id); 0 for all."""
    worst: int = 0
    """Also list the N pages where (a) loses most F1 against (b), to guide fixes."""
    quick: bool = False
    """The first 20 pages only (`make bench`)."""


# ----------------------------------------------------------------------------- scoring


def shingles(text: str, n: int) -> Counter[tuple[str, ...]]:
    """Multiset of n-token shingles of `\\w+` tokens (one short shingle for short texts)."""
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens)


def tp_fp_fn(truth: str, pred: str, n: int) -> tuple[float, float, float]:
    """Shingle overlap counts for one page, normalised to sum to 1 (upstream's weighting)."""
    t, p = shingles(truth, n), shingles(pred, n)
    tp = float(sum((t & p).values()))
    fp = float(sum((p - t).values()))
    fn = float(sum((t - p).values()))
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fn == 0 else tp / (tp + fn)


def summarise(counts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Mean precision and recall over pages, F1 of the two means (as upstream reports)."""
    p = statistics.mean(_precision(*c) for c in counts if c[0] + c[1] > 0)
    r = statistics.mean(_recall(*c) for c in counts if c[0] + c[2] > 0)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def page_f1(c: tuple[float, float, float]) -> float:
    p, r = _precision(*c), _recall(*c)
    return 2 * p * r / (p + r) if p + r else 0.0


# ----------------------------------------------------------------------------- extractors


def ours_main(html: str, url: str) -> str:
    """What the model reads: main content, link markers replaced by their text."""
    return strip_markup(html_to_page(html, url, main_content=True).text)


def ours_full(html: str, url: str) -> str:
    return strip_markup(html_to_page(html, url, main_content=False).text)


def trafilatura_text(html: str, url: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False) or ""


EXTRACTORS: dict[str, Callable[[str, str], str]] = {
    "(a) ours main_content": ours_main,
    "(b) trafilatura text": trafilatura_text,
    "(c) ours full page": ours_full,
}


# ----------------------------------------------------------------------------- run


def run(args: Args) -> int:
    truth_path = args.data_dir / "ground-truth.json"
    if not truth_path.exists():
        print(f"skipped: no benchmark data at {args.data_dir} (needs ../shared)")
        return 0
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    ids = sorted(truth)[: args.limit or (20 if args.quick else None)]
    pages = {
        i: gzip.decompress((args.data_dir / "html" / f"{i}.html.gz").read_bytes()).decode("utf-8")
        for i in ids
    }
    results: dict[str, dict[str, tuple]] = {}
    rows = []
    for name, extract in EXTRACTORS.items():
        per_page: dict[str, tuple] = {}
        start = time.perf_counter()
        outputs = {i: extract(pages[i], truth[i]["url"]) for i in ids}
        seconds = time.perf_counter() - start
        for i in ids:
            body = truth[i]["articleBody"]
            per_page[i] = (tp_fp_fn(body, outputs[i], 4), tp_fp_fn(body, outputs[i], 1))
        results[name] = per_page
        p, r, f1 = summarise([v[0] for v in per_page.values()])
        _, _, tok_f1 = summarise([v[1] for v in per_page.values()])
        rows.append((name, p, r, f1, tok_f1, len(ids) / seconds))

    print(f"{len(ids)} pages from {args.data_dir}")
    print("scores: upstream 4-token shingles (P, R, F1) and bag-of-tokens F1")
    print("| extractor              |     P |     R |    F1 | tokF1 | pages/s |")
    print("|------------------------|-------|-------|-------|-------|---------|")
    for name, p, r, f1, tok_f1, speed in rows:
        print(f"| {name:<22} | {p:.3f} | {r:.3f} | {f1:.3f} | {tok_f1:.3f} | {speed:7.1f} |")
    ours, ref = rows[0], rows[1]
    print(f"ratio ours/trafilatura: F1 {ours[3] / ref[3]:.3f}, token F1 {ours[4] / ref[4]:.3f}")

    if args.worst:
        a, b = results[rows[0][0]], results[rows[1][0]]
        gaps = sorted(ids, key=lambda i: page_f1(a[i][0]) - page_f1(b[i][0]))
        print(f"\nworst {args.worst} pages for (a) against (b) (shingle F1, P/R of (a)):")
        for i in gaps[: args.worst]:
            ca = a[i][0]
            print(
                f"  {i[:12]} a={page_f1(ca):.3f} (P {_precision(*ca):.2f} R {_recall(*ca):.2f})"
                f" b={page_f1(b[i][0]):.3f}  {truth[i]['url'][:70]}"
            )
    return 0


def main() -> int:
    import tyro

    return run(tyro.cli(Args))


if __name__ == "__main__":
    raise SystemExit(main())
