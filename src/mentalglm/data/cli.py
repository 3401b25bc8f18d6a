"""`mentalglm data`: row counts per task, split and label (with decontamination), and where each dataset comes from."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table

from mentalglm.console import make_console
from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles, pathway_summary
from mentalglm.data.manifest import dataset_entry, manifest
from mentalglm.data.records import Post
from mentalglm.data.registry import LoadReport, all_loaders
from mentalglm.data.splits import TRAIN, canonical_splits
from mentalglm.errors import MentalGLMError, MissingDataError
from mentalglm.tasks import get_task, list_tasks
from mentalglm.tasks.pathway import SEPARATOR

app = typer.Typer(help="Inspect the public datasets: rows per task, split and label; sources and checksums.",
                  no_args_is_help=True)
console = make_console()

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: $MENTALGLM_DATA_DIR).")]
PathwayDirOption = Annotated[Path | None, typer.Option(
    "--pathway-dir", help="Your cognitive pathway files (train.txt, dev.txt, test.txt, label.txt; docs/pathway.md).")]


def _counts(posts: list[Post], report: LoadReport) -> dict[str, Any]:
    labels = Counter(label for post in posts for label in post.labels)
    return {"rows": len(posts), "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            "skipped_bad_rows": report.skipped_bad_rows}


def collect_stats(data_dir: Path | str | None = None, tasks: list[str] | None = None, *,
                  skip_bad_rows: bool = False, verify: bool = True,
                  pathway_dir: Path | str | None = None) -> dict[str, Any]:
    """Everything `data stats` shows, as plain data.

    A part that cannot be read (a file missing from the snapshot, a bad row) becomes a problem
    in the result rather than aborting the whole overview; a missing data directory still raises,
    unless ``pathway_dir`` is given: then the overview is of the pathway files alone.
    """
    result: dict[str, Any] = {"data_dir": None, "splits": [], "pools": [], "datasets": [], "problems": []}
    if pathway_dir is not None:
        try:
            result["pathway"] = pathway_summary(pathway_dir, skip_bad_rows=skip_bad_rows)
        except MentalGLMError as exc:
            result["problems"].append(f"cognitive pathway files: {exc}")
        try:
            root = resolve_data_dir(data_dir)
        except MissingDataError:
            return result  # the pathway files are the user's own: they need no data directory
    else:
        root = resolve_data_dir(data_dir)
    result["data_dir"] = str(root)
    options = {"skip_bad_rows": skip_bad_rows, "verify": verify}
    loaders: dict[str, Any] = all_loaders()
    if pathway_dir is not None:
        loaders[CognitivePathwayFiles.name] = CognitivePathwayFiles(pathway_dir)
    chosen = [get_task(t) for t in tasks] if tasks else list_tasks()
    missing: set[str] = set()
    used: set[tuple[str, str]] = set()
    cache: dict[tuple[str, str], dict[str, Any]] = {}

    def part_counts(dataset: str, part: str) -> dict[str, Any]:
        if (dataset, part) not in cache:
            try:
                if dataset not in loaders:
                    raise MentalGLMError(f"no loader is registered for dataset {dataset!r}")
                cache[dataset, part] = _counts(*loaders[dataset].load(root, part, **options))
            except MentalGLMError as exc:
                if isinstance(exc, MissingDataError) and dataset == CognitivePathwayFiles.name:
                    missing.add(dataset)
                result["problems"].append(f"{dataset}/{part}: {exc}")
                cache[dataset, part] = {"rows": None, "labels": {}, "skipped_bad_rows": 0, "error": str(exc)}
        return cache[dataset, part]

    for task in chosen:
        for split in task.splits:
            used.add((split.dataset, split.part))
            result["splits"].append({"task": task.id, "split": split.name, "dataset": split.dataset,
                                     "part": split.part, **part_counts(split.dataset, split.part)})
        has_train = any(s.name == TRAIN for s in task.splits)
        if not has_train or any("error" in part_counts(s.dataset, s.part) for s in task.splits):
            continue  # a pool needs every split; the problem is already listed
        try:
            _, report = canonical_splits(task.id, root, **options)
        except MentalGLMError as exc:
            result["problems"].append(f"{task.id} training pool: {exc}")
            continue
        for source in report.pool.sources:
            result["pools"].append({"task": task.id, "source": source.name, "dataset": source.dataset,
                                    "part": source.part, "loaded": source.loaded,
                                    "in_evaluation_splits": source.contaminated, "duplicates": source.duplicates,
                                    "kept": source.kept})
        for name, dropped in report.dropped_against_test.items():
            result["pools"].append({"task": task.id, "source": f"{name} (vs test)", "dataset": "", "part": name,
                                    "loaded": None, "in_evaluation_splits": dropped, "duplicates": 0, "kept": None})
    if not tasks:
        for name, loader in loaders.items():
            if name in missing or (name == CognitivePathwayFiles.name and "pathway" in result):
                continue  # one problem line for files the user has not given; given ones have their own table
            for part in loader.parts():
                if (name, part) not in used:
                    result["datasets"].append({"dataset": name, "part": part, "task": loader.task,
                                               **part_counts(name, part)})
    return result


def _labels(counts: dict[str, int], limit: int = 12) -> str:
    shown = [f"{label} {n}" for label, n in list(counts.items())[:limit]]
    return ", ".join(shown) + (f", … {len(counts) - limit} more" if len(counts) > limit else "")


def _rows(item: dict[str, Any]) -> str:
    return "[red]error[/red]" if item.get("error") else str(item["rows"])


def _print_pathway(stats: dict[str, Any]) -> None:
    parts = stats["parts"]
    table = Table(title=f"cognitive pathway files ({stats['dir']}): {stats['labels']} labels in label.txt, "
                        f"{stats['children']} of them children; a child counts for its parent too")
    table.add_column("label")
    for part in parts:
        table.add_column(f"{part['part']} ({part['rows']})", justify="right")
    for label in parts[0]["labels"]:
        table.add_row(("  " if SEPARATOR in label else "") + label, *(str(part["labels"][label]) for part in parts))
    console.print(table)
    skipped = {part["part"]: part["skipped_bad_rows"] for part in parts if part["skipped_bad_rows"]}
    notes = [f"test sentences also in train (after normalisation): {stats['test_also_in_train']}"]
    if stats["unused_labels"]:
        notes.append(f"labels of label.txt no file uses: {', '.join(stats['unused_labels'])}")
    if skipped:
        notes.append(f"bad rows skipped: {skipped}")
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def _print_stats(stats: dict[str, Any]) -> None:
    if stats.get("pathway"):
        _print_pathway(stats["pathway"])
    if stats["data_dir"] is None:
        for problem in stats["problems"]:
            console.print(f"[yellow]problem:[/yellow] {problem}", highlight=False, soft_wrap=True)
        return
    table = Table(title=f"task splits ({stats['data_dir']})")
    for column in ("task", "split", "dataset/part"):
        table.add_column(column, no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("labels")
    table.add_column("bad rows skipped", justify="right")
    for item in stats["splits"]:
        table.add_row(item["task"], item["split"], f"{item['dataset']}/{item['part']}", _rows(item),
                      _labels(item["labels"]), str(item["skipped_bad_rows"] or ""))
    console.print(table)
    if stats["pools"]:
        table = Table(title="training pools: dropped when the normalised text is in validation/test, or repeated")
        for column in ("task", "source", "dataset/part"):
            table.add_column(column, no_wrap=True)
        for column in ("loaded", "in eval splits", "duplicates", "kept"):
            table.add_column(column, justify="right")
        for item in stats["pools"]:
            table.add_row(item["task"], item["source"], f"{item['dataset']}/{item['part']}" if item["dataset"] else "",
                          *("" if item[k] is None else str(item[k])
                            for k in ("loaded", "in_evaluation_splits", "duplicates", "kept")))
        console.print(table)
    if stats["datasets"]:
        table = Table(title="other dataset parts (not a canonical task split)")
        for column in ("dataset", "part", "rows", "labels", "bad rows skipped"):
            table.add_column(column)
        for item in stats["datasets"]:
            table.add_row(item["dataset"], item["part"], _rows(item), _labels(item["labels"], 8),
                          str(item["skipped_bad_rows"] or ""))
        console.print(table)
    for problem in stats["problems"]:
        console.print(f"[yellow]problem:[/yellow] {problem}", highlight=False, soft_wrap=True)


@app.command()
def stats(
    data_dir: DataDirOption = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Only this task (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Skip and count malformed rows.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not check files against their SHA-256.")] = False,
    pathway_dir: PathwayDirOption = None,
) -> None:
    """Rows per task, split and label; what decontamination removed from each training pool; other datasets."""
    result = collect_stats(data_dir, task or None, skip_bad_rows=skip_bad_rows, verify=not no_verify,
                           pathway_dir=pathway_dir)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_stats(result)


def _source_entries(name: str | None) -> list[dict[str, Any]]:
    entries = [dataset_entry(name)] if name else list(manifest().values())
    loaders = all_loaders()
    return [{"dataset": e.name, "folder": e.folder, "source": e.source, "commit": e.commit, "licence": e.licence,
             "citation": e.citation, "note": e.note, "extra_sources": list(e.extra_sources),
             "loader": e.name in loaders, "files": e.files} for e in entries]


@app.command()
def sources(
    dataset: Annotated[str | None, typer.Argument(help="One dataset (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Public source, commit, licence, and the SHA-256 of every file each loader reads."""
    entries = _source_entries(dataset)
    if as_json:
        typer.echo(json.dumps(entries, ensure_ascii=False, indent=2))
        return
    for entry in entries:
        console.print(f"[bold]{entry['dataset']}[/bold] -> <data-dir>/{entry['folder']}/", highlight=False)
        console.print(f"  source:  {entry['source']} @ {entry['commit']}", highlight=False, soft_wrap=True)
        for extra in entry["extra_sources"]:
            console.print(f"  also:    {extra.get('source')} @ {extra.get('commit', '')} {extra.get('note', '')}",
                          highlight=False, soft_wrap=True)
        console.print(f"  licence: {entry['licence']}", highlight=False, soft_wrap=True)
        for key in ("citation", "note"):
            if entry[key]:
                console.print(f"  {key}: {' ' * (7 - len(key))}{entry[key]}", highlight=False, soft_wrap=True)
        # sha256sum format: cd <data-dir>/<folder> && mentalglm data sources NAME | sed -n 's/^    //p' | sha256sum -c
        for path, digest in entry["files"].items():
            typer.echo(f"    {digest}  {path}")


def main(argv: list[str] | None = None) -> int:
    """Run this sub-app on its own; a MentalGLMError becomes one line on stderr, as in the top-level CLI."""
    try:
        app(args=argv, prog_name="mentalglm data", standalone_mode=False)
    except MentalGLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
