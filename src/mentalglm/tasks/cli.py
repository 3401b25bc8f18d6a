"""`mentalglm tasks`: list the declared tasks and show one declaration."""

from __future__ import annotations

import typer
from rich.table import Table

from mentalglm.console import make_console
from mentalglm.tasks.registry import get_task, list_tasks

app = typer.Typer(help="List and inspect task declarations.", no_args_is_help=True)
console = make_console()


@app.command("list")
def list_() -> None:
    """One row per task: id, language, type, labels, official metric."""
    table = Table(title="tasks")
    for column in ("id", "name", "lang", "type", "labels", "official metric", "splits"):
        table.add_column(column)
    for task in list_tasks():
        table.add_row(task.id, task.name_zh if task.language == "zh" else task.name_en, task.language, task.type.value,
                      str(len(task.labels)), task.official_metric, ", ".join(s.name for s in task.splits))
    console.print(table)


@app.command()
def show(task_id: str) -> None:
    """Labels with their Chinese definitions, the instruction template and the splits of one task."""
    task = get_task(task_id)
    console.print(f"[bold]{task.id}[/bold] v{task.version} — {task.name_zh} / {task.name_en} ({task.source})")
    console.print(task.description_zh)
    table = Table()
    for column in ("id", "zh", "en", "definition"):
        table.add_column(column)
    for label in task.labels:
        table.add_row(label.id + (" *" if label.positive else ""), label.zh, label.en, label.definition_zh)
    console.print(table)
    console.print(f"instruction: {task.instruction}\nquestion: {task.question}")
    console.print(f"official metric: {task.official_metric}; report: {', '.join(task.report_metrics)}")
    for split in task.splits:
        console.print(f"split {split.name}: {split.dataset}/{split.part} {split.note}")
    for kind, levels in task.notices.items():
        console.print(f"notice {kind}: raised by {', '.join(levels)}")
    if task.screen is not None:
        screen = task.screen
        console.print(f"screen: nothing evident = {screen.none_label or '(no label)'} {screen.none_zh} / "
                      f"{screen.none_en}; flags at most {screen.max_negative_flagged:.1%} of negative validation posts")
        for role, sources in (("train", screen.train), ("validation", screen.validation), ("test", screen.test)):
            for split in sources:
                given = {None: "", "": " as nothing", "*": " as some label"}.get(split.label, f" as {split.label}")
                labels = split.only_label if not isinstance(split.only_label, tuple) else "/".join(split.only_label)
                only = f" (posts labelled {labels})" if labels is not None else ""
                console.print(f"screen {role}: {split.dataset}/{split.part}{only}{given}"
                              + (f", {split.limit} drawn" if split.limit else "")
                              + (f", weight {split.repeat}" if split.repeat > 1 else ""))
