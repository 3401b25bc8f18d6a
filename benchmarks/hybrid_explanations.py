"""How good are the hybrid engine's LLM explanations? Per task, over the first N validation posts (never test).

The hybrid engine as it runs: on llama.cpp the explanation is generated under a per-post grammar that states the
decided label and copies its quote from the clauses the classifier relied on (instruct/grounding.py); an
explanation that fails QC or the verifier is redrawn (twice by default), then replaced by the attribution sentence. Counted
per task: who wrote the shown explanation (llm_grounded / attribution_fallback / attribution for "nothing
evident"), the share of LLM explanations kept (passed QC and the verifier, or the verifier abstained), whether every quote
of a shown explanation occurs in the post (and how many quote nothing: the attribution sentence when no clause
alone carries the decision), the TF-IDF verifier on a kept explanation's prose alone (without the
label sentence the grammar writes), redraws, and the seconds of one task's analysis with its explanation
(median over posts, one post at a time). Explanations quote dataset posts, so none is written to the results.
``--regenerate N`` allows N redraws; ``kept_within_attempts`` says what each smaller limit would have kept (the first
draws are the same whatever the limit).

    MENTALGLM_THREADS=2 MENTALGLM_DATA_DIR=../shared/data python benchmarks/hybrid_explanations.py --per-task 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import REDRAWS, Analyzer
from mentalglm.analyze.engines import verdict_on
from mentalglm.backends import create_backend
from mentalglm.data.splits import canonical_splits
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.instruct.grounding import reason_only
from mentalglm.instruct.qc import DEFINITIONS, grounded_share
from mentalglm.tasks import CHINESE_MAIN_TASKS, get_task


def measure(analyzer: Analyzer, task_id: str, posts: list[str]) -> dict[str, Any]:
    task = get_task(task_id)
    rows, seconds = [], []
    for post in posts:
        started = time.perf_counter()
        result = analyzer.analyze(post).tasks[task_id]  # type: ignore[union-attr]
        seconds.append(time.perf_counter() - started)
        labels = [label.id for label in result.labels]
        prose = reason_only(task, labels, result.explanation or "")
        alone = verdict_on(analyzer.models, task, labels, prose, post).checks.get("verifier") \
            if result.explanation_source in ("llm_grounded", "llm") else None
        rows.append({"source": result.explanation_source, "qc": bool(result.qc_passed),
                     "quotes": grounded_share(result.explanation or "", post, task),
                     "verifier": result.verifier_agrees, "reader": result.verifier_reader,
                     "verifier_prose_alone": alone, "attempts": result.attempts,
                     "explanation": result.explanation, "fallback_reason": result.fallback_reason})
    llm = [r for r in rows if r["source"] in ("llm_grounded", "llm", "attribution_fallback")]  # the LLM was asked

    def share(key: str, among: list[dict[str, Any]]) -> float | None:
        """Of the rows where ``key`` was measured (None: the verifier abstained, or nothing to measure)."""
        read = [r for r in among if r[key] is not None]
        return round(sum(bool(r[key]) for r in read) / len(read), 4) if read else None

    kept = [r for r in rows if r["source"] in ("llm_grounded", "llm")]
    return {"posts": len(rows), "llm_asked": len(llm),
            "sources": {s: sum(r["source"] == s for r in rows) for s in sorted({str(r["source"]) for r in rows})},
            "llm_kept": round(len(kept) / len(llm), 4) if llm else None,
            "kept_qc_passed": share("qc", kept),
            # of the kept explanations the verifier read (it abstains on one that affirms nothing but denials)
            "kept_verifier_agrees": share("verifier", kept),
            "kept_verifier_abstained": sum(r["verifier"] is None for r in kept),
            # of those, read by the task's definitions (an explanation that argues only by denial), not the TF-IDF
            "kept_read_by_definitions": sum(r["reader"] == DEFINITIONS for r in kept),
            # issue 17's "verifier agrees": of every kept explanation, an abstention counted as not agreeing
            "kept_verifier_agrees_of_all": round(sum(r["verifier"] is True for r in kept) / len(kept), 4) if kept else None,
            "kept_verifier_prose_alone": share("verifier_prose_alone", kept),
            # of the shown explanations that quote the post (not the "nothing evident" sentence): every quote found
            "shown_quotes_found": share("quotes_found", [{"quotes_found": r["quotes"] == 1.0} for r in rows
                                                          if r["source"] != "attribution" and r["quotes"] is not None]),
            "shown_quoting_nothing": sum(r["source"] != "attribution" and r["quotes"] is None for r in rows),
            "regenerated": round(sum(r["attempts"] > 1 for r in llm) / len(llm), 4) if llm else None,
            # what fewer redraws would have kept: attempts 1..n are the same draws (same seeds) whatever the limit
            "kept_within_attempts": {n: round(sum(r["attempts"] <= n for r in kept) / len(llm), 4) if llm else None
                                     for n in range(1, 1 + max((r["attempts"] for r in llm), default=1))},
            "seconds_median": round(statistics.median(seconds), 2), "seconds_mean": round(statistics.mean(seconds), 2),
            "fallback_reasons": [r["fallback_reason"] for r in rows if r["fallback_reason"]][:10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--backend", default="llamacpp:default")
    parser.add_argument("--artifacts-dir", type=Path, default=None,
                        help="the analyzer that decides (default: the embedded default analyzer)")
    parser.add_argument("--per-task", type=int, default=50)
    parser.add_argument("--tasks", nargs="*", default=list(CHINESE_MAIN_TASKS))
    parser.add_argument("--out", type=Path, default=Path("results/analyze-bench/hybrid-explanations.json"))
    parser.add_argument("--regenerate", type=int, default=REDRAWS,
                        help=f"redraws after a failed explanation (the analyzer's default: {REDRAWS})")
    args = parser.parse_args()
    backend = create_backend(args.backend)
    rows: dict[str, Any] = {}
    for task_id in args.tasks:
        analyzer = Analyzer([task_id], "hybrid", backend=backend, artifacts_dir=args.artifacts_dir,
                            regenerate=args.regenerate)
        validation = canonical_splits(task_id, args.data_dir, include_extra=False)[0]["validation"]
        rows[task_id] = measure(analyzer, task_id, [p.text for p in validation[:args.per_task]])
        print(task_id, json.dumps(rows[task_id], ensure_ascii=False), flush=True)
    record = {"date": now_iso(), "machine": machine_info(), "threads": os.environ.get("MENTALGLM_THREADS"),
              "backend": backend.model_id, "analyzer": str(args.artifacts_dir or "default"), "split": "validation", "per_task": args.per_task, "regenerate": args.regenerate,
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2, ensure_ascii=False))
    backend.close()


if __name__ == "__main__":
    main()
