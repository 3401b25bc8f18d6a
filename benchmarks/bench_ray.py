"""The Ray Data path against the single process: the same `mentalglm analyze` command with and without `--ray`.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/bench_ray.py                    # 20,000 posts, 3 runs each
    python benchmarks/bench_ray.py --posts 2000 --runs 1 --out /tmp/ray.json             # a quick look

Posts are the first ``--posts`` SMP2020-EWECT posts of the data directory (written to a temporary folder, never
kept), analysed by the labels engine of the default analyzer (~/.cache/mentalglm/analyzer). Each run is a fresh
command, local and Ray runs alternating; every Ray output must equal the local one byte for byte. Reported:
posts/s over the runner's own seconds and over the whole command, the start-up before the first results (Ray
starts a local cluster and two actors that each load the classifiers), and the ratio Ray / local. On a machine
with two cores and other jobs the ratio says what Ray costs here, not what it gives on a cluster; the load
average is recorded with the numbers. Writes results/ray/ray.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mentalglm.evaluate.predict import machine_info
from mentalglm.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def write_posts(path: Path, n: int, data_dir: str | None) -> None:
    from mentalglm.data.datadir import resolve_data_dir
    from mentalglm.data.registry import get_loader

    loader = get_loader("smp2020_ewect")
    directory = resolve_data_dir(data_dir)
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        for part in loader.part_names:
            loaded = loader.load(directory, part)
            for post in loaded[0] if isinstance(loaded, tuple) else loaded:
                if written == n:
                    return
                handle.write(json.dumps({"id": post.id, "text": post.text}, ensure_ascii=False) + "\n")
                written += 1
    if written < n:
        raise SystemExit(f"only {written} SMP2020 posts in {directory}, asked for {n}")


def one_run(source: Path, out: Path, ray: bool, actors: int, chunk_rows: int) -> dict[str, Any]:
    report = out.with_suffix(".report.json")
    command = [sys.executable, "-m", "mentalglm.cli", "analyze", "--input", str(source), "--output", str(out),
               "--engine", "labels", "--keep-going", "--report", str(report)]
    if ray:
        command += ["--ray", "local", "--ray-actors", str(actors), "--chunk-rows", str(chunk_rows)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(report.read_text(encoding="utf-8"))
    return {"wall_s": round(wall, 2), "runner_s": summary["seconds"], "rows": summary["rows"],
            "posts_per_s": summary["posts_per_s"], "posts_per_s_wall": round(summary["rows"] / wall, 2),
            "process_start_s": round(wall - summary["seconds"], 2), "ray_first_results_s": summary["first_results_s"],
            "load_avg_1min": round(load, 2)}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def benchmark(posts: int, runs: int, actors: int, chunk_rows: int, data_dir: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        source = work / "posts.jsonl"
        write_posts(source, posts, data_dir)
        measured: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
        reference: bytes | None = None
        identical = True
        for run in range(runs):
            for kind in ("local", "ray"):
                out = work / f"{kind}-{run}.jsonl"
                measured[kind].append(one_run(source, out, kind == "ray", actors, chunk_rows))
                data = out.read_bytes()
                reference = reference if reference is not None else data
                identical = identical and data == reference
                print(kind, run, measured[kind][-1], flush=True)
    summary = {kind: {key: median(rows, key) for key in ("posts_per_s", "posts_per_s_wall", "wall_s", "runner_s",
                                                         "process_start_s", "ray_first_results_s")}
               for kind, rows in measured.items()}
    return {"posts": posts, "runs": runs, "engine": "labels", "actors": actors, "chunk_rows": chunk_rows,
            "identical_results": identical, "machine": machine_info(),
            "ratio_ray_over_local": {"posts_per_s": round(summary["ray"]["posts_per_s"] /
                                                          summary["local"]["posts_per_s"], 3),
                                     "posts_per_s_wall": round(summary["ray"]["posts_per_s_wall"] /
                                                               summary["local"]["posts_per_s_wall"], 3)},
            "median": summary, "runs_measured": measured}


def markdown(result: dict[str, Any]) -> str:
    local, ray = result["median"]["local"], result["median"]["ray"]
    loads = [r["load_avg_1min"] for rows in result["runs_measured"].values() for r in rows]
    return "\n".join([
        f"# Ray Data ({result['actors']} actors) against one process: {result['posts']:,} posts, labels engine", "",
        f"`python benchmarks/bench_ray.py --posts {result['posts']} --runs {result['runs']}`; median of "
        f"{result['runs']} runs each, alternating; {result['machine']['cpu']}, {result['machine']['usable_cores']} "
        f"usable cores shared with other jobs (1-min load average {min(loads)}-{max(loads)} at the runs' starts).", "",
        "| runner | posts/s (runner) | posts/s (whole command) | whole command s | of which process start s | "
        "Ray: first results written after s |", "|---|---|---|---|---|---|",
        f"| one process | {local['posts_per_s']} | {local['posts_per_s_wall']} | {local['wall_s']} | "
        f"{local['process_start_s']} | - |",
        f"| Ray, {result['actors']} actors | {ray['posts_per_s']} | {ray['posts_per_s_wall']} | {ray['wall_s']} | "
        f"{ray['process_start_s']} | {ray['ray_first_results_s']} |", "",
        f"Ray / one process: {result['ratio_ray_over_local']['posts_per_s']}x (runner), "
        f"{result['ratio_ray_over_local']['posts_per_s_wall']}x (whole command). "
        f"Identical results: {result['identical_results']}.",
        "", "\"runner\" counts from the start of the batch (for Ray: `ray.init`, the actors loading the models, "
        "the pipeline) to the last result written; \"process start\" is the rest of the command (imports, the "
        "driver's own analyzer, which it loads to check the artifacts and fingerprint the results). \"First "
        "results written\" is Ray's start-up plus the time to analyse the first chunks (results are written in "
        "input order, a chunk at a time): it is not the start-up alone; run this with a few hundred posts for that.",
        ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=1000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "ray" / "ray.json")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the --out JSON")
    args = parser.parse_args()
    if args.render:
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.read_text(encoding="utf-8"))))
        return
    result = benchmark(args.posts, args.runs, args.actors, args.chunk_rows, args.data_dir)
    atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
