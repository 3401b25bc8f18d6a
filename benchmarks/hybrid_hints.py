"""Does telling the LLM which clauses the classifier relied on make hybrid explanations better grounded?

Runs the hybrid engine twice over the same validation posts (never test), with and without evidence hints,
and counts per task: explanations that pass QC, that quote the post (evidence spans), that the verifier reads
as the decided label, regenerations, and seconds a post. Same backend, greedy first attempt.

    MENTALGLM_THREADS=1 MENTALGLM_DATA_DIR=../shared/data python benchmarks/hybrid_hints.py --per-task 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import Analyzer
from mentalglm.backends import create_backend
from mentalglm.data.splits import canonical_splits
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.tasks import CHINESE_MAIN_TASKS


def run(backend: Any, task_id: str, posts: list[str], hints: bool) -> dict[str, Any]:
    analyzer = Analyzer([task_id], "hybrid", backend=backend, evidence_hints=hints)
    started = time.perf_counter()
    results = [r.tasks[task_id] for r in analyzer.analyze_many(posts, batch_size=1)]  # type: ignore[union-attr]
    seconds = time.perf_counter() - started
    n = len(results)
    return {"posts": n, "qc_passed": sum(bool(r.qc_passed) for r in results) / n,
            "with_evidence": sum(bool(r.evidence) for r in results) / n,
            "verifier_agrees": sum(bool(r.verifier_agrees) for r in results) / n,
            "regenerated": sum(r.attempts > 1 for r in results) / n, "s_per_post": round(seconds / n, 2),
            "qc_reasons": sorted({reason.split(":")[0] for r in results for reason in r.qc_reasons})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--backend", default="llamacpp:default")
    parser.add_argument("--per-task", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/analyze-bench/hybrid-hints.json"))
    args = parser.parse_args()
    backend = create_backend(args.backend)
    rows: dict[str, Any] = {}
    for task_id in CHINESE_MAIN_TASKS:
        validation = canonical_splits(task_id, args.data_dir, include_extra=False)[0]["validation"]
        posts = [p.text for p in validation[:args.per_task]]
        rows[task_id] = {name: run(backend, task_id, posts, hints) for name, hints in (("hints", True),
                                                                                      ("no_hints", False))}
        print(task_id, json.dumps(rows[task_id], ensure_ascii=False), flush=True)
    record = {"date": now_iso(), "machine": machine_info(), "backend": backend.model_id, "split": "validation",
              "per_task": args.per_task, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2, ensure_ascii=False))
    backend.close()


if __name__ == "__main__":
    main()
