"""`mentalglm validate`: rating sheets for human experts out, their ratings and agreement in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.console import make_console
from mentalglm.files import atomic_write_text
from mentalglm.instruct.rubric import SCALES
from mentalglm.instruct.sheets import export_round, load_manifest, manifest_path
from mentalglm.instruct.validate import apply_decisions, import_round, report_markdown
from mentalglm.seeds import DEFAULT_SEED

app = typer.Typer(help="Human validation of C-IMHI answers: stratified rating sheets, agreement reports.",
                  no_args_is_help=True)
console = make_console()


@app.command("export")
def export(
    input_path: Annotated[Path, typer.Option("--input", help="Chat JSONL from `mentalglm instruct export`.")] = Path(
        "outputs/c-imhi/train.chat.jsonl"),
    n: Annotated[int, typer.Option("--n", help="Samples to rate.")] = 100,
    out: Annotated[Path, typer.Option(help="Sheet path (.xlsx, or .csv); several raters get .raterN before the suffix.")
                   ] = Path("sheets/round1.xlsx"),
    per_task_label_min: Annotated[int, typer.Option(help="At least this many samples per task and gold label.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the stratified draw.")] = DEFAULT_SEED,
    raters: Annotated[int, typer.Option(help="One identical sheet per rater.")] = 1,
) -> None:
    """Draw a stratified sample and write one rating sheet per rater plus a manifest."""
    manifest = export_round(input_path, out, n=n, min_per_label=per_task_label_min, seed=seed, raters=raters)
    table = Table(title=f"{len(manifest['samples'])} samples from {input_path} (seed {seed})")
    for column in ("task", "gold labels", "samples"):
        table.add_column(column)
    for task, strata in manifest["strata"].items():
        for labels, count in strata.items():
            table.add_row(task, labels or "(none)", str(count))
    console.print(table)
    for name in manifest["sheets"]:
        console.print(f"sheet: {out.with_name(name)}")
    console.print(f"manifest: {manifest_path(out)}")


@app.command("import")
def import_(
    sheets: Annotated[list[Path], typer.Argument(help="Completed sheets, one per rater.")],
    manifest: Annotated[Path, typer.Option(help="The manifest written by `validate export`.")],
    out: Annotated[Path, typer.Option(help="JSON report.")] = Path("validation_report.json"),
    md: Annotated[Path | None, typer.Option(help="Also write a Markdown report here.")] = None,
    allow_incomplete: Annotated[bool, typer.Option(help="Count empty rating cells instead of failing.")] = False,
    apply: Annotated[Path | None, typer.Option(help="Chat JSONL the sheets were drawn from.")] = None,
    accepted_out: Annotated[Path | None, typer.Option(help="Write the accepted samples of --apply here.")] = None,
) -> None:
    """Check completed sheets against the manifest; report acceptance, scale means and agreement."""
    if (apply is None) != (accepted_out is None):
        raise typer.BadParameter("--apply and --accepted-out go together")
    rated, report = import_round(sheets, manifest, allow_incomplete=allow_incomplete)
    atomic_write_text(out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    if md is not None:
        atomic_write_text(md, report_markdown(report))
    table = Table(title=f"human validation: {len(rated)} rater(s)")
    ordinal = [s.key for s in SCALES if s.level == "ordinal"]
    for column in ("group", "rated", "accepted", *(f"{k} mean" for k in ordinal)):
        table.add_column(column)
    for name, group in {"overall": report["overall"], **report["per_task"]}.items():
        means = [("–" if group["mean"][k] is None else f"{group['mean'][k]:.2f}") for k in ordinal]
        table.add_row(name, str(group["rated"]), f"{group['accepted']} ({group['acceptance_rate'] or 0:.0%})", *means)
    console.print(table)
    incomplete = sum(r["incomplete_rows"] for r in report["raters"])
    if incomplete:
        console.print(f"[yellow]{incomplete} incomplete rows (see raters in {out})[/yellow]")
    console.print(f"report: {out}" + (f", {md}" if md else ""))
    if apply is not None and accepted_out is not None:
        kept = apply_decisions(apply, load_manifest(manifest), report["decisions"], accepted_out)
        console.print(f"accepted samples: {kept} → {accepted_out}")
