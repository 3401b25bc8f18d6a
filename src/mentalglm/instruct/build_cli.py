"""`mentalglm build` and `mentalglm qc`: the C-IMHI builder's two commands."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer

from mentalglm.console import comma_list, make_console
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.registry import CHINESE_MAIN_TASKS, get_task

console = make_console()
# The embedded 1.5B writes grounded explanations far more often than the 0.5B (docs/c-imhi-build.md).
DEFAULT_TEACHER = "llamacpp:qwen2.5-1.5b"



def build(
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids.")] = ",".join(CHINESE_MAIN_TASKS),
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (the teacher cache lives in OUT/cache).")] = Path(
        "outputs/c-imhi-build"),
    teacher: Annotated[str, typer.Option(
        help="Backend spec: llamacpp:qwen2.5-1.5b (embedded), llamacpp:default (0.5B), hf:PATH, openai:MODEL, none.")
    ] = DEFAULT_TEACHER,
    per_task: Annotated[int, typer.Option(help="Posts per task, a stratified sample of the split.")] = 200,
    split: Annotated[str, typer.Option(help="Canonical split to build from.")] = "train",
    max_attempts: Annotated[int, typer.Option(help="Generations per post before a QC failure drops it.")] = 3,
    max_new_tokens: int = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy for the first attempt; retries sample.")] = 0.0,
    seed: int = DEFAULT_SEED,
    few_shot: Annotated[int, typer.Option(
        help="Few-shot examples: reference explanations from the data when it has them, else the prompt file's.")] = 1,
    source_explanations: Annotated[bool, typer.Option(
        help="Use explanations that come with the data (SOS-4K) instead of generating them; they still go through QC.")
    ] = False,
    verifier: Annotated[str, typer.Option(help="Independent verifier: tfidf or none.")] = "tfidf",
    grounded: Annotated[bool, typer.Option(
        "--grounded/--free-form",
        help="On llama.cpp teachers, generate under a per-post grammar: the gold label stated, one of the post's own "
             "clauses quoted (never recalled). --free-form: the longer prompt with few-shots, checked by QC only.")
    ] = True,
    quote_hints: Annotated[bool, typer.Option(
        "--quote-hints/--all-clauses",
        help="Grounded: offer the clauses where the verifier's classifier reads the gold label (clause occlusion), "
             "as the analyzer's hybrid engine does. --all-clauses: every clause of the post.")] = True,
    n_ctx: Annotated[int, typer.Option(help="Context size for llama.cpp teachers.")] = 4096,
    formats: Annotated[str, typer.Option("--format", help="chat, alpaca, hf")] = "chat,alpaca,hf",
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Teacher requests in flight at once, for server teachers (openai:MODEL against vLLM, SGLang or "
                    "an API; default 4); the cache and resuming do not depend on it.")] = None,
) -> None:
    """Generate label-conditioned explanations with a teacher LLM, run QC with regeneration, export C-IMHI.

    A killed run resumes from OUT/cache/teacher.jsonl without repeating finished requests.
    """
    from mentalglm.backends.base import GenerationSettings
    from mentalglm.backends.registry import cli_options, create_backend
    from mentalglm.instruct.pipeline import BuildConfig, run_build

    task_ids = comma_list(tasks)
    for task_id in task_ids:
        get_task(task_id)
    if verifier not in ("tfidf", "none"):
        raise typer.BadParameter("--verifier must be tfidf or none")
    config = BuildConfig(tasks=task_ids, per_task=per_task, split=split, seed=seed, max_attempts=max_attempts,
                         few_shot=few_shot, use_source_explanations=source_explanations, verifier=verifier,
                         grounded=grounded, quote_hints=quote_hints,
                         settings=GenerationSettings(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed))
    # Reusing the KV of the shared prompt prefix saves about a second a post on CPU; results are cached by
    # content anyway, so bit-exact repeatability between batch and single runs is not needed here.
    options = {} if teacher == "none" else cli_options(teacher, n_ctx=n_ctx, concurrency=concurrency)
    if "n_ctx" in options:
        options["reuse_prompt_cache"] = True
    backend = None if teacher == "none" else create_backend(teacher, **options)
    try:
        report = run_build(config, data_dir, out, backend, formats=comma_list(formats))
    finally:
        if backend is not None:
            backend.close()
    for task_id, row in report["tasks"].items():
        console.print(f"{task_id}: {row['accepted']}/{row['requested']} accepted "
                      f"(first-attempt QC pass {report['first_attempt_qc']['tasks'].get(task_id, {}).get('pass_rate')}), "
                      f"dropped {dict(row['dropped']) or 0}, backend failures {row['backend_failures']}")
    console.print(f"{report['seconds']} s, {report['posts_per_s']} posts/s → {out}/qc_report.md")


def qc(
    input: Annotated[Path, typer.Argument(help="A chat JSONL written by `mentalglm build` or `instruct export`.")],
    out: Annotated[Path | None, typer.Option(help="Report path prefix (default: beside the input).")] = None,
) -> None:
    """Re-run the automatic checks on an existing instruction file and write a QC report (JSON + Markdown)."""
    from mentalglm.errors import MissingDataError
    from mentalglm.files import atomic_write_text, read_jsonl_lines
    from mentalglm.instruct.qc import Verdict, check_sample, near_duplicates, summarise

    if not input.is_file():
        raise MissingDataError("instruction file", input)
    rows: list[tuple[str, Verdict]] = []
    explanations: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in read_jsonl_lines(input):
        if line.blank:
            continue
        try:
            if line.error is not None:
                raise line.error
            sample = line.value
            task = get_task(sample["task"])
            post = sample["meta"]["post"] if isinstance(sample["meta"], dict) else json.loads(sample["meta"])["post"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise typer.BadParameter(f"{input}:{line.number}: not a chat sample ({exc})") from exc
        verdict = check_sample(task, sample["labels"], sample.get("explanation"), post)
        explanations[task.id].append((len(rows), sample.get("explanation") or ""))
        rows.append((task.id, verdict))
    for items in explanations.values():
        for i in near_duplicates([text for _, text in items], 0.85):
            verdict = rows[items[i][0]][1]
            verdict.passed = False
            verdict.reasons.append("near_duplicate: repeats an earlier explanation")
    summary = summarise(rows)
    prefix = out or input.with_suffix("")
    atomic_write_text(Path(f"{prefix}.qc.json"), json.dumps(summary, ensure_ascii=False, indent=2))
    console.print_json(json.dumps(summary["overall"]))
    console.print(f"report: {prefix}.qc.json")
