"""Load time and decode speed of the llama.cpp default on a short Chinese prompt (median of N runs).

    python benchmarks/bench_backends.py                      # embedded qwen2.5-0.5b, 3 runs
    python benchmarks/bench_backends.py --model qwen2.5-1.5b --n-threads 2 --json out.json

Decode tok/s comes from llama.cpp's own counters (eval time of generated tokens only), so prompt processing
does not dilute it; end-to-end tok/s (completion tokens / request latency) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from mentalglm.backends import GenerationRequest, GenerationSettings, create_backend
from mentalglm.backends.llamacpp import default_threads
from mentalglm.backends.weights import DEFAULT_MODEL, ensure_default_model, resolve_weights

PROMPT = [
    {"role": "system", "content": "你是一名心理健康分析助手。"},
    {"role": "user", "content": "帖子：最近总是失眠，工作压力很大，觉得什么都没意思。请分析这条帖子的情绪，并说明理由。"},
]


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    import llama_cpp

    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
    }


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(model: str, n_threads: int, n_ctx: int, max_new_tokens: int) -> dict[str, float]:
    import llama_cpp

    start = time.perf_counter()
    backend = create_backend(f"llamacpp:{model}", n_threads=n_threads, n_ctx=n_ctx)
    load_s = time.perf_counter() - start
    rss_loaded = current_rss_mb()
    llama_cpp.llama_perf_context_reset(backend.llama.ctx)
    result = backend.generate([GenerationRequest(PROMPT, GenerationSettings(max_new_tokens=max_new_tokens))])[0]
    if not result.ok:
        raise SystemExit(f"generation failed: {result.error}")
    perf = llama_cpp.llama_perf_context(backend.llama.ctx)
    backend.close()
    return {
        "load_s": load_s,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "prompt_tok_s": perf.n_p_eval / (perf.t_p_eval_ms / 1000) if perf.t_p_eval_ms else float("nan"),
        "decode_tok_s": perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms else float("nan"),
        "end_to_end_tok_s": result.completion_tokens / result.latency_s,
        "rss_after_load_mb": rss_loaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="embedded name or a .gguf path")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-threads", type=int, default=None, help="default: free cores now")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    info = machine_info()
    n_threads = args.n_threads or default_threads()
    if not Path(args.model).is_file():
        start = time.perf_counter()
        ensure_default_model(resolve_weights(args.model).name)
        info["ensure_weights_s"] = round(time.perf_counter() - start, 2)
    print(" ".join(f"{k}={v}" for k, v in info.items()), f"n_threads={n_threads}")
    runs = [one_run(args.model, n_threads, args.n_ctx, args.max_new_tokens) for _ in range(args.runs)]
    for i, run in enumerate(runs, 1):
        print(f"run {i}: " + " ".join(f"{k}={v:.2f}" for k, v in run.items()))
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    median["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("median: " + " ".join(f"{k}={v:.2f}" for k, v in median.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "n_threads": n_threads, "runs": runs, "median": median},
                                        indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
