"""Rating sheets for a human-validation round: a seeded stratified sample out (XLSX with dropdowns, or CSV, and a
manifest tying the sheets to the exact source file), the completed sheets read back and checked against it."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentalglm.data.pii import scrub
from mentalglm.data.sampling import QuotaError, quota_sample
from mentalglm.errors import MentalGLMError
from mentalglm.files import atomic_write_text, read_jsonl, sha256_file
from mentalglm.instruct.rubric import SCALE_BY_KEY, SCALES, instructions_text
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks import get_task
from mentalglm.tasks.layout import render_labels

MANIFEST_FORMAT = "mentalglm-validation/1"
DATA_SHEET = "samples"
INSTRUCTIONS_SHEET = "instructions"


class ValidationSheetError(MentalGLMError):
    """A sheet, manifest or source file does not match what was exported; names the file and row."""


TEXT_COLUMNS = (("sample_id", "样本编号"), ("task", "任务"), ("post", "帖子（已脱敏）"),
                ("gold_label", "标注标签"), ("explanation", "解释"))
COLUMNS = (*TEXT_COLUMNS, *((s.key, s.zh) for s in SCALES), ("comment", "备注"))
HEADERS = [f"{key} {zh}" for key, zh in COLUMNS]  # the import reads the key, the first word




# ---------------------------------------------------------------- export


def load_chat_jsonl(path: Path) -> list[dict[str, Any]]:
    """Chat rows (``Instruction.to_chat()``); ids must be unique because sheets and --apply match on them."""
    if not path.is_file():
        raise ValidationSheetError(f"{path}: no such file (export it with `mentalglm instruct export`)")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, row in read_jsonl(path, ValidationSheetError):
        if not isinstance(row, dict) or not {"id", "task", "messages", "labels"} <= row.keys():
            raise ValidationSheetError(f"{path}:{number}: not a chat sample (needs id, task, messages, labels)")
        if row["id"] in seen:
            raise ValidationSheetError(f"{path}:{number}: id {row['id']!r} repeats line {seen[row['id']]}")
        seen[row["id"]] = number
        rows.append(row)
    return rows


def _label_keys(sample: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(sample["labels"])) or ("",)  # a multi-label post with no label is its own class


def _stratum(sample: dict[str, Any]) -> tuple[str, str]:
    return sample["task"], "+".join(_label_keys(sample))


def stratified_sample(samples: Sequence[dict[str, Any]], n: int, *, min_per_label: int = 2,
                      seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """The samples of a round: ``n`` exactly, by task and gold labels (data/sampling.py ``quota_sample``), grouped
    by task, so that rare classes are rated at all."""
    try:
        return quota_sample(samples, n, group=lambda s: s["task"], labels=_label_keys, seed=seed,
                            min_per_label=min_per_label)
    except QuotaError as exc:
        raise ValidationSheetError(
            f"--n {n} is too small: a minimum of {min_per_label} per task and label over {exc.pairs} "
            f"(task, label) pairs needs {exc.needed} samples; raise --n or lower --per-task-label-min") from None


@dataclass(frozen=True)
class SheetRow:
    sample_id: str
    task: str
    post: str
    gold_label: str
    explanation: str


def sheet_row(sample: dict[str, Any]) -> SheetRow:
    task = get_task(sample["task"])
    user = next((m["content"] for m in sample["messages"] if m["role"] == "user"), "")
    post = (sample.get("meta") or {}).get("post") or user
    # Scrubbed again: the chat file may come from elsewhere, and sheets leave the machine.
    return SheetRow(str(sample["id"]), task.id, scrub(post).text, render_labels(task, sample["labels"]),
                    scrub(sample.get("explanation") or "").text)


def _atomic_save_workbook(workbook: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        workbook.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_xlsx(path: Path, rows: Sequence[SheetRow], rater: str) -> None:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = DATA_SHEET
    sheet.append(HEADERS)
    for row in rows:
        sheet.append([ILLEGAL_CHARACTERS_RE.sub("", v)  # control characters XLSX cannot hold
                      for v in (row.sample_id, row.task, row.post, row.gold_label, row.explanation)])
    for cells in sheet.iter_rows(min_row=2, max_col=len(TEXT_COLUMNS)):
        for cell in cells:
            cell.data_type = "s"  # a post starting with "=" is text, never a formula
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    widths = {"post": 60, "explanation": 60, "comment": 30}
    for index, (key, _) in enumerate(COLUMNS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = widths.get(key, 16)
    sheet.freeze_panes = "C2"
    last = len(rows) + 1
    for index, scale in enumerate(SCALES, start=len(TEXT_COLUMNS) + 1):
        column = get_column_letter(index)
        check = DataValidation(type="list", formula1=f'"{",".join(t for t, _ in scale.choices)}"', allow_blank=True,
                               showErrorMessage=True, errorTitle=scale.key, error=f"{scale.zh}: {scale.allowed}",
                               showInputMessage=True, promptTitle=f"{scale.key} {scale.zh}",
                               prompt=scale.rule_zh[:255])
        check.add(f"{column}2:{column}{max(last, 2)}")
        sheet.add_data_validation(check)
    guide = workbook.create_sheet(INSTRUCTIONS_SHEET)
    guide.column_dimensions["A"].width = 140
    for line in instructions_text(rater):
        guide.append([line])
        guide.cell(guide.max_row, 1).alignment = Alignment(wrap_text=True)
    _atomic_save_workbook(workbook, path)


def _csv_safe(value: str) -> str:
    """Spreadsheet apps run cells starting with = + - @ as formulas (scrubbed handles start with @)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _write_csv(path: Path, rows: Sequence[SheetRow], rater: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADERS)
    for row in rows:
        writer.writerow([row.sample_id, row.task, _csv_safe(row.post), row.gold_label, _csv_safe(row.explanation)])
    atomic_write_text(path, "\ufeff" + buffer.getvalue())  # the BOM makes Excel read UTF-8 Chinese
    atomic_write_text(path.with_name(path.stem + ".instructions.txt"), "\n".join(instructions_text(rater)) + "\n")


