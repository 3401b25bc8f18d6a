"""What `--concurrency N` buys `mentalglm predict` and `mentalglm build` against a server that answers after 200 ms.

A vLLM or SGLang server answers a batch of concurrent requests in about the time of one, so the client's
requests in flight decide the throughput. This runs the real commands (subprocesses, as a user would) against
the stub server (`mentalglm.backends.stub_server`, a separate process answering every request after
``--delay-ms``), with N = 1 and N = 8, ``--runs`` times each, and checks that the outputs are identical.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/bench_concurrency.py            # 100 posts, 3 runs
    python benchmarks/bench_concurrency.py --posts 40 --runs 1 --out /tmp/conc.json       # a quick look

posts/s is the command's own count (predict: rows / seconds of the prediction loop in the .meta.json; build:
posts / seconds of the generation and QC loop in qc_report.json), so start-up (imports, loading the split)
is reported apart, as the wall time of the whole command. Writes results/concurrency/concurrency.json and
.md. Post texts never leave the temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mentalglm.evaluate.predict import machine_info
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task

TASK = "suicide_risk"
LABELS = [label.zh for label in get_task(TASK).labels]
REPO = Path(__file__).resolve().parents[1]


def reply(messages: Sequence[Mapping[str, str]]) -> str:
    """A deterministic answer in the layout each client reads: a grounded explanation for the builder's
    teacher prompt, a C-IMHI answer (label line, reason line) for predict's prompt."""
    user = messages[-1]["content"]
    post = (re.findall(r"帖子：“(.*?)”", user, re.S) or [""])[-1]
    quote = post[:24].strip() or "帖子"
    if "专家标注：" in user:
        gold = re.findall(r"专家标注：(\S+)", user)[-1]
        return (f"帖子中“{quote}”是作者的原话，这句话直接反映了作者当前的处境与感受，"
                f"与{gold}的定义相符，因此该帖子应标注为{gold}。")
    label = LABELS[int(hashlib.sha256(post.encode()).hexdigest(), 16) % len(LABELS)]
    return f"标签：{label}\n推理：帖子中“{quote}”是判断的主要依据。"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The stub in its own process, so its threads do not share the client's interpreter."""

    def __init__(self, delay_ms: float) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), "--delay-ms", str(delay_ms)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # the "serving at" line: it listens
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mentalglm.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mentalglm {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _predict(work: Path, n: int, run: int, posts: int, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"predict-n{n}-run{run}.jsonl"
    wall = _run(["predict", "--task", TASK, "--backend", "openai:stub", "--split", "test", "--limit", str(posts),
                 "--concurrency", str(n), "--out", str(out), "--name", "stub"], env)
    meta = json.loads(out.with_name(out.stem + ".meta.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    comparable = [{k: v for k, v in row.items() if k != "latency_s"} for row in rows]
    return {"posts": meta["written"], "posts_per_s": meta["posts_per_s"], "loop_s": meta["seconds"], "wall_s": wall,
            "digest": hashlib.sha256(json.dumps(comparable, ensure_ascii=False).encode()).hexdigest()}


def _build(work: Path, n: int, run: int, posts: int, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"build-n{n}-run{run}"
    wall = _run(["build", "--tasks", TASK, "--per-task", str(posts), "--teacher", "openai:stub", "--verifier", "none",
                 "--concurrency", str(n), "--out", str(out), "--format", "chat"], env)
    report = json.loads((out / "qc_report.json").read_text(encoding="utf-8"))
    exported = sorted(out.glob("*.jsonl"))
    digest = hashlib.sha256()
    for path in [*exported, out / "qc_log.jsonl"]:
        digest.update(path.read_bytes())
    row = report["tasks"][TASK]
    return {"posts": row["requested"], "accepted": row["accepted"], "generated": row["generated"],
            "posts_per_s": report["posts_per_s"], "loop_s": report["seconds"], "wall_s": wall,
            "digest": digest.hexdigest()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_posts_per_s": round(statistics.median(r["posts_per_s"] for r in runs), 3),
            "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "median_startup_s": round(statistics.median(r["wall_s"] - r["loop_s"] for r in runs), 2),
            "runs": runs}


def benchmark(posts: int, runs: int, delay_ms: float, concurrencies: Sequence[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"task": TASK, "posts": posts, "runs": runs, "server_delay_ms": delay_ms,
                               "machine": machine_info(), "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
                               "commands": {}}
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        work = Path(tmp)
        for command, one in (("predict", _predict), ("build", _build)):
            per_n: dict[str, Any] = {}
            for n in concurrencies:
                server = Server(delay_ms)
                env = {**os.environ, "MENTALGLM_OPENAI_BASE_URL": server.url, "OMP_NUM_THREADS": "1"}
                env.pop("OPENAI_API_KEY", None)
                try:
                    measured = [one(work, n, run, posts, env) for run in range(runs)]
                    stats = server.stats()
                finally:
                    server.stop()
                per_n[str(n)] = {**_summary(measured), "server": stats}
                print(f"{command} N={n}: {per_n[str(n)]['median_posts_per_s']} posts/s (median of {runs}), "
                      f"server saw {stats['requests']} requests, at most {stats['max_in_flight']} at once", flush=True)
            digests = {r["digest"] for entry in per_n.values() for r in entry["runs"]}
            low, high = str(min(concurrencies)), str(max(concurrencies))
            results["commands"][command] = {
                "by_concurrency": per_n, "identical_outputs": len(digests) == 1,
                "speedup": round(per_n[high]["median_posts_per_s"] / per_n[low]["median_posts_per_s"], 2)}
    return results


def markdown(results: dict[str, Any]) -> str:
    values = [n for entry in results["commands"].values() for n in entry["by_concurrency"]]
    flag = "" if sorted(set(values), key=int) == ["1", "8"] else f" --concurrency {','.join(dict.fromkeys(values))}"
    lines = [f"# Concurrency against a server that answers after {results['server_delay_ms']:.0f} ms", "",
             f"`python benchmarks/bench_concurrency.py --posts {results['posts']} --runs {results['runs']}{flag}`; "
             f"{results['task']} posts (predict: the test split, at most {results['posts']}; build: {results['posts']} "
             f"training posts), median of {results['runs']} runs; machine: {results['machine']['cpu']}, "
             f"{results['machine']['usable_cores']} usable cores shared with other jobs (load "
             f"{results['load_avg_1min_at_start']} at start).", "",
             "| command | N | posts | posts/s | speed-up | wall s (whole command) | start-up s | requests (all runs) | "
             "max in flight | identical outputs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for command, entry in results["commands"].items():
        base = None
        for n, row in entry["by_concurrency"].items():
            base = base or row["median_posts_per_s"]
            lines.append(f"| {command} | {n} | {row['runs'][0]['posts']} | {row['median_posts_per_s']} | "
                         f"{row['median_posts_per_s'] / base:.2f}x | {row['median_wall_s']} | {row['median_startup_s']} | "
                         f"{row['server']['requests']} | {row['server']['max_in_flight']} | {entry['identical_outputs']} |")
    lines += ["", "posts/s is the command's own count over its loop (predict: rows / seconds in the .meta.json; "
              "build: posts / seconds of generation and QC in qc_report.json); start-up is the rest of the wall "
              "time (imports, loading the split, the PII dictionary; for build also the export, which scrubs every "
              "accepted sample again). build asks again for posts whose "
              "explanation failed QC, so it sends more requests than it has posts."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated values of N")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "concurrency" / "concurrency.json")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the --out JSON")
    args = parser.parse_args()
    if args.render:
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.read_text(encoding="utf-8"))))
        return
    if args.serve:
        from mentalglm.backends.stub_server import main as serve

        serve(["--port", str(args.serve), "--delay-ms", str(args.delay_ms)], reply=reply)
        return
    results = benchmark(args.posts, args.runs, args.delay_ms, [int(n) for n in args.concurrency.split(",")])
    atomic_write_text(args.out, json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
