"""The analyzer against the targets of the main job (issue #6), measured on this machine.

For each engine asked for (labels, attribution, hybrid):
- throughput of the Python API over test posts of the three tasks, all three tasks a post (median of --runs);
- cold start: `mentalglm analyze "<post>" --engine E --json` in a fresh process, wall time and peak RSS
  (median of --cold-runs);
- a file run: `mentalglm analyze --input posts.txt --output out.jsonl --engine E`, wall and peak RSS;
- for engines that explain: the share of task results with an explanation and with evidence spans.
And once, the label quality on the full canonical test splits (the labels every engine but `llm` reports).

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/bench_analyze.py --engines labels,attribution
    ... --engines hybrid --posts 6 --runs 1 --cold-runs 1          # the LLM explains: minutes a post here
    ... --artifacts-dir ~/.cache/mentalglm/analyzer-ensemble --out results/analyze-bench/ensemble   # another tier

Writes results/analyze-bench/<engine>.json and bench.md (the machine, its load, the commit, every number).
The classifiers must be built first (`mentalglm analyze-train`). Test splits are only read, never tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mentalglm.analyze.artifacts import ENV_VAR, default_artifacts_dir, model_paths
from mentalglm.analyze.engine import Analyzer
from mentalglm.data.records import Post
from mentalglm.data.splits import canonical_splits
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.tasks import CHINESE_MAIN_TASKS, get_task
from mentalglm.tasks.metrics import score

TARGETS = {"emotion": 0.78, "cognitive_distortion": 0.78, "suicide_risk": 0.85}
COLD_POST = "最近每天晚上都睡不着，觉得自己什么都做不好，活着好累。"


def cli() -> list[str]:
    return [sys.executable, "-c", "from mentalglm.cli import main; main()"]


def run_measured(command: list[str]) -> dict[str, Any]:
    """Wall seconds and peak RSS (MiB) of one child process; its exit status must be 0."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed: {stderr.decode(errors='replace')[-2000:]}")
    return {"wall_s": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": stdout}


def test_splits(data_dir: str | None) -> dict[str, list[Post]]:
    """Each main task's canonical test split, read once for both the throughput input and the quality score."""
    return {task_id: canonical_splits(task_id, data_dir, include_extra=False)[0]["test"]
            for task_id in CHINESE_MAIN_TASKS}


def test_posts(tests: dict[str, list[Post]], per_task: int) -> list[str]:
    """The first ``per_task`` test posts of each main task: the throughput input (all tasks run on each)."""
    return [p.text for posts in tests.values() for p in posts[:per_task]]


def classifier_kinds() -> dict[str, str]:
    """What each task's classifier is (from its card): which tier the numbers belong to."""
    directory = default_artifacts_dir()
    return {t: json.loads(model_paths(directory, t)[1].read_text(encoding="utf-8"))["model"]["kind"]
            for t in CHINESE_MAIN_TASKS if model_paths(directory, t)[1].is_file()}


def label_quality(tests: dict[str, list[Post]]) -> dict[str, Any]:
    """The official metric of each task on its whole canonical test split, as the analyzer decides labels."""
    out: dict[str, Any] = {}
    for task_id in CHINESE_MAIN_TASKS:
        task, test = get_task(task_id), tests[task_id]
        with Analyzer([task_id], "labels") as analyzer:
            decided = [tuple(label.id for label in r.tasks[task_id].labels)
                       for r in analyzer.analyze_many([p.text for p in test], batch_size=256)]  # type: ignore[union-attr]
        metrics = score(task, [p.labels for p in test], decided, n_resamples=200)
        low, high = metrics["ci95"][task.official_metric]
        out[task_id] = {"metric": task.official_metric, "value": round(metrics[task.official_metric], 4),
                        "ci95": [round(low, 4), round(high, 4)], "n": metrics["n"],
                        "target": TARGETS[task_id]}
    return out


def throughput(engine: str, posts: list[str], runs: int, batch_size: int) -> dict[str, Any]:
    with Analyzer(engine=engine) as analyzer:  # type: ignore[arg-type]
        analyzer.analyze(posts[0])  # load lazily-created parts (the LLM) outside the timing
        rates, results = [], []
        for _ in range(runs):
            started = time.perf_counter()
            results = list(analyzer.analyze_many(posts, batch_size=batch_size))
            rates.append(len(posts) / (time.perf_counter() - started))
    task_results = [t for r in results for t in r.tasks.values()]  # type: ignore[union-attr]
    explained = [t for t in task_results if t.explanation]
    return {"posts": len(posts), "runs": runs, "posts_per_s_median": round(statistics.median(rates), 2),
            "posts_per_s_all": [round(r, 2) for r in rates],
            "explained_share": round(len(explained) / len(task_results), 4),
            "with_evidence_share": round(sum(bool(t.evidence) for t in task_results) / len(task_results), 4),
            "verifier_agrees_share": (round(sum(bool(t.verifier_agrees) for t in explained) / len(explained), 4)
                                      if explained and any(t.verifier_agrees is not None for t in explained) else None),
            "high_risk_share": round(sum(r.high_risk for r in results) / len(results), 4)}  # type: ignore[union-attr]


def cold_and_file(engine: str, posts: list[str], cold_runs: int) -> dict[str, Any]:
    cold = [run_measured([*cli(), "analyze", COLD_POST, "--engine", engine, "--json"]) for _ in range(cold_runs)]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "posts.txt"
        source.write_text("\n".join(p.replace("\n", " ") for p in posts) + "\n", encoding="utf-8")
        file_run = run_measured([*cli(), "analyze", "--input", str(source), "--output", str(Path(tmp) / "out.jsonl"),
                                 "--engine", engine])
        written = sum(1 for _ in (Path(tmp) / "out.jsonl").open(encoding="utf-8"))
    return {"cold_start_s_median": statistics.median(c["wall_s"] for c in cold),
            "cold_start_s_all": [c["wall_s"] for c in cold],
            "cold_peak_rss_mib": max(c["peak_rss_mib"] for c in cold),
            "file_run": {"posts": len(posts), "written": written, "wall_s": file_run["wall_s"],
                         "posts_per_s": round(len(posts) / file_run["wall_s"], 2),
                         "peak_rss_mib": file_run["peak_rss_mib"]}}


def launcher(record: dict[str, Any]) -> str:
    """The benchmark process's own peak when it started the children: their peak cannot be read below it."""
    value = record.get("launcher_peak_rss_mib")
    return f" (launcher {value})" if value is not None else ""


def markdown(out: Path) -> str:
    """Every result file in ``out`` (engines measured in separate runs accumulate), one table each."""
    machine = machine_info()
    lines = ["# Analyzer benchmark (benchmarks/bench_analyze.py)", "",
             f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores. Each row says when it ran, the "
             "load average at its start (another job on the machine slows it) and MENTALGLM_THREADS.", ""]
    quality_file = out / "quality.json"
    if quality_file.is_file():
        measured = json.loads(quality_file.read_text(encoding="utf-8"))
        lines += ["Classifiers (from their model cards):", "",
                  *[f"- {t}: {kind}" for t, kind in measured.get("classifiers", {}).items()], ""]
        lines += [f"Label quality on the full test splits ({measured['date']}, commit {measured['commit']}):", "",
                  "| task | official metric (test) | 95% CI | n | target |", "|---|---|---|---|---|"]
        lines += [f"| {t} | {q['metric']} {q['value']:.3f} | {q['ci95']} | {q['n']} | ≥ {q['target']} |"
                  for t, q in measured["quality"].items()]
        lines.append("")
    lines += ["| engine | posts/s (API, median) | cold start s (median) | cold peak RSS MiB | file run posts/s (incl. start) | "
              "file peak RSS MiB | explained | with evidence | date, commit | load, threads |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        if "engine" not in r:  # quality.json, or another benchmark's file in the same folder
            continue
        lines.append(f"| {r['engine']} | {r['posts_per_s_median']} ({r['posts']} posts × {r['runs']}) | "
                     f"{r['cold_start_s_median']} | {r['cold_peak_rss_mib']}{launcher(r)} | {r['file_run']['posts_per_s']} | "
                     f"{r['file_run']['peak_rss_mib']} | {r['explained_share']:.0%} | {r['with_evidence_share']:.0%} | "
                     f"{r['date']}, {r['commit']} | {r['load_average'][0]}, {r['machine']['threads_env']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--engines", default="labels,attribution", help="comma-separated: labels,attribution,hybrid")
    parser.add_argument("--posts", type=int, default=300, help="throughput posts, split across the three tasks")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-quality", action="store_true", help="do not score the full test splits")
    parser.add_argument("--out", type=Path, default=Path("results/analyze-bench"))
    parser.add_argument("--artifacts-dir", type=Path, default=None,
                        help=f"classifiers to measure (default ${ENV_VAR} or ~/.cache/mentalglm/analyzer)")
    args = parser.parse_args()
    if args.artifacts_dir:  # the cold-start and file-run children read it too
        os.environ[ENV_VAR] = str(args.artifacts_dir.expanduser())

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"date": now_iso(), "commit": commit or "?", "machine": machine_info(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "classifiers": classifier_kinds()}
    tests = test_splits(args.data_dir)
    posts = test_posts(tests, max(1, args.posts // len(CHINESE_MAIN_TASKS)))
    args.out.mkdir(parents=True, exist_ok=True)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    # Children first, while this process holds no model: on Linux a child's peak RSS (ru_maxrss) starts from
    # the size of the process it was forked from, so a launcher with models loaded inflated the cold-start peak
    # (measured: 2.5 GB against 1.8 GB for the ensemble tier). The launcher's own peak is recorded beside it.
    launched = {}
    for engine in engines:
        launcher = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        launched[engine] = {**cold_and_file(engine, posts, args.cold_runs), "launcher_peak_rss_mib": launcher}
    for engine in engines:
        record = {**throughput(engine, posts, args.runs, args.batch_size), **launched[engine]}
        atomic_write_text(args.out / f"{engine}.json", json.dumps({**meta, "engine": engine, **record}, indent=2))
        print(engine, json.dumps(record), flush=True)
    quality = None if args.skip_quality else label_quality(tests)
    if quality:
        atomic_write_text(args.out / "quality.json", json.dumps({**meta, "quality": quality}, indent=2))
    atomic_write_text(args.out / "bench.md", markdown(args.out))
    print((args.out / "bench.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
