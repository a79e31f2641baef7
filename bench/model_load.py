"""Benchmark webagent.models on this machine: prepare, cached load, prefill and decode speed.

    .venv/bin/python bench/model_load.py                 # both known models, batch 1 and 8
    .venv/bin/python bench/model_load.py --fresh         # also time a first prepare (temp cache)
    .venv/bin/python bench/model_load.py --models smollm2-135m --threads 1

"first prepare" is measured with --fresh (into a temporary WEBAGENT_CACHE), else taken from the
cache's record (or measured now, if the model was not prepared yet).  "load (new process)" is
``load()`` in a fresh interpreter after ``import torch, transformers``; "load (warm)" a second
``load()`` in the same process.  Prefill and decode come from one greedy ``generate`` call over
a left-padded batch (rows 600, 590, ... tokens): a logits processor timestamps every step, so
prefill = time to the first next-token distribution, decode = mean time per later step
(best of --repeats runs).
Timings are wall-clock and sensitive to other processes on the machine (load average shown).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

from webagent import models as M  # noqa: E402

PASSAGE = (
    "The Tigris is the eastern of the two great rivers that define Mesopotamia, the other being "
    "the Euphrates. The river flows south from the mountains of southeastern Turkey through Iraq "
    "and empties into the Persian Gulf. Baghdad, the capital of Iraq, stands on its banks. "
    "Question: Which river flows through Baghdad? Search results: [1] Tigris - Wikipedia. "
)


class _StepClock(LogitsProcessor):
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def _batch(tokenizer, prompt_tokens: int, batch: int, step: int = 10) -> dict[str, torch.Tensor]:
    ids = tokenizer(PASSAGE * (prompt_tokens // 40 + 2), add_special_tokens=False)["input_ids"]
    prefix = (
        [tokenizer.bos_token_id] if tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id else []
    )
    rows = [prefix + ids[: prompt_tokens - len(prefix) - i * step] for i in range(batch)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": input_ids, "attention_mask": mask}


def _time_generate(model, batch: dict[str, torch.Tensor], new_tokens: int) -> tuple[float, float]:
    clock = _StepClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **batch,
            max_new_tokens=new_tokens + 1,
            min_new_tokens=new_tokens + 1,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
        )
    prefill = clock.times[0] - start
    decode = (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)
    return prefill, decode


def _load_in_new_process(spec: str, threads: int) -> tuple[float, float]:
    code = (
        "import time; t0 = time.perf_counter(); import torch, transformers; "
        f"torch.set_num_threads({threads}); "
        "from webagent.models import load; t1 = time.perf_counter(); "
        f"load({spec!r}); print(t1 - t0, time.perf_counter() - t1)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    imports, load = (float(x) for x in out.stdout.split()[-2:])
    return imports, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs is reported")
    ap.add_argument("--fresh", action="store_true", help="time a first prepare in a temp cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    load_rows, speed_rows = [], []
    for spec in args.models:
        if args.fresh:
            with tempfile.TemporaryDirectory() as tmp:
                old = os.environ.get("WEBAGENT_CACHE")
                os.environ["WEBAGENT_CACHE"] = tmp
                try:
                    t = time.perf_counter()
                    M.prepare(spec)
                    prep = f"{time.perf_counter() - t:.1f}"
                finally:
                    if old is None:
                        del os.environ["WEBAGENT_CACHE"]
                    else:
                        os.environ["WEBAGENT_CACHE"] = old
        if not M.is_prepared(spec):
            t = time.perf_counter()
            M.prepare(spec)
            prep = f"{time.perf_counter() - t:.1f}"
        elif not args.fresh:
            prep = f"{M.cache_info(spec)['prepare_seconds']:.1f} (recorded)"
        imports, load_new = _load_in_new_process(spec, args.threads)
        t = time.perf_counter()
        lm = M.load(spec)
        load_first = time.perf_counter() - t
        t = time.perf_counter()
        lm = M.load(spec)
        load_warm = time.perf_counter() - t
        info = M.cache_info(spec)
        load_rows.append(
            (
                spec,
                info["architecture"],
                f"{info['num_parameters'] / 1e6:.0f}M",
                info["vocab_size"],
                prep,
                f"{imports:.2f}",
                f"{load_new:.2f}",
                f"{min(load_first, load_warm):.2f}",
            )
        )

        tok, model = lm.tokenizer, lm.model
        _time_generate(model, _batch(tok, 32, 1), 2)  # warm-up
        for b in args.batch:
            batch = _batch(tok, args.prompt_tokens, b)
            runs = [_time_generate(model, batch, args.new_tokens) for _ in range(args.repeats)]
            prefill, decode = min(r[0] for r in runs), min(r[1] for r in runs)
            real = int(batch["attention_mask"].sum())
            speed_rows.append(
                (
                    spec,
                    b,
                    batch["input_ids"].shape[1],
                    f"{prefill:.2f}",
                    f"{real / prefill:.0f}",
                    f"{decode * 1000:.0f}",
                    f"{decode * 1000 / b:.1f}",
                )
            )
        del lm, model

    print(
        f"\ntorch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, float32"
    )
    _table(
        [
            "model",
            "class",
            "params",
            "vocab",
            "first prepare s",
            "import s",
            "load (new process) s",
            "load (warm) s",
        ],
        load_rows,
    )
    _table(
        [
            "model",
            "batch",
            "prompt tokens",
            "prefill s",
            "prefill tok/s",
            "decode ms/step",
            "decode ms/token",
        ],
        speed_rows,
    )


def _table(header: list[str], rows: list[tuple]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print()
    for i, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
