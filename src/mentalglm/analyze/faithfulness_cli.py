"""`mentalglm faithfulness`: ERASER comprehensiveness / sufficiency of an engine's evidence on a task's split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.analyze.engine import DEFAULT_BACKEND, ENGINES, Analyzer
from mentalglm.analyze.faithfulness import faithfulness as measure
from mentalglm.console import comma_list, make_console
from mentalglm.data.sampling import stratified_sample
from mentalglm.data.splits import canonical_splits
from mentalglm.errors import ConfigError
from mentalglm.files import atomic_write_text
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks import CHINESE_MAIN_TASKS

console = make_console()
EXPLAINING_ENGINES = ("attribution", "hybrid")


def _cell(block: dict) -> str:
    if block["mean"] is None:
        return "–"
    return f"{block['mean']:.3f} [{block['ci95'][0]:.3f}, {block['ci95'][1]:.3f}]"


def faithfulness(
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids.")] = ",".join(CHINESE_MAIN_TASKS),
    engine: Annotated[str, typer.Option(help="attribution | hybrid: the engine whose evidence is measured.")] = "attribution",
    split: Annotated[str, typer.Option(help="Canonical split of each task (decontaminated).")] = "test",
    limit: Annotated[int | None, typer.Option(help="A stratified sample of this many posts (hybrid is slow).")] = None,
    backend: Annotated[str, typer.Option(help="LLM backend spec for hybrid.")] = DEFAULT_BACKEND,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
    artifacts_dir: Annotated[Path | None, typer.Option(help="Trained classifiers (analyze-train --out).")] = None,
    out: Annotated[Path, typer.Option(help="Directory of the results JSON files (read by `mentalglm report`).")] = Path(
        "results/faithfulness"),
    seed: Annotated[int, typer.Option(help="Seed of the sample, the random clauses and the bootstrap.")] = DEFAULT_SEED,
) -> None:
    """How much the quoted evidence carries each decision, against random clauses of the same length (ERASER)."""
    if engine not in EXPLAINING_ENGINES:
        raise ConfigError(f"engine {engine!r} quotes no evidence; choose {' or '.join(EXPLAINING_ENGINES)}"
                          f" (engines: {', '.join(ENGINES)})")
    table = Table(title=f"faithfulness of the {engine} engine's evidence ({split})")
    for column in ("task", "scored / posts", "comprehensiveness", "random clauses", "difference", "sufficiency",
                   "random clauses", "quotes found", "verifier agrees"):
        table.add_column(column)
    for task_id in comma_list(tasks):
        posts = canonical_splits(task_id, data_dir, include_extra=False)[0].get(split)
        if not posts:
            raise ConfigError(f"task {task_id} has no {split!r} split")
        if limit is not None:
            posts = stratified_sample(posts, limit, seed)
        with Analyzer([task_id], engine, backend, artifacts_dir) as analyzer:  # type: ignore[arg-type]
            result = measure(analyzer, task_id, [p.text for p in posts], seed=seed)
        result["split"] = split
        name = f"{task_id}.{engine}.{split}" + (f".n{limit}" if limit is not None else "") + ".json"
        atomic_write_text(out / name, json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        c, s = result["comprehensiveness"], result["sufficiency"]
        found, agrees = result["quotes_found_in_post"]["mean"], result["verifier_agrees"]["rate"]
        table.add_row(task_id, f"{result['n_scored']} / {result['n_posts']}", _cell(c["evidence"]),
                      _cell(c["random_clauses"]), _cell(c["evidence_minus_random"]), _cell(s["evidence"]), _cell(s["random_clauses"]),
                      "–" if found is None else f"{found:.1%}", "–" if agrees is None else f"{agrees:.1%}")
        console.print(f"{task_id}: → {out / name}")
    console.print(table)
    console.print("comprehensiveness: drop of the decided label's probability when the evidence is removed (higher "
                  "= the decision rests on it); sufficiency: drop when only the evidence is kept (lower = enough).")
