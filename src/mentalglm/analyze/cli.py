"""`mentalglm analyze` (one post, pretty; or a file, streamed to JSONL) and `mentalglm analyze-train`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mentalglm.analyze.batch import AnalyzerRecipe, RunSummary
from mentalglm.analyze.engine import DEFAULT_BACKEND, DEFAULT_ENGINE, DEFAULT_MAX_CHARS, ENGINES, Analyzer
from mentalglm.analyze.schema import PostResult, TaskResult
from mentalglm.backends.registry import cli_options
from mentalglm.console import comma_list, make_console
from mentalglm.errors import ConfigError
from mentalglm.files import atomic_write_text
from mentalglm.instruct.qc import DEFINITIONS, DESCRIPTIONS
from mentalglm.tasks import CHINESE_MAIN_TASKS
from mentalglm.train.screen import NO_LABEL

console = make_console()
err_console = Console(stderr=True)
BAR_WIDTH = 20



def _bar(confidence: float | None) -> Text:
    if confidence is None:
        return Text("(no calibrated confidence)", style="dim")
    filled = round(confidence * BAR_WIDTH)
    return Text("█" * filled + "░" * (BAR_WIDTH - filled) + f" {confidence:.2f}", style="cyan")


def _highlighted_post(text: str, result: TaskResult) -> Text:
    shown = Text(text)
    for span in result.evidence:
        shown.stylize("bold yellow underline", span.start, span.end)
    return shown


def _highlighted_explanation(explanation: str) -> Text:
    shown = Text(explanation)
    shown.highlight_regex(r"“[^”]+”|「[^」]+」|\"[^\"]+\"", "bold yellow")
    return shown


def _pathway(result: TaskResult, text: str) -> Group:
    """The pathway in its clinical order, then each sentence with its parts and their probabilities."""
    steps = []
    for stage in result.pathway or []:
        where = "、".join(f"句{i}" for i in stage.sentences) or "—"
        children = f"·{'、'.join(stage.children)}" if stage.children else ""
        steps.append(f"[{'bold' if stage.sentences else 'dim'}]{stage.part_zh}{children} ({where})[/]")
    table = Table("#", "sentence / 句子", "parts / 认知路径", title_justify="left", show_lines=False)
    for sentence in result.sentences or []:
        parts = "；".join(f"{p.part}{'·' + p.child if p.child else ''} {p.confidence:.2f}" for p in sentence.parts
                         if p.child or not any(q.child and q.part == p.part for q in sentence.parts))
        table.add_row(str(sentence.index), Text(text[sentence.start:sentence.end]), parts)
    return Group(Text.from_markup("认知路径 / pathway: " + " → ".join(steps)), table)


def render(result: PostResult, text: str) -> Group:
    """The post result for a terminal: labels with confidence bars, explanations with evidence, notices."""
    parts: list[object] = []
    header = f"{result.id} · {result.text_length} characters"
    if result.out_of_domain:
        header += " · [yellow]out of domain: mostly not Chinese, results are unreliable[/yellow]"
    parts.append(Text.from_markup(header))
    for task_result in result.tasks.values():
        table = Table(title=f"{task_result.task_name_zh} ({task_result.task}, engine {task_result.engine})",
                      show_header=False, title_justify="left")
        if not task_result.valid:
            table.add_row(Text("INVALID", style="bold red"), Text(task_result.error or "", style="red"))
        for label in task_result.labels:
            table.add_row(f"{label.name_zh} / {label.name_en}", _bar(label.confidence))
        if task_result.nothing_evident and not task_result.labels:  # a screened multi-label task found nothing
            table.add_row(f"{task_result.nothing_evident_zh}", _bar(task_result.confidences.get(NO_LABEL)))
        parts.append(table)
        if task_result.sentences is not None:
            parts.append(_pathway(task_result, text))
        if task_result.explanation:
            parts.append(_highlighted_explanation(task_result.explanation))
            if task_result.evidence:
                parts.append(Text("证据 / evidence: ").append(_highlighted_post(text, task_result)))
            if task_result.explanation_source == "attribution_fallback":
                parts.append(Text(f"shown: the attribution sentence, because {task_result.fallback_reason}",
                                  style="yellow"))
            elif task_result.explanation_source in ("llm", "llm_grounded"):  # attribution: nothing to verify
                agree = {True: "agrees", False: "DISAGREES", None: "n/a"}[task_result.verifier_agrees]
                if task_result.verifier_reader == DEFINITIONS:
                    agree += " (read by the task's definitions: it argues by what the post lacks)"
                elif task_result.verifier_reader == DESCRIPTIONS:
                    agree += " (read by the task's label descriptions)"
                grounded = "grounded LLM (quote copied from the post); " if task_result.explanation_source == \
                    "llm_grounded" else "LLM; "
                parts.append(Text(f"{grounded}verifier {agree}; QC "
                                  f"{'passed' if task_result.qc_passed else task_result.qc_reasons}", style="dim"))
        elif task_result.error:
            parts.append(Text(f"no explanation: {task_result.error}", style="yellow"))
    for notice in result.notices:
        if notice.kind == "crisis":
            lines = "\n".join(f"  {r.name}: {r.contact} ({r.note})" for r in notice.resources)
            parts.append(Panel(f"{notice.text}\n{lines}", title="危机资源 / crisis resources", style="bold red"))
        elif notice.kind == "support":
            lines = "\n".join(f"  {r.name}: {r.contact} ({r.note})" for r in notice.resources)
            parts.append(Panel(f"{notice.text}\n{lines}", title="支持资源 / support", style="yellow"))
        else:
            parts.append(Text(notice.text, style="yellow" if notice.kind in ("out_of_domain", "outside_training_domain") else "italic"))
    return Group(*parts)  # type: ignore[arg-type]


def analyze(
    texts: Annotated[list[str] | None, typer.Argument(help="Posts to analyse, each one argument (or use --input).",
                                                       show_default=False)] = None,
    input: Annotated[str | None, typer.Option(
        "--input", "-i", help="A file (.txt one post a line, .csv, .jsonl, .parquet), a directory of them, or a "
                              "quoted glob ('posts/*.jsonl').")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Results: a .jsonl or .parquet file for one input file, a directory for several "
                               "(one output per input, in input order); default stdout for one file. A rerun "
                               "resumes where a killed run stopped.")] = None,
    output_format: Annotated[str, typer.Option(help="jsonl | parquet, for the files of an output directory.")
                             ] = "jsonl",
    overwrite: Annotated[bool, typer.Option(help="Start over instead of resuming or skipping finished outputs.")
                         ] = False,
    text_column: Annotated[str | None, typer.Option(help="CSV / Parquet column or JSONL key of the text")] = None,
    id_column: Annotated[str | None, typer.Option(help="CSV / Parquet column or JSONL key of the post id")] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids (cognitive_pathway: the model of "
                                            "`mentalglm pathway train --out DIR`, given as --artifacts-dir DIR).")
                     ] = ",".join(CHINESE_MAIN_TASKS),
    engine: Annotated[str, typer.Option(help="attribution | hybrid | labels | llm")] = DEFAULT_ENGINE,
    backend: Annotated[str, typer.Option(help="LLM backend spec for hybrid / llm; llamacpp:default is the embedded "
                                              "0.5B, or the explainer of an --artifacts-dir backbone that has one "
                                              "(mentalglm backbone explainer).")] = DEFAULT_BACKEND,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="LLM requests in flight at once (hybrid / llm with a server backend, openai:MODEL).")] = None,
    explain: Annotated[bool, typer.Option("--explain/--no-explain", help="Write explanations (LLM).")] = True,
    keep_going: Annotated[bool, typer.Option(
        help="Bad rows become error records instead of stopping; unreadable files of a directory are skipped "
             "(and named).")] = False,
    artifacts_dir: Annotated[Path | None, typer.Option(help="Trained classifiers (analyze-train --out).")] = None,
    max_chars: Annotated[int, typer.Option(help="Longest post accepted.")] = DEFAULT_MAX_CHARS,
    locale: Annotated[str, typer.Option(help="Crisis resources locale: zh-CN or en.")] = "zh-CN",
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", show_default=False,
        help="Run as a Ray Data pipeline (pip install 'mentalglm[ray]'): `--ray local` starts Ray on this machine, "
             "--ray ADDRESS joins a cluster (auto, HOST:6379 or ray://HOST:10001). Implies --keep-going.")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        min=1, help="Analyzer actors (each loads the models once; default: one per CPU Ray offers).")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows of a file one Ray read task reads.")] = 2000,
    report: Annotated[Path | None, typer.Option(
        help="Also write the run's summary (rows, errors, seconds, start-up) as JSON here.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON, not a panel.")] = False,
) -> None:
    """Analyse posts for emotion, cognitive distortions and suicide risk. Decision support, not a diagnosis."""
    if bool(texts) == (input is not None):
        raise ConfigError("give either post texts or --input FILE|DIR|GLOB (not both)")
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if ray is not None and (input is None or output is None):
        raise ConfigError("--ray runs a batch: give --input and --output")
    recipe = AnalyzerRecipe(tuple(comma_list(tasks)), engine, backend,  # type: ignore[arg-type]
                            cli_options(backend, concurrency=concurrency) if concurrency else {},
                            str(artifacts_dir) if artifacts_dir else None, explain, max_chars, locale)
    with recipe.build() as analyzer:
        if texts:
            for number, text in enumerate(texts, 1):
                result = analyzer.analyze(text, post_id="post" if len(texts) == 1 else f"post-{number}")
                console.print_json(result.model_dump_json()) if json_output else console.print(render(result, text))
            return
        assert input is not None
        if output is None:
            _analyze_to_stdout(analyzer, input, text_column, id_column, keep_going, batch_size)
            return
        summary = _analyze_files(analyzer, recipe, input, output, output_format=output_format, overwrite=overwrite,
                                 text_column=text_column, id_column=id_column, keep_going=keep_going or ray is not None,
                                 batch_size=batch_size, ray=ray, ray_actors=ray_actors, chunk_rows=chunk_rows)
    err_console.print(
        f"{summary.rows} rows analysed in {summary.seconds} s ({summary.posts_per_s or '-'} posts/s"
        + (f"; on Ray the first results were written after {summary.first_results_s} s" if summary.first_results_s else "")
        + f"), {summary.errors} errors, {summary.high_risk} at high risk (crisis notice); {summary.files} file(s)"
        + (f", {summary.skipped_complete} already complete" if summary.skipped_complete else "")
        + (f", {summary.resumed_rows} rows resumed from an earlier run" if summary.resumed_rows else "")
        + f" → {output}", soft_wrap=True)
    if report is not None:
        atomic_write_text(report, json.dumps({**asdict(summary), "posts_per_s": summary.posts_per_s},
                                             ensure_ascii=False, indent=1) + "\n")
    if summary.unreadable:
        err_console.print("[yellow]not analysed: " + "; ".join(summary.unreadable) + "[/yellow]", soft_wrap=True)
        raise typer.Exit(1)


def _analyze_to_stdout(analyzer: Analyzer, input: str, text_column: str | None, id_column: str | None,
                       keep_going: bool, batch_size: int) -> None:
    """One file streamed to stdout (nothing to resume: a pipe has no finished rows to find again)."""
    from tqdm import tqdm

    from mentalglm.analyze.batch import stream
    from mentalglm.analyze.io import read_posts, write_jsonl
    from mentalglm.analyze.outputs import find_inputs

    files = find_inputs(input)
    if len(files) != 1 or Path(input).expanduser().is_dir():
        raise ConfigError(f"--input {input} holds {len(files)} files: give --output DIR for their results")
    rows = read_posts(files[0], text_column, id_column, keep_going=keep_going)
    errors = high = total = 0
    results = stream(rows, analyzer, batch_size=batch_size, keep_going=keep_going)
    for result in tqdm(write_jsonl(results, sys.stdout), desc="analyze", unit="post", file=sys.stderr):
        total += 1
        errors += result.status == "error"
        high += isinstance(result, PostResult) and result.high_risk
    err_console.print(f"{total} rows, {errors} errors, {high} at high risk (crisis notice)")


def _analyze_files(analyzer: Analyzer, recipe: AnalyzerRecipe, input: str, output: Path, *, output_format: str,
                   overwrite: bool, text_column: str | None, id_column: str | None, keep_going: bool,
                   batch_size: int, ray: str | None, ray_actors: int | None, chunk_rows: int) -> RunSummary:
    """Input files to output files through the batch runner, in this process or on Ray; resumable."""
    from tqdm import tqdm

    from mentalglm.analyze.batch import fingerprint, open_files, run_local
    from mentalglm.analyze.outputs import plan_files

    summary = RunSummary()
    pending = open_files(plan_files(input, output, output_format), fingerprint(analyzer), summary,
                         overwrite=overwrite, keep_going=keep_going, chunk_rows=chunk_rows if ray else 1 << 62,
                         runner="ray" if ray else "local")
    todo = sum(entry.total - entry.out.done for entry in pending)
    with tqdm(total=todo, desc="analyze", unit="post", file=sys.stderr, dynamic_ncols=True) as bar:
        if ray is None:
            written, seconds = run_local(pending, analyzer, batch_size=batch_size, keep_going=keep_going,
                                         text_column=text_column, id_column=id_column, on_progress=bar.update)
            first = 0.0
        else:
            from mentalglm.analyze.distributed import run_on_ray

            written, seconds, first = run_on_ray(
                pending, recipe, fingerprint(analyzer), address=None if ray == "local" else ray, actors=ray_actors,
                batch_size=batch_size, text_column=text_column, id_column=id_column, on_progress=bar.update)
    summary.rows, summary.seconds, summary.first_results_s = written, seconds, first
    for entry in pending:
        summary.errors += entry.out.errors
        summary.high_risk += entry.out.high_risk
    return summary


def _screen_encoders(value: str | None) -> list[str] | None:
    """``--screen-encoders``, checked against the known encoders before any training starts."""
    from mentalglm.tasks.schema import SCREEN_ENCODERS

    if value is None:
        return None
    chosen = comma_list(value)
    unknown = [e for e in chosen if e not in SCREEN_ENCODERS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown screen encoder(s) {unknown or value!r}; known: {', '.join(SCREEN_ENCODERS)}",
                                 param_hint="--screen-encoders")
    return chosen


def analyze_train(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write (default ~/.cache/mentalglm/analyzer).")] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids.")] = ",".join(CHINESE_MAIN_TASKS),
    c_grid: Annotated[str, typer.Option(help="Comma-separated C values tried on validation.")] = "1,4,16",
    general_negatives: Annotated[int | None, typer.Option(
        help="Ordinary Weibo posts added as level 0 to forum-only tasks without a screen (suicide_level); "
             "suicide_risk and cognitive_distortion learn ordinary posts through their screens. Default 0.")] = None,
    encoder: Annotated[bool, typer.Option(
        help="Also fine-tune the embedded e5-small (LoRA) per task and average it with TF-IDF: more accurate, "
             "slower to read; 1.5-2 hours for the three tasks on 2 cores, resumable.")] = False,
    encoder_epochs: Annotated[float | None, typer.Option(
        help="Encoder epochs for every task (default per task: 2 emotion, 10 cognitive distortion, "
             "3 suicide risk).")] = None,
    encoder_runs: Annotated[Path | None, typer.Option(
        help="Where encoder runs keep checkpoints and resume (default OUT/encoder-runs).")] = None,
    encoder_seeds: Annotated[int | None, typer.Option(
        min=1, help="Train each encoder from this many seeds and average them (each costs one more training run "
                    "and one more encoder pass per post; default 1: two seeds gained 0.002 test macro-F1 on "
                    "emotion, nothing on validation elsewhere, see docs/analyze.md).")] = None,
    results_dir: Annotated[Path | None, typer.Option(
        help="Also write each task's test predictions and a results JSON here, for `mentalglm report`.")] = None,
    backbone: Annotated[Path | None, typer.Option(
        help="A finished backbone (`mentalglm backbone train` RUN/final): each task's head, averaged with TF-IDF, "
             "replaces the tier chosen so far (TF-IDF, or the frozen ensemble a task's YAML declares) where it beats it "
             "on >= 95 % of paired validation resamples.")
    ] = None,
    backbone_engine: Annotated[str, typer.Option(
        help="How the backbone reads posts, recorded in the cards and kept: auto (the fastest engine "
             "`backbone export` checked close to transformers float32: torch-int8, else llama.cpp, else torch), "
             "torch, torch-int8 or llamacpp; measured in docs/backbone.md.")] = "auto",
    screen_encoders: Annotated[str | None, typer.Option(
        help="Frozen sentence encoders the screens may average with TF-IDF, comma-separated, in order: e5, use "
             "(default: each task's YAML, e5). `e5,use` is the variant measured in docs/analyze.md.")] = None,
) -> None:
    """Train the analyzer's classifiers (decontaminated train, tuned and calibrated on validation)."""
    from mentalglm.analyze.artifacts import default_artifacts_dir, load_task_model
    from mentalglm.analyze.recipe import train_all
    from mentalglm.tasks.pathway import refuse_hierarchical

    for task_id in comma_list(tasks):
        refuse_hierarchical(task_id, "mentalglm pathway train --pathway-dir DIR --out ARTIFACTS_DIR")
    directory = (out or default_artifacts_dir()).expanduser()
    cards = train_all(data_dir, directory, comma_list(tasks),
                      c_grid=[float(c) for c in c_grid.split(",")], log=err_console.print,
                      general_negatives=general_negatives, encoder=encoder, encoder_epochs=encoder_epochs,
                      encoder_runs=encoder_runs, encoder_seeds=encoder_seeds, backbone=backbone,
                      backbone_engine=backbone_engine,
                      screen_encoders=_screen_encoders(screen_encoders))
    for card in cards:
        console.print(f"model card: {card}")
    if results_dir is not None:
        from mentalglm.analyze.results import write_test_results

        for task_id in comma_list(tasks):
            name = "analyzer-backbone" if backbone else "analyzer-tier" if encoder else "analyzer"
            console.print(f"results: {write_test_results(load_task_model(task_id, directory), data_dir, results_dir, name=name)}")
