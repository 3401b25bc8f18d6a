"""`mentalglm pathway train | predict | evaluate`: cognitive pathways on the user's own files (docs/pathway.md).

It sits with the evaluation commands because `train` scores the model it builds on test.txt through the runner,
and `predict` / `evaluate` are the runner's, given the pathway files instead of a canonical split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mentalglm.console import comma_list, make_console
from mentalglm.errors import ConfigError
from mentalglm.seeds import DEFAULT_SEED

app = typer.Typer(help="Cognitive pathway extraction on your own files (train.txt, dev.txt, test.txt, label.txt). "
                       "Decision support, not a diagnosis.", no_args_is_help=True)
console = make_console()
err_console = make_console(stderr=True)
PathwayDir = Annotated[Path, typer.Option("--pathway-dir", help="Directory with train.txt, dev.txt, test.txt and "
                                                                 "label.txt (the public hierarchical layout).")]
SkipBadRows = Annotated[bool, typer.Option(help="Skip and count malformed lines instead of stopping at the first.")]


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: Any) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def print_levels(title: str, rows: list[tuple[str, dict[str, Any], str]]) -> None:
    """One line per system: flat micro-F1 with its CI, parent and child micro / macro F1, invalid answers."""
    table = Table(title=title)
    for column in ("system", "n", "micro-F1 (flat) [95% CI]", "macro-F1", "parent micro / macro",
                   "child micro / macro", "invalid"):
        table.add_column(column)
    for name, scores, invalid in rows:
        table.add_row(name, str(scores["n"]), _f(scores["micro_f1"]) + _ci(scores.get("ci95", {}).get("micro_f1")),
                      _f(scores["macro_f1"]), f"{_f(scores['parent_micro_f1'])} / {_f(scores['parent_macro_f1'])}",
                      f"{_f(scores['child_micro_f1'])} / {_f(scores['child_macro_f1'])}", invalid)
    console.print(table)


def _print_results(paths: list[Path]) -> None:
    rows = []
    for path in paths:
        payload = json.loads(path.read_text(encoding="utf-8"))
        metrics = payload["metrics"]
        for mode in ("flexible", "strict"):
            scores = metrics[mode]
            rows.append((f"{payload['run']['system']} ({mode})", scores, f"{scores['n_invalid']} of {scores['n']}"))
    print_levels("cognitive pathway, test.txt", rows)
    console.print("results → " + ", ".join(map(str, paths)))


@app.command()
def train(
    pathway_dir: PathwayDir,
    out: Annotated[Path, typer.Option(help="Model directory (cognitive_pathway.pathway.pkl and .card.json); "
                                           "the analyzer reads it with --artifacts-dir.")],
    kinds: Annotated[str, typer.Option(help="Candidates, comma-separated: tfidf, e5 (frozen e5-small embeddings), "
                                            "tfidf+e5 (their average).")] = "tfidf,e5,tfidf+e5",
    c_grid: Annotated[str, typer.Option(help="Comma-separated C values of the logistic regressions.")] = "1,4,16",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the test CIs on the card.")] = 1000,
    results_dir: Annotated[Path | None, typer.Option(
        help="Also write the test predictions and a results JSON here, for `mentalglm report`.")] = None,
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Train the hierarchical classifier: chosen by dev micro-F1, thresholds per label tuned on dev, scored on test."""
    from mentalglm.train.embedding import EmbeddingCache, default_cache_path
    from mentalglm.train.pathway import train_pathway

    chosen_kinds = comma_list(kinds)
    cache = EmbeddingCache(default_cache_path()) if set(chosen_kinds) != {"tfidf"} else None
    model, card = train_pathway(pathway_dir, out, kinds=chosen_kinds, c_grid=[float(c) for c in comma_list(c_grid)],
                                n_resamples=resamples, skip_bad_rows=skip_bad_rows, log=err_console.print,
                                embedding_cache=cache)
    chosen = card["selection"]["chosen"]
    rows = [(f"{model.kind} (dev, chosen)", card["selection"]["dev"], "–")]
    if card["test"]:
        rows.append((f"{model.kind} (test)", card["test"], "–"))
    print_levels(f"cognitive pathway classifier: {json.dumps({k: v for k, v in chosen.items() if k != 'thresholds'})}",
                 rows)
    console.print(f"model → {out} ({card['train_seconds']} s); card: {out / 'cognitive_pathway.card.json'}")
    if results_dir is not None:
        from mentalglm.evaluate.pathway import evaluate_predictions, read_pathway_files, run_classifier

        files = read_pathway_files(pathway_dir, skip_bad_rows=skip_bad_rows)
        predictions = run_classifier(out, files, progress=False)
        _print_results(evaluate_predictions(predictions, files, results_dir / f"{predictions.stem}.results.json",
                                            n_resamples=resamples))


