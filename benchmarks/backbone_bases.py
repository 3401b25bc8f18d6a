"""How fast would a backbone on another embedded base read posts? The speed half of choosing a bigger base.

The backbone's accuracy plateaued on the 0.5B (docs/backbone.md: 12 or 24 layers, 1,500 or 2,700 steps, the same
validation); the next lever is a bigger base, and the issue's speed target (>= 10 posts/s for three tasks on 2
cores) bounds it. This reads the same validation posts with each base's first N layers, float32 transformers, no
adapter (LoRA merged into the weights costs nothing more), in the order and batches the analyzer uses
(``embed_texts``), and reports posts/s: median of --runs passes of --posts distinct posts each, every base in this
process one after the other, so the bases are compared on the same load.

    OMP_NUM_THREADS=2 MENTALGLM_DATA_DIR=../shared/data python benchmarks/backbone_bases.py \\
        --base embedded:qwen2.5-0.5b:12 --base embedded:qwen2.5-1.5b:14 --out results/backbone/bases.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from mentalglm.evaluate.predict import machine_info, now_iso, timed_passes
from mentalglm.files import atomic_write_text


def measure(base: str, layers: int, texts: list[str], posts: int, runs: int, max_length: int) -> dict[str, Any]:
    from mentalglm.train.backbone_model import embed_texts, load_backbone_base, load_backbone_tokenizer

    started = time.perf_counter()
    tokenizer, model = load_backbone_tokenizer(base), load_backbone_base(base, layers).eval()
    load_s = time.perf_counter() - started
    embed_texts(model, tokenizer, texts[:8], max_length)  # warm-up, not timed
    seconds = timed_passes(texts[8:], posts, runs, lambda chunk: embed_texts(model, tokenizer, chunk, max_length))
    rates = [posts / s for s in seconds]
    return {"base": base, "layers": layers, "load_s": round(load_s, 1), "posts_per_s": [round(r, 2) for r in rates],
            "posts_per_s_median": round(statistics.median(rates), 2),
            "parameters_read": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="append", required=True, help="BASE:LAYERS, e.g. embedded:qwen2.5-1.5b:14")
    parser.add_argument("--posts", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from mentalglm.data.splits import canonical_splits

    splits, _ = canonical_splits("emotion", args.data_dir, include_extra=False)
    texts = [p.text for p in splits["validation"]][: 8 + args.posts * args.runs]
    rows = []
    for spec in args.base:
        base, _, layers = spec.rpartition(":")
        rows.append(measure(base, int(layers), texts, args.posts, args.runs, args.max_length))
        print(json.dumps(rows[-1]), flush=True)
    record = {"measured": now_iso(), "machine": machine_info(), "torch_threads": torch.get_num_threads(),
              "posts": args.posts, "runs": args.runs, "max_length": args.max_length, "bases": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
