"""Cost of the cognitive pathway classifier at the size of the real files, measured on this machine.

The real files (about 2,700 training sentences) are not redistributable, so the sentences are synthetic: pairs of
the invented fixture's sentences (tests/fixtures/pathway) joined by a comma behind a filler word, labels the union
of the pair's. They make the training set and the vocabulary the size of the real one, which is what training
time and reading time depend on; they say nothing about accuracy (the fixture's own scores are in docs/pathway.md
and the real files are scored outside the project).

Measured:
- training: `train_pathway` with the given kinds on --train sentences (dev and test a ninth each), wall seconds;
- analysis: `Analyzer(["cognitive_pathway"], "labels").analyze(post)` on posts of --sentences sentences each, all
  sentences distinct (the e5 reader remembers recent texts), median and 90th percentile of --runs posts after
  one warm-up post. The issue's target is <= 1 s for a 10-sentence post with the default (chosen) classifier.

    OMP_NUM_THREADS=1 python benchmarks/bench_pathway.py                         # TF-IDF only
    OMP_NUM_THREADS=1 python benchmarks/bench_pathway.py --kinds tfidf,e5,tfidf+e5 --out results/pathway-bench

Writes OUT/bench.json and OUT/bench.md (machine, load, commit, every number).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import Analyzer
from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.tasks.pathway import with_parents
from mentalglm.train.pathway import train_pathway

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pathway"
FILLERS = ("", "唉，", "说实话，", "今天", "最近", "其实", "后来", "那天", "现在", "总之，", "还有，", "结果")


def synthetic(n: int, rng: random.Random, seen: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``n`` distinct sentences, each a filler and one or two fixture sentences, labelled with their union."""
    base = [(p.text, with_parents(p.labels)) for part in ("train", "dev", "test")
            for p in CognitivePathwayFiles(FIXTURE).load(None, part)[0]]
    out = []
    while len(out) < n:
        picked = rng.sample(base, rng.choice((1, 2)))
        text = rng.choice(FILLERS) + "，".join(t.rstrip("。！？") for t, _ in picked)
        if text not in seen:
            seen.add(text)
            out.append((text, tuple(dict.fromkeys(label for _, labels in picked for label in labels))))
    return out


def write_files(directory: Path, n_train: int, seed: int) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    rng, seen = random.Random(seed), set()
    parts = {"train": synthetic(n_train, rng, seen), "dev": synthetic(n_train // 9, rng, seen),
             "test": synthetic(n_train // 9, rng, seen)}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "label.txt").write_text((FIXTURE / "label.txt").read_text(encoding="utf-8"), encoding="utf-8")
    for part, rows in parts.items():
        (directory / f"{part}.txt").write_text("".join(f"{t}\t{','.join(ls)}\n" for t, ls in rows), encoding="utf-8")
    return parts


def time_analysis(model_dir: Path, posts: list[str]) -> dict[str, Any]:
    analyzer = Analyzer(["cognitive_pathway"], "labels", artifacts_dir=model_dir)
    analyzer.analyze(posts[0])  # warm-up: imports, the e5 engine's first call
    seconds, sentences = [], []
    for post in posts[1:]:
        started = time.perf_counter()
        result = analyzer.analyze(post)
        seconds.append(time.perf_counter() - started)
        sentences.append(len(result.tasks["cognitive_pathway"].sentences or []))
    ordered = sorted(seconds)
    return {"posts": len(seconds), "sentences_read": sorted(set(sentences)),
            "median_s": round(statistics.median(seconds), 4), "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "max_s": round(ordered[-1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2700, help="synthetic training sentences")
    parser.add_argument("--kinds", default="tfidf", help="candidates of `pathway train` (comma-separated)")
    parser.add_argument("--sentences", type=int, default=10, help="sentences a post")
    parser.add_argument("--runs", type=int, default=30, help="posts timed (after one warm-up post)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=Path("results/pathway-bench"))
    parser.add_argument("--embedding-cache", type=Path, default=None,
                        help="reuse e5 embeddings of the training sentences from this SQLite file (train_s then "
                             "leaves out what it already holds; reading time is unaffected: posts are never cached)")
    args = parser.parse_args()

    reused = args.embedding_cache is not None and args.embedding_cache.is_file()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parts = write_files(root / "files", args.train, args.seed)
        started = time.perf_counter()
        cache = None
        if args.kinds != "tfidf":
            from mentalglm.train.embedding import EmbeddingCache

            # a fresh cache unless asked: embedding time is then part of training
            cache = EmbeddingCache(args.embedding_cache or root / "embeddings.sqlite")
        _, card = train_pathway(root / "files", root / "model", kinds=args.kinds.split(","), n_resamples=0,
                                log=lambda _: None, embedding_cache=cache)
        train_s = time.perf_counter() - started
        rng, seen = random.Random(args.seed + 1), {t for rows in parts.values() for t, _ in rows}
        sentences = [t for t, _ in synthetic(args.sentences * (args.runs + 1), rng, seen)]
        posts = ["。".join(sentences[i:i + args.sentences]) + "。" for i in range(0, len(sentences), args.sentences)]
        analysis = time_analysis(root / "model", posts)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    result = {
        "date": now_iso(), "commit": commit, "machine": machine_info(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MENTALGLM_THREADS")},
        "data": "synthetic: pairs of the invented fixture's sentences (timing only, no accuracy)",
        "train_sentences": card["data"]["sentences"], "kinds": args.kinds, "chosen": card["model"]["kind"],
        "train_s": round(train_s, 2), "embedding_cache_reused": reused, "candidates": [{k: c[k] for k in c if k != "thresholds"}
                                                      for c in card["selection"]["candidates"]],
        "analysis": {"sentences_per_post": args.sentences, **analysis}, "target_s_per_10_sentence_post": 1.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench.json", json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# Cognitive pathway benchmark ({result['date']}, commit {commit})", "",
             f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, load {result['load_avg_1m']} (1 min), "
             f"threads {result['threads']}. Data: {result['data']}.", "",
             f"- training on {result['train_sentences']} sentences, kinds {args.kinds}: {result['train_s']} s "
             f"(chosen: {result['chosen']})",
             f"- analysis of a {args.sentences}-sentence post: median {analysis['median_s']} s, p90 {analysis['p90_s']} s, "
             f"max {analysis['max_s']} s over {analysis['posts']} posts (target <= 1 s)"]
    atomic_write_text(args.out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