@app.command()
def predict(
    pathway_dir: PathwayDir,
    backend: Annotated[str | None, typer.Option(
        help="An LLM: llamacpp:default, hf:PATH, openai:MODEL, fake:echo (see `mentalglm predict`).")] = None,
    model: Annotated[Path | None, typer.Option(help="Or the classifier `pathway train --out` wrote.")] = None,
    few_shot: Annotated[int, typer.Option(help="LLM: K sentences of train.txt with their labels as earlier turns.")] = 0,
    limit: Annotated[int | None, typer.Option(help="LLM: N test sentences, a seeded sample stratified by label.")] = None,
    seed: int = DEFAULT_SEED,
    out: Annotated[Path | None, typer.Option(
        help="Predictions JSONL (LLM rows already in it are skipped: resume). "
             "Default outputs/predictions/cognitive_pathway.test.SYSTEM.jsonl")] = None,
    max_new_tokens: int = 256,
    format_hint: Annotated[bool, typer.Option(help="LLM: spell out the answer layout and the label names.")] = True,
    n_ctx: Annotated[int, typer.Option(help="Context size for llama.cpp backends.")] = 4096,
    batch_size: Annotated[int, typer.Option(help="LLM: requests per backend call.")] = 1,
    name: Annotated[str, typer.Option(help="System name in rows and reports (default: spec + shots).")] = "",
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Predict test.txt with an LLM (zero- or few-shot, C-IMHI layout) or the trained classifier."""
    from mentalglm.evaluate.pathway import read_pathway_files, run_classifier, run_llm

    if (backend is None) == (model is None):
        raise ConfigError("give either --backend SPEC (an LLM) or --model MODEL_DIR (the trained classifier)")
    files = read_pathway_files(pathway_dir, skip_bad_rows=skip_bad_rows)
    if model is not None:
        path = run_classifier(model, files, out)
    else:
        from mentalglm.backends.base import GenerationSettings
        from mentalglm.backends.registry import create_backend

        assert backend is not None
        with create_backend(backend, **({"n_ctx": n_ctx} if backend.startswith("llamacpp") else {})) as engine:
            path = run_llm(engine, backend, files, out, few_shot=few_shot, limit=limit, seed=seed,
                           settings=GenerationSettings(max_new_tokens=max_new_tokens, seed=seed),
                           format_hint=format_hint, batch_size=batch_size, name=name)
    console.print(f"predictions → {path} (score them with `mentalglm pathway evaluate {path} --pathway-dir "
                  f"{pathway_dir}`)")


@app.command()
def evaluate(
    predictions: Annotated[Path, typer.Argument(help="Predictions JSONL from `mentalglm pathway predict`.")],
    pathway_dir: PathwayDir,
    out: Annotated[Path | None, typer.Option(help="Results JSON (default PREDICTIONS.results.json).")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: int = 0,
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Score predictions on test.txt: flat, parent and child micro / macro F1, per label, CIs, INVALID counted."""
    from mentalglm.evaluate.pathway import evaluate_predictions, read_pathway_files

    files = read_pathway_files(pathway_dir, skip_bad_rows=skip_bad_rows)
    _print_results(evaluate_predictions(predictions, files, out, n_resamples=resamples, seed=seed))
