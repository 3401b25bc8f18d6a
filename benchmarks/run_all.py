"""Every baseline on the three Chinese main tasks, then results/summary.json and the comparison report.

    # TF-IDF on the full test splits, and the embedded llama.cpp model zero- and few-shot on 20 posts per task
    MENTALGLM_THREADS=1 python benchmarks/run_all.py --data-dir ../shared/data --llm-limit 20
    # add the fine-tuned encoder baseline (embedded multilingual-e5-small; hours a task on 2 CPU cores)
    python benchmarks/run_all.py --data-dir ../shared/data --llm-limit 0 --encoder
    # as measured in results/: emotion's encoder on a 6,000-post subset of its 26,623-post pool
    python benchmarks/run_all.py --data-dir ../shared/data --encoder --encoder-task emotion:limit_train=6000,epochs=2
    # TF-IDF only, one task
    python benchmarks/run_all.py --data-dir ../shared/data --tasks suicide_risk --llm-limit 0
    # a tuned MentalGLM (GGUF from `mentalglm export --gguf`) against the same base zero-shot, on validation
    python benchmarks/run_all.py --split validation --skip-tfidf --few-shot 0 --llm-limit 100 \
        --tuned llamacpp:outputs/mentalglm-0.5b-cpu/model-q8_0.gguf --results-dir results/train-cpu

LLM rows use a seeded, label-stratified sample of ``--llm-limit`` test posts (CPU decoding costs seconds a
post); their CIs say how little that sample can tell. Predictions resume: rerunning with the same options
only predicts the posts that are missing. Predictions go to outputs/ (they hold post text and gold labels
and stay out of git); results JSON, summary.json and the report go to --results-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from mentalglm.backends.base import GenerationSettings
from mentalglm.backends.registry import create_backend
from mentalglm.evaluate.predict import llm_system_name, slug
from mentalglm.evaluate.report import load_results, summary_records, write_report
from mentalglm.evaluate.runner import (
    PREDICTIONS_DIR,
    RESULTS_DIR,
    SplitIndex,
    evaluate_file,
    run_llm,
    run_tfidf_baseline,
    split_index,
)
from mentalglm.files import atomic_write_text
from mentalglm.tasks.registry import CHINESE_MAIN_TASKS


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: $MENTALGLM_DATA_DIR)")
    parser.add_argument("--tasks", default=",".join(CHINESE_MAIN_TASKS))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--predictions-dir", type=Path, default=PREDICTIONS_DIR)
    parser.add_argument("--llm-limit", type=int, default=10, help="test posts per task for LLM rows; 0 skips them")
    parser.add_argument("--split", default="test", help="canonical split the LLM rows are scored on")
    parser.add_argument("--llm-backend", default="llamacpp:default", help="prompted LLM ('' skips those rows)")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="SPEC",
                        help="tuned MentalGLM backends (e.g. llamacpp:PATH.gguf): zero-shot, no format hint, "
                             "the prompt they were trained on")
    parser.add_argument("--few-shot", type=int, default=3, help="K of the few-shot row (0 keeps zero-shot only)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--no-format-hint", action="store_true",
                        help="prompt exactly as a tuned model sees it (untuned models then rarely follow the layout)")
    parser.add_argument("--skip-tfidf", action="store_true")
    parser.add_argument("--encoder", nargs="?", const="e5-small", default=None, metavar="MODEL",
                        help="also fine-tune an encoder baseline per task: e5-small (the default) or hf:PATH")
    parser.add_argument("--encoder-epochs", type=float, default=3.0)
    parser.add_argument("--encoder-max-steps", type=int, default=None, help="cap on encoder steps (quick runs)")
    parser.add_argument("--encoder-task", action="append", default=[], metavar="TASK:KEY=VALUE[,KEY=VALUE]",
                        help="per-task encoder settings, e.g. emotion:limit_train=6000,epochs=2 (the 27K-post "
                             "emotion pool takes ~5 h an epoch-set on 2 CPU cores)")
    parser.add_argument("--include", type=Path, nargs="*", default=[],
                        help="more results JSON (e.g. a tuned MentalGLM) to put in the summary and report")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    results: list[Path] = list(args.include)
    if not args.skip_tfidf:
        for task in tasks:
            results.append(run_tfidf_baseline(task, args.data_dir, predictions_dir=args.predictions_dir,
                                              results_dir=args.results_dir, n_resamples=args.resamples)[1])
    if args.encoder:
        from mentalglm.evaluate.runner import run_encoder_baseline
        from mentalglm.train.encoder import EncoderSettings

        encoder = EncoderSettings(model=args.encoder, epochs=args.encoder_epochs, max_steps=args.encoder_max_steps,
                                  seed=args.seed)
        overrides = _task_overrides(args.encoder_task)
        for task in tasks:
            settings = dataclasses.replace(encoder, **overrides.get(task, {}))
            results.append(run_encoder_baseline(task, args.data_dir, predictions_dir=args.predictions_dir,
                                                results_dir=args.results_dir, settings=settings,
                                                n_resamples=args.resamples)[1])
    if args.llm_limit > 0:
        index = split_index(args.data_dir)
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
        if args.llm_backend:
            shots = list(dict.fromkeys([0, args.few_shot]))
            results += _llm_rows(args, args.llm_backend, tasks, shots, not args.no_format_hint, settings, index)
        for spec in args.tuned:
            results += _llm_rows(args, spec, tasks, [0], False, settings, index, name=f"mentalglm-tuned:{spec}")
    loaded = load_results(results)
    summary = atomic_write_text(args.results_dir / "summary.json",
                            json.dumps({"records": summary_records(loaded)}, ensure_ascii=False, indent=2) + "\n")
    markdown, page = write_report(loaded, args.results_dir / "report")
    for record in summary_records(loaded):
        print(f"{record['task']:22s} {record['system']:34s} {record['metric']} {record['value']:.4f} "
              f"{record['ci95']} invalid {record['invalid_rate']:.3f} {record['posts_per_s'] or 0:.2f} posts/s")
    print(f"summary → {summary}\nreport → {markdown}, {page}")


def _task_overrides(specs: list[str]) -> dict[str, dict[str, object]]:
    """`emotion:limit_train=6000,epochs=2` -> {"emotion": {"limit_train": 6000, "epochs": 2.0}}, typed by field."""
    from mentalglm.train.encoder import EncoderSettings

    types = {f.name: f.type for f in dataclasses.fields(EncoderSettings)}
    out: dict[str, dict[str, object]] = {}
    for spec in specs:
        task, _, assignments = spec.partition(":")
        for assignment in filter(None, assignments.split(",")):
            key, _, value = assignment.partition("=")
            if key not in types or not value:
                raise SystemExit(f"--encoder-task {spec!r}: {key!r} is not an encoder setting "
                                 f"({', '.join(types)}) or has no value")
            kind = str(types[key])
            parsed: object = (float(value) if "float" in kind else value.lower() in ("1", "true", "yes")
                              if "bool" in kind else int(value) if "int" in kind else value)
            out.setdefault(task, {})[key] = parsed
    return out


def _llm_rows(args: argparse.Namespace, spec: str, tasks: list[str], shots: list[int], format_hint: bool,
             settings: GenerationSettings, index: SplitIndex, name: str = "") -> list[Path]:
    """Predict and score one backend on every task (and shot count); predictions resume when rerun."""
    options = {"n_ctx": 4096} if spec.startswith("llamacpp") else {}
    written: list[Path] = []
    with create_backend(spec, **options) as backend:
        for task in tasks:
            for k in shots:
                system = llm_system_name(name or spec, k)
                stem = f"{task}.{args.split}.{slug(system)}.n{args.llm_limit}"
                predictions = run_llm(task, backend, spec, split=args.split, data_dir=args.data_dir,
                                      limit=args.llm_limit, few_shot=k, seed=args.seed,
                                      out=args.predictions_dir / f"{stem}.jsonl", settings=settings,
                                      with_format_hint=format_hint, name=system)
                written += evaluate_file(predictions, args.results_dir / f"{stem}.results.json", index=index,
                                         n_resamples=args.resamples)
    return written


if __name__ == "__main__":
    main()
