"""Speed and memory of the backbone tier's labels, each engine in its own process, measured on this machine.

For each engine (transformers with the adapter merged; llama.cpp on the exported GGUF when there is one):
- cold start: seconds from a fresh process to the first post's labels for every task (imports, weights, heads);
- labels: posts a second for all heads at once, over --runs passes of --posts distinct validation posts each
  (a pass never repeats a post an earlier pass read: the reader remembers its last call), median of the passes;
- peak RSS of the process (ru_maxrss) after the passes.
The issue's targets (2-core CPU): >= 10 posts/s for the three tasks, cold start <= 15 s, peak RSS <= 3 GB.

    OMP_NUM_THREADS=2 python benchmarks/bench_backbone.py --backbone runs/backbone/final --out results/backbone

Writes OUT/bench.json and OUT/bench.md (machine, load, commit, every number).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mentalglm.evaluate.predict import machine_info, now_iso, timed_passes
from mentalglm.files import atomic_write_text


def measure(backbone: Path, engine: str, posts: int, runs: int, data_dir: str | None) -> dict[str, Any]:
    """One engine, in this process (the parent runs each engine in a child of its own)."""
    started = time.perf_counter()
    from mentalglm.train.backbone_model import read_backbone_meta, shared_backbone

    tasks = list(read_backbone_meta(backbone)["tasks"])
    heads = [shared_backbone(backbone, task, engine=engine) for task in tasks]
    for head in heads:
        head.predict(["今天天气不错，出去走走"])
    cold = time.perf_counter() - started

    from mentalglm.train.backbone import backbone_data

    texts = [p.text for d in backbone_data(tasks, data_dir) for p in d.validation]
    texts = list(dict.fromkeys(texts))
    timings = timed_passes(texts, posts, runs, lambda chunk: [head.predict(chunk) for head in heads])
    rates = [posts / t for t in timings]
    return {"engine": heads[0].shared.reader.engine, "tasks": tasks, "cold_start_s": round(cold, 2),
            "posts_per_s": round(statistics.median(rates), 2), "passes": [round(r, 2) for r in rates],
            "posts_per_pass": posts, "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/backbone"))
    parser.add_argument("--engines", default="torch,torch-int8,llamacpp")
    parser.add_argument("--posts", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.backbone, args.child, args.posts, args.runs, args.data_dir)))
        return
    from mentalglm.train.backbone_model import choose_engine

    rows = []
    for engine in args.engines.split(","):
        try:
            choose_engine(args.backbone, engine)
        except Exception as exc:  # noqa: BLE001 - an engine without its files is reported, not measured
            rows.append({"engine": engine, "skipped": str(exc)})
            continue
        child = subprocess.run([sys.executable, __file__, "--backbone", str(args.backbone), "--child", engine,
                                "--posts", str(args.posts), "--runs", str(args.runs),
                                *(["--data-dir", args.data_dir] if args.data_dir else [])],
                               capture_output=True, text=True)
        if child.returncode != 0:  # the child's own error (a missing data directory, a corrupt file), not a trace
            last = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"bench_backbone: the {engine} engine's run failed: {last}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"when": now_iso(), "commit": commit, "machine": machine_info(), "load_1min": os.getloadavg()[0],
              "threads": os.environ.get("OMP_NUM_THREADS"), "backbone": str(args.backbone), "engines": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench.json", json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    lines = [f"# Backbone tier speed ({record['when']}, commit {commit})", "",
             f"Machine: {record['machine'].get('cpu')}, {record['machine'].get('usable_cores')} usable cores; "
             f"1-min load {record['load_1min']:.2f} at the end; OMP_NUM_THREADS={record['threads']}", "",
             "| engine | cold start (s) | posts/s, all heads (median) | passes | peak RSS (GB) |", "|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['engine']} | skipped: {row['skipped']} | | | |")
        else:
            lines.append(f"| {row['engine']} | {row['cold_start_s']} | {row['posts_per_s']} | {row['passes']} | "
                         f"{row['peak_rss_gb']} |")
    atomic_write_text(args.out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