def write_sheet(path: Path, rows: Sequence[SheetRow], rater: str = "1") -> None:
    """XLSX with dropdowns and an instructions tab; CSV (plus an instructions .txt) when the suffix is .csv."""
    (_write_csv if path.suffix.lower() == ".csv" else _write_xlsx)(path, rows, rater)


def sheet_paths(out: Path, raters: int) -> list[Path]:
    """``round1.xlsx`` for one rater, ``round1.rater1.xlsx`` ... for several."""
    if raters == 1:
        return [out]
    return [out.with_name(f"{out.stem}.rater{r}{out.suffix}") for r in range(1, raters + 1)]


def manifest_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.manifest.json")


def export_round(source: Path, out: Path, *, n: int = 100, min_per_label: int = 2, seed: int = DEFAULT_SEED,
                 raters: int = 1) -> dict[str, Any]:
    """Write the rater sheets and the manifest; returns the manifest."""
    if n < 1 or raters < 1 or min_per_label < 0:
        raise ValidationSheetError("--n and --raters must be at least 1 and --per-task-label-min at least 0")
    rows = load_chat_jsonl(source)
    explained = [r for r in rows if (r.get("explanation") or "").strip()]
    if not explained:
        raise ValidationSheetError(f"{source}: no sample has an explanation to rate")
    for row in explained:
        get_task(row["task"])  # an unknown task fails here, before any file is written
    chosen = stratified_sample(explained, n, min_per_label=min_per_label, seed=seed)
    sheet_rows = [sheet_row(s) for s in chosen]
    paths = sheet_paths(out, raters)
    for number, path in enumerate(paths, start=1):
        write_sheet(path, sheet_rows, rater=f"{number} / {raters}")
    strata: dict[str, dict[str, int]] = defaultdict(dict)
    for (task, labels), count in sorted(Counter(_stratum(s) for s in chosen).items()):
        strata[task][labels] = count
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": str(source),
        "source_sha256": sha256_file(source),
        "source_rows": len(rows),
        "source_rows_with_explanation": len(explained),
        "seed": seed,
        "n": n,
        "per_task_label_min": min_per_label,
        "raters": raters,
        "sheets": [p.name for p in paths],
        "samples": [{"id": r.sample_id, "task": r.task} for r in sheet_rows],
        "strata": dict(strata),
        "scales": {s.key: {"choices": [t for t, _ in s.choices], "level": s.level, "en": s.rule_en, "zh": s.rule_zh}
                   for s in SCALES},
    }
    atomic_write_text(manifest_path(out), json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
    return manifest


# ---------------------------------------------------------------- import


@dataclass
class RatedSheet:
    """One rater's answers: sample id -> scale key -> code (accept: 1 yes, 0 no; None when left empty)."""

    path: Path
    ratings: dict[str, dict[str, int | None]] = field(default_factory=dict)
    incomplete: int = 0

    @property
    def rater(self) -> str:
        return self.path.name


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationSheetError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValidationSheetError(f"{path}: not a {MANIFEST_FORMAT} manifest (write one with `mentalglm validate export`)")
    return manifest


def _sheet_cells(path: Path) -> list[list[Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return [list(r) for r in csv.reader(handle)]
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook[DATA_SHEET] if DATA_SHEET in workbook.sheetnames else workbook.worksheets[0]
        return [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def _cell_id(raw: Any) -> str:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return "" if raw is None else str(raw).strip()


def read_sheet(path: Path, expected: dict[str, str], *, allow_incomplete: bool = False) -> RatedSheet:
    """Ratings of one completed sheet, checked against the manifest's ``{sample id: task}``."""
    if not path.is_file():
        raise ValidationSheetError(f"{path}: no such sheet")
    try:
        cells = _sheet_cells(path)
    except (OSError, ValueError, KeyError) as exc:  # openpyxl raises these on files that are not XLSX
        raise ValidationSheetError(f"{path}: cannot read the sheet ({exc})") from None
    if not cells:
        raise ValidationSheetError(f"{path}: the sheet is empty")
    header = {str(v).split()[0]: i for i, v in enumerate(cells[0]) if v is not None and str(v).split()}
    missing = [key for key in ("sample_id", "task", *SCALE_BY_KEY) if key not in header]
    if missing:
        raise ValidationSheetError(f"{path}: row 1 lacks the columns {missing}; rate a sheet written by "
                                   "`mentalglm validate export` without renaming its header")
    result = RatedSheet(path)
    for number, values in enumerate(cells[1:], start=2):
        values = values + [None] * (len(cells[0]) - len(values))
        if all(v is None or str(v).strip() == "" for v in values):
            continue
        sample_id = _cell_id(values[header["sample_id"]])
        if sample_id not in expected:
            raise ValidationSheetError(f"{path}: row {number}: sample_id {sample_id!r} is not in the manifest; "
                                       "restore the exported sheet's ids")
        if sample_id in result.ratings:
            raise ValidationSheetError(f"{path}: row {number}: sample_id {sample_id!r} appears twice")
        task = _cell_id(values[header["task"]])
        if task != expected[sample_id]:
            raise ValidationSheetError(f"{path}: row {number}: task {task!r} differs from the manifest's "
                                       f"{expected[sample_id]!r} for {sample_id!r}")
        ratings: dict[str, int | None] = {}
        for scale in SCALES:
            try:
                ratings[scale.key] = scale.parse(values[header[scale.key]])
            except ValueError as exc:
                raise ValidationSheetError(f"{path}: row {number}: {exc}") from None
            if ratings[scale.key] is None and not allow_incomplete:
                raise ValidationSheetError(f"{path}: row {number}: {scale.key} is empty; fill it (allowed: "
                                           f"{scale.allowed}) or pass --allow-incomplete to count such rows")
        result.incomplete += any(v is None for v in ratings.values())
        result.ratings[sample_id] = ratings
    absent = [i for i in expected if i not in result.ratings]
    if absent and not allow_incomplete:
        raise ValidationSheetError(f"{path}: {len(absent)} manifest samples have no row (first: {absent[0]!r}); "
                                   "restore the deleted rows or pass --allow-incomplete")
    result.incomplete += len(absent)
    return result
