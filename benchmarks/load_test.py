"""A bounded loopback load test of `mentalglm serve`: latency percentiles, throughput, errors, server memory.

    # labels only (starts `mentalglm serve --engine labels` on a free loopback port): 32 clients, 2,000 requests
    OMP_NUM_THREADS=1 python benchmarks/load_test.py --modes labels
    # both modes on the default hybrid engine (the LLM writes explanations: ~1 post/s on CPU, so 50 requests)
    MENTALGLM_THREADS=2 python benchmarks/load_test.py --modes labels,explain
    # a server you started yourself (loopback only); give its pid for the memory columns
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --server-pid 12345 --modes labels

Each request is `POST /v1/analyze` with ``--posts-per-request`` posts and ``explain: false`` (labels) or
``explain: true`` (explain). Posts are synthetic Chinese sentences made here from a seeded template grammar
(no dataset rows), or ``--posts FILE`` (.txt/.csv/.jsonl, read like `mentalglm analyze --input`). The run is
bounded: a fixed number of requests per mode, each mode stopped after ``--max-seconds``, and only loopback
addresses are accepted as targets. Client and server share the machine's cores, so the numbers are for this
machine with its load generator on it; the report records the CPU, core count and load average.
Writes ``load-<time>.json`` and ``.md`` to ``--out`` (default results/load/); the server's log is kept (in the
temporary folder) only when the server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

MODES = ("labels", "explain")
ENV_SHOWN = ("OMP_NUM_THREADS", "MENTALGLM_THREADS", "MENTALGLM_ANALYZER_DIR")  # they change the numbers
_SUBJECTS = ["我", "今天我", "最近我", "这几天我", "其实我", "昨晚我", "下班后我", "周末我"]
_EVENTS = ["加班到十一点", "考试没考好", "和室友吵了一架", "面试又没通过", "收到了朋友寄来的礼物", "在地铁上被人挤了一路",
           "陪妈妈去医院复查", "一个人在出租屋里吃泡面", "终于把论文交上去了", "被领导当着大家的面批评",
           "养的猫生病了", "看了一场很好笑的电影", "排了两个小时的队", "和喜欢的人聊了一晚上"]
_FEELINGS = ["心里特别难受", "开心得睡不着", "气得手都在抖", "觉得有点累", "感觉什么都提不起劲", "有点害怕明天",
             "突然很想哭", "整个人都放松了", "说不出来的烦躁", "觉得自己一无是处", "还挺满足的", "心跳得好快"]
_TAILS = ["。", "，不知道该跟谁说。", "，希望明天会好一点。", "，哈哈哈。", "，真的受够了。", "，算了不想了。",
          "，有没有人懂这种感觉？", "，晚安吧。", "，生活还要继续。", "，脑子一直停不下来。"]
_OPENERS = ["", "", "唉，", "说真的，", "", "救命，", "好吧，"]


def synthetic_posts(count: int, seed: int) -> list[str]:
    """Invented Weibo-style posts from a small template grammar: no dataset text, reproducible by seed."""
    rng = random.Random(seed)
    posts = []
    for _ in range(count):
        parts = [rng.choice(_OPENERS), rng.choice(_SUBJECTS), rng.choice(_EVENTS), "，", rng.choice(_FEELINGS)]
        if rng.random() < 0.4:
            parts += ["，", rng.choice(_SUBJECTS), rng.choice(_EVENTS)]
        parts.append(rng.choice(_TAILS))
        posts.append("".join(parts))
    return posts


def file_posts(path: Path) -> list[str]:
    from mentalglm.analyze.io import read_posts

    posts = [row.text for row in read_posts(path) if row.text and row.text.strip() and not row.error]
    if not posts:
        raise SystemExit(f"{path}: no readable posts")
    return posts


# --- machine and server process -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "platform": platform.platform(), "httpx": httpx.__version__}


def process_memory(pid: int | None) -> dict[str, float] | None:
    """RSS and peak RSS (MiB) and CPU seconds of the server: psutil when installed, else /proc/<pid>."""
    if pid is None:
        return None
    try:
        import psutil

        proc = psutil.Process(pid)
        cpu = proc.cpu_times()
        out = {"rss_mb": proc.memory_info().rss / 2**20, "cpu_s": cpu.user + cpu.system}
    except ImportError:
        out = {}
    except Exception:  # the process is gone
        return None
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        for key, name in (("VmRSS", "rss_mb"), ("VmHWM", "peak_rss_mb")):
            if key in fields and name not in out:
                out[name] = int(fields[key].split()[0]) / 1024
        if "cpu_s" not in out:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out["cpu_s"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return {k: round(v, 2) for k, v in out.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"--url {url}: this load test only targets loopback addresses (127.0.0.0/8, ::1, localhost)")


def start_server(args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    port = _free_port()
    exe = shutil.which("mentalglm")
    base = [exe] if exe else [sys.executable, "-c", "from mentalglm.cli import main; main()"]
    server_args = shlex.split(args.server_args) if args.server_args is not None else \
        ["--engine", "hybrid" if "explain" in args.modes else "labels"]
    command = [*base, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *server_args]
    log = log_path.open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; its log:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url, ["mentalglm", *command[len(base):]]
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise SystemExit(f"the server was not ready after {args.startup_timeout} s; its log: {log_path}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the load ----------------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually measured."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def run_mode(url: str, mode: str, posts: list[str], requests: int, concurrency: int, per_request: int,
                   timeout: float, max_seconds: float, warmup: int, headers: dict[str, str]) -> dict[str, Any]:
    explain = mode == "explain"
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    record_errors = 0
    next_index = 0
    stopped_early = False
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def payload(i: int) -> dict[str, Any]:
        chosen = [{"id": f"{mode}-{i}-{j}", "text": posts[(i * per_request + j) % len(posts)]}
                  for j in range(per_request)]
        return {"posts": chosen, "explain": explain}

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers=headers) as client:
        for i in range(warmup):  # not measured: first-call costs (imports, caches, an LLM's first prompt)
            await client.post("/v1/analyze", json=payload(-1 - i))
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            nonlocal next_index, record_errors, stopped_early
            while next_index < requests:
                if time.perf_counter() > deadline:
                    stopped_early = True
                    return
                i, next_index = next_index, next_index + 1
                sent = time.perf_counter()
                try:
                    response = await client.post("/v1/analyze", json=payload(i))
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    record_errors += sum(r.get("status") == "error" for r in response.json()["results"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    done = sum(statuses.values())
    ok = statuses.get("200", 0)
    ordered = sorted(latencies)
    ms = [round(v * 1000, 1) for v in (percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99),
                                         ordered[-1] if ordered else float("nan"),
                                         statistics.fmean(ordered) if ordered else float("nan"))]
    return {
        "mode": mode, "explain": explain, "requests": done, "requested": requests, "concurrency": concurrency,
        "posts_per_request": per_request, "warmup_requests": warmup, "stopped_early": stopped_early,
        "wall_s": round(wall, 2), "ok": ok, "errors": done - ok,
        "errors_by_status": {k: v for k, v in sorted(statuses.items()) if k != "200"},
        "error_records_in_ok_responses": record_errors,
        "latency_ms": dict(zip(("p50", "p95", "p99", "max", "mean"), ms, strict=True)),
        "throughput": {"requests_per_s": round(done / wall, 2) if wall else None,
                       "ok_posts_per_s": round(ok * per_request / wall, 2) if wall else None},
    }


# --- report ------------------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Load test {report['started']}", "",
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), load average (1 min) "
             f"{m['load_avg_1min']} at the start, Python {m['python']}",
             f"- command: `{report['command']}`",
             f"- server: `{report['server_command'] or report['url']}`",
             f"- posts: {report['posts']['source']} ({report['posts']['distinct']} distinct, "
             f"{report['posts']['mean_chars']:.0f} characters on average)", "",
             "| mode | requests | concurrency | posts/request | ok | errors | p50 ms | p95 ms | p99 ms | max ms | "
             "req/s | posts/s | server RSS before → after (MiB) | server CPU s | client CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lat, thr = run["latency_ms"], run["throughput"]
        before, after = run.get("server_before") or {}, run.get("server_after") or {}
        rss = (f"{before['rss_mb']:.1f} → {after['rss_mb']:.1f} ({after['rss_mb'] - before['rss_mb']:+.1f})"
               if "rss_mb" in before and "rss_mb" in after else "n/a")
        cpu = f"{after['cpu_s'] - before['cpu_s']:.1f}" if "cpu_s" in before and "cpu_s" in after else "n/a"
        errors = f"{run['errors']}" + (f" ({', '.join(f'{k}: {v}' for k, v in run['errors_by_status'].items())})"
                                       if run["errors_by_status"] else "")
        lines.append(f"| {run['mode']} | {run['requests']}{' (stopped early)' if run['stopped_early'] else ''} | "
                     f"{run['concurrency']} | {run['posts_per_request']} | {run['ok']} | {errors} | {lat['p50']} | "
                     f"{lat['p95']} | {lat['p99']} | {lat['max']} | {thr['requests_per_s']} | "
                     f"{thr['ok_posts_per_s']} | {rss} | {cpu} | {run['client_cpu_s']} |")
    lines += ["", "Latency is measured by the client, from sending a request to reading its whole response; "
              "error records inside 200 responses (posts the analyzer refused) are counted apart: "
              + ", ".join(f"{r['mode']} {r['error_records_in_ok_responses']}" for r in report["runs"]) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server (loopback only); default: start `mentalglm serve`")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for RSS and CPU")
    parser.add_argument("--server-args", help="options for `mentalglm serve` (default: --engine labels, or "
                                              "--engine hybrid when the explain mode runs)")
    parser.add_argument("--modes", default=",".join(MODES), help="labels, explain or both (comma-separated)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (labels mode)")
    parser.add_argument("--requests", type=int, default=2000, help="requests in the labels mode")
    parser.add_argument("--explain-concurrency", type=int, default=None, help="default: --concurrency")
    parser.add_argument("--explain-requests", type=int, default=50, help="requests in the explain mode")
    parser.add_argument("--posts-per-request", type=int, default=1)
    parser.add_argument("--posts", type=Path, help=".txt/.csv/.jsonl file of posts (default: synthetic)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests before each mode")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop a mode's new requests after this")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for /readyz")
    parser.add_argument("--out", type=Path, default=Path("results/load"))
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if min(args.concurrency, args.requests, args.explain_requests, args.posts_per_request) < 1:
        parser.error("--concurrency, --requests, --explain-requests and --posts-per-request must be at least 1")

    posts = file_posts(args.posts) if args.posts else synthetic_posts(500, args.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": stamp, "machine": machine_info(),
        "command": " ".join([*(f"{k}={os.environ[k]}" for k in ENV_SHOWN if k in os.environ),
                             *(shlex.quote(a) for a in ["python", "benchmarks/load_test.py", *(argv or sys.argv[1:])])]),
        "posts": {"source": str(args.posts) if args.posts else f"synthetic (seed {args.seed})",
                  "distinct": len(set(posts)), "mean_chars": statistics.fmean(len(p) for p in posts)},
        "server_command": None, "url": args.url, "runs": []}
    headers = {"X-API-Key": key} if (key := os.environ.get("MENTALGLM_API_KEY")) else {}
    proc = None
    if args.url:
        check_loopback(args.url)
        url, pid = args.url.rstrip("/"), args.server_pid
    else:
        handle, name = tempfile.mkstemp(prefix="mentalglm-load-", suffix=".server.log")
        os.close(handle)
        log_path = Path(name)
        proc, url, command = start_server(args, log_path)
        pid, report["server_command"] = proc.pid, " ".join(command)
    try:
        report["server_start"] = process_memory(pid)
        for mode in args.modes:
            explain = mode == "explain"
            before, client_cpu = process_memory(pid), time.process_time()
            run = asyncio.run(run_mode(
                url, mode, posts, args.explain_requests if explain else args.requests,
                (args.explain_concurrency or args.concurrency) if explain else args.concurrency,
                args.posts_per_request, args.timeout, args.max_seconds, args.warmup, headers))
            run["server_before"], run["server_after"] = before, process_memory(pid)
            run["client_cpu_s"] = round(time.process_time() - client_cpu, 2)
            report["runs"].append(run)
            print(json.dumps(run, ensure_ascii=False), flush=True)
    finally:
        if proc is not None:
            stop_server(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                print(f"the server exited with {proc.returncode}; its log: {log_path}", file=sys.stderr)
            else:
                log_path.unlink(missing_ok=True)
    json_path = args.out / f"load-{stamp}.json"
    json_path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    json_path.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(f"report: {json_path} and {json_path.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
