"""`mentalglm instruct`: turn the labelled posts of a data directory into C-IMHI instruction files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.console import comma_list, make_console
from mentalglm.data.instructions import Instruction, make_instruction
from mentalglm.files import atomic_write_text
from mentalglm.instruct.card import dataset_card
from mentalglm.instruct.export import FORMATS, export_samples
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.registry import CHINESE_MAIN_TASKS, get_task

app = typer.Typer(help="Build C-IMHI instruction samples (chat JSONL, Alpaca JSON, HF datasets).", no_args_is_help=True)
console = make_console()



def build_instructions(task_ids: list[str], splits: list[str], data_dir: Path | None, *, limit: int | None = None,
                       seed: int = DEFAULT_SEED, skip_bad_rows: bool = False, verify: bool = True
                       ) -> tuple[dict[str, list[Instruction]], dict[str, object]]:
    """Gold-label instructions per canonical (pairwise disjoint) split; explanations come from the source when it has one."""
    from dataclasses import asdict

    from mentalglm.data.datadir import resolve_data_dir
    from mentalglm.data.splits import canonical_splits

    root = resolve_data_dir(data_dir)
    by_split: dict[str, list[Instruction]] = {s: [] for s in splits}
    decontamination: dict[str, object] = {}
    for task_id in task_ids:
        task = get_task(task_id)
        canonical, report = canonical_splits(task_id, root, include_extra=False, skip_bad_rows=skip_bad_rows,
                                             verify=verify)
        decontamination[task_id] = {"training_pool": [asdict(s) for s in report.pool.sources],
                                    "validation_dropped_against_test": report.dropped_against_test}
        for split in splits:
            if split not in canonical:
                raise ValueError(f"task {task_id} has no split {split!r}; splits: {', '.join(canonical)}")
            posts = canonical[split]
            if limit is not None and len(posts) > limit:
                posts = random.Random(seed).sample(posts, limit)
            by_split[split].extend(make_instruction(task, p, p.meta.get("explanation")) for p in posts)
    return by_split, decontamination


@app.command("export")
def export(
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids.")] = ",".join(CHINESE_MAIN_TASKS),
    splits: Annotated[str, typer.Option(help="Comma-separated canonical splits.")] = "train,validation,test",
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("outputs/c-imhi"),
    formats: Annotated[str, typer.Option("--format", help=f"Comma-separated: {', '.join(FORMATS)}.")] = "chat,alpaca",
    limit: Annotated[int | None, typer.Option(help="At most this many posts per task and split (seeded sample).")] = None,
    seed: int = DEFAULT_SEED,
    check: Annotated[bool, typer.Option(help="Parse every answer back (strict) and fail on any INVALID.")] = True,
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip and count malformed rows instead of failing.")] = False,
    verify: Annotated[bool, typer.Option(help="Verify the SHA-256 of every data file read.")] = True,
) -> None:
    """Export gold-label instructions; training splits are decontaminated against evaluation splits."""
    task_ids, split_names, format_names = comma_list(tasks), comma_list(splits), comma_list(formats)
    for task_id in task_ids:
        get_task(task_id)  # fail on a typo before reading any data
    with console.status("reading the data directory"):
        by_split, decontamination = build_instructions(task_ids, split_names, data_dir, limit=limit, seed=seed,
                                                       skip_bad_rows=skip_bad_rows, verify=verify)
    table = Table(title=f"C-IMHI export → {out}")
    for column in ("split", "rows", "invalid (strict)", "PII replaced", "files"):
        table.add_column(column)
    invalid_total = 0
    pii_total: dict[str, int] = {}
    for split, samples in by_split.items():
        invalid = _count_invalid(samples) if check else 0
        invalid_total += invalid
        result = export_samples(samples, out, split, format_names)
        for kind, n in result["pii_replaced"].items():
            pii_total[kind] = pii_total.get(kind, 0) + n
        table.add_row(split, str(result["rows"]), str(invalid) if check else "-",
                      str(sum(result["pii_replaced"].values())), ", ".join(Path(f).name for f in result["files"].values()))
    console.print(table)
    card = dataset_card(by_split, {"Decontamination (training posts dropped)": decontamination,
                                   "PII placeholders inserted": pii_total})
    atomic_write_text(out / "README.md", card)
    console.print(f"dataset card: {out / 'README.md'}")
    if invalid_total:
        console.print(f"[red]{invalid_total} answers did not parse back to their gold labels[/red]")
        raise typer.Exit(1)


def _count_invalid(samples: list[Instruction]) -> int:
    """Answers whose strict parse differs from the gold labels (the round-trip contract of the layout)."""
    from mentalglm.tasks.parsing import parse

    bad = 0
    for sample in samples:
        parsed = parse(get_task(sample.task), sample.answer, mode="strict")
        if not parsed.valid or set(parsed.labels) != set(sample.labels):
            bad += 1
    return bad
