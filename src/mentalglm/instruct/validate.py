"""Human validation of C-IMHI answers: rating sheets out, expert ratings and agreement in.

The teacher LLM writes the explanations, so they are only trusted after experts rate a sample
of them, as the MentalGLM paper did. This module makes that step reproducible: a seeded sample
stratified by task and gold label, one identical sheet per rater, a manifest that ties the
sheets to the exact source file, and a report with acceptance rates, scale means and
inter-rater agreement (Cohen's kappa for two raters; Fleiss' kappa and Krippendorff's alpha
for three or more).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mentalglm.data.pii import scrub
from mentalglm.errors import MentalGLMError
from mentalglm.files import atomic_write_text, read_jsonl, write_jsonl
from mentalglm.tasks import get_task
from mentalglm.tasks.layout import render_labels

MANIFEST_FORMAT = "mentalglm-validation/1"
DATA_SHEET = "samples"
Level = Literal["ordinal", "nominal"]  # krippendorff's names for the two levels used here
INSTRUCTIONS_SHEET = "instructions"


class ValidationSheetError(MentalGLMError):
    """A sheet, manifest or source file does not match what was exported; names the file and row."""


@dataclass(frozen=True)
class Scale:
    """One rating column: the answers a rater may give, their numeric codes and the wording raters see."""

    key: str
    zh: str
    choices: tuple[tuple[str, int], ...]  # (text in the dropdown, code), in scale order
    level: Level
    rule_en: str
    rule_zh: str
    aliases: tuple[tuple[str, int], ...] = ()

    @property
    def codes(self) -> list[int]:
        return [code for _, code in self.choices]

    @property
    def allowed(self) -> str:
        return ", ".join(text for text, _ in self.choices)

    def parse(self, raw: Any) -> int | None:
        """The code of a cell; None when empty. Excel may hand back 2, 2.0 or "2" for the same choice."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        text = str(raw).strip().lower()
        lookup = {name.lower(): code for name, code in (*self.choices, *self.aliases)}
        if isinstance(raw, bool) or text not in lookup:
            raise ValueError(f"{self.key} value {raw!r} is out of range; allowed: {self.allowed}")
        return lookup[text]


def _ordinal(low: int, high: int) -> tuple[tuple[str, int], ...]:
    return tuple((str(v), v) for v in range(low, high + 1))


SCALES: tuple[Scale, ...] = (
    Scale(
        "consistency", "一致性", _ordinal(0, 2), "ordinal",
        "Does the explanation support the gold label? 0 = contradicts the label; 1 = partly supports it "
        "(relevant but incomplete or mixed); 2 = fully supports it.",
        "解释是否支持所给标签？0 = 与标签矛盾；1 = 部分支持（相关但不完整或前后不一）；2 = 完全支持。",
    ),
    Scale(
        "reliability", "可靠性", _ordinal(1, 5), "ordinal",
        "Factual grounding: are the claims grounded in the post? 1 = largely invented (facts, quotes or events "
        "the post does not contain); 2 = several claims not supported by the post, or a quote that is not in it; "
        "3 = mostly grounded, but at least one unsupported claim; 4 = grounded, with minor over-interpretation "
        "that does not change the conclusion; 5 = every claim is grounded in the post, no invented facts.",
        "事实依据：解释中的陈述是否都能在帖子中找到依据？1 = 大部分为编造（帖子中没有的事实、引文或事件）；"
        "2 = 多处陈述在帖子中没有依据，或引用了帖子中没有的原话；3 = 大体有依据，但至少有一处没有依据的陈述；"
        "4 = 有依据，仅有轻微过度解读，不影响结论；5 = 所有陈述均有帖子依据，没有编造的事实。",
    ),
    Scale(
        "professionalism", "专业性", _ordinal(1, 5), "ordinal",
        "Is the language appropriate for clinical use? 1 = stigmatising and diagnostic, or harmful (e.g. "
        "trivialises risk); 2 = contains a stigmatising term or reads as a diagnosis; 3 = acceptable but "
        "judgemental, alarmist or casual in places; 4 = appropriate, with minor wording issues; "
        "5 = appropriate clinical language, no stigmatising terms, not a diagnosis.",
        "用语是否符合临床专业要求？1 = 含污名化表述且下诊断，或有害（如轻视风险）；2 = 含污名化词语，或读起来像诊断；"
        "3 = 尚可，但部分措辞带评判、危言耸听或过于随意；4 = 恰当，仅有轻微措辞问题；"
        "5 = 临床用语恰当，无污名化词语，不构成诊断。",
    ),
    Scale(
        "accept", "是否接受", (("yes", 1), ("no", 0)), "nominal",
        "Accept this sample for training as it is? yes / no. Say no when the label is wrong, the explanation "
        "contradicts it, invents facts, stigmatises or diagnoses.",
        "该样本能否原样用于训练？yes（是）/ no（否）。标签错误、解释与标签矛盾、编造事实、含污名化表述或下诊断时请选 no。",
        aliases=(("是", 1), ("否", 0), ("y", 1), ("n", 0)),
    ),
)
SCALE_BY_KEY = {scale.key: scale for scale in SCALES}
ACCEPT = SCALE_BY_KEY["accept"]
TEXT_COLUMNS = (("sample_id", "样本编号"), ("task", "任务"), ("post", "帖子（已脱敏）"),
                ("gold_label", "标注标签"), ("explanation", "解释"))
COLUMNS = (*TEXT_COLUMNS, *((s.key, s.zh) for s in SCALES), ("comment", "备注"))
HEADERS = [f"{key} {zh}" for key, zh in COLUMNS]  # the import reads the key, the first word


# ---------------------------------------------------------------- export


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
                      seed: int = 13) -> list[dict[str, Any]]:
    """A seeded sample, proportional to (task, gold label set) strata, with ``min_per_label`` of every
    (task, label) that has that many, so rare classes are rated at all.

    Minimums are filled rarest label first, so a multi-label post drawn for a rare label also counts
    for its other labels; the rest goes to the stratum furthest below its proportional share.
    The result is grouped by task, in seeded order inside a task (labels are not clustered).
    """
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    rank = {i: r for r, i in enumerate(order)}
    taken: set[int] = set(order[:n]) if n >= len(samples) else set()
    if len(taken) < min(n, len(samples)):
        by_label: dict[tuple[str, str], list[int]] = defaultdict(list)
        by_stratum: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in order:
            by_stratum[_stratum(samples[i])].append(i)
            for label in _label_keys(samples[i]):
                by_label[samples[i]["task"], label].append(i)
        for key in sorted(by_label, key=lambda k: (len(by_label[k]), k)):
            have = sum(1 for i in by_label[key] if i in taken)
            for i in by_label[key]:
                if have >= min_per_label:
                    break
                if i not in taken:
                    taken.add(i)
                    have += 1
        if len(taken) > n:
            raise ValidationSheetError(
                f"--n {n} is too small: a minimum of {min_per_label} per task and label over {len(by_label)} "
                f"(task, label) pairs needs {len(taken)} samples; raise --n or lower --per-task-label-min")
        share = {k: n * len(v) / len(samples) for k, v in by_stratum.items()}
        count = Counter(_stratum(samples[i]) for i in taken)
        queue = {k: [i for i in v if i not in taken] for k, v in sorted(by_stratum.items())}
        while len(taken) < n:
            key = max((k for k in queue if queue[k]), key=lambda k: share[k] - count[k])
            taken.add(queue[key].pop(0))
            count[key] += 1
    return [samples[i] for i in sorted(taken, key=lambda i: (samples[i]["task"], rank[i]))]


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


def instructions_text(rater: str) -> list[str]:
    """The rater-facing guide, Chinese then English, with every scale point spelled out."""
    lines = [
        f"评分员 / Rater: {rater}",
        "",
        "请在 samples 表中为每一行填写 consistency、reliability、professionalism、accept 四列（下拉选择），comment 可选。",
        "不要修改 sample_id、task、post、gold_label、explanation 列，也不要增删行；导入时按 sample_id 核对。",
        "帖子中的 [姓名]、[电话]、@[用户] 等为脱敏占位符，不算编造。解释仅供专业人员参考，不构成医学诊断。",
        "",
    ]
    lines += [f"{s.key}（{s.zh}）：{s.rule_zh}" for s in SCALES]
    lines += [
        "",
        "Fill consistency, reliability, professionalism and accept (dropdowns) for every row of the samples "
        "tab; comment is optional.",
        "Do not edit sample_id, task, post, gold_label or explanation, and do not add or delete rows: the "
        "import checks every sample_id.",
        "Placeholders such as [姓名], [电话] and @[用户] come from PII scrubbing and are not invented facts. "
        "Explanations are decision support, not a diagnosis.",
        "",
    ]
    lines += [f"{s.key}: {s.rule_en}" for s in SCALES]
    return lines


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


def export_round(source: Path, out: Path, *, n: int = 100, min_per_label: int = 2, seed: int = 13,
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


# ---------------------------------------------------------------- agreement


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def cohen_kappa(a: Sequence[int], b: Sequence[int], *, ordinal: bool, labels: Sequence[int]) -> float | None:
    """Two raters; quadratic weights for ordinal scales. ``labels`` fixes the distances to the full scale."""
    from sklearn.metrics import cohen_kappa_score

    if not a:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(a, b, labels=list(labels), weights="quadratic" if ordinal else None))


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> float | None:
    """Fleiss (1971): ``table[i][j]`` raters who put item i in category j; every item has as many raters."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (at least 2) of ratings for every item")
    m = raters[0]
    p_category = counts.sum(axis=0) / counts.sum()
    p_item = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_expected = p_item.mean(), float((p_category**2).sum())
    return None if p_expected == 1 else _finite((p_bar - p_expected) / (1 - p_expected))


def fleiss_table(matrix: np.ndarray, categories: Sequence[int]) -> np.ndarray:
    """Category counts per item from a raters x items matrix, keeping items that every rater rated."""
    complete = matrix[:, ~np.isnan(matrix).any(axis=0)]
    return np.array([[int((complete[:, i] == c).sum()) for c in categories] for i in range(complete.shape[1])])


def krippendorff_alpha(matrix: np.ndarray, *, level: Level, domain: Sequence[int]) -> float | None:
    """Raters x items with NaN for missing ratings; None when undefined (e.g. a single value everywhere)."""
    import krippendorff

    if (np.sum(~np.isnan(matrix), axis=0) >= 2).sum() == 0:
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return _finite(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                                              value_domain=list(domain)))
    except (ValueError, ZeroDivisionError):
        return None


def agreement(matrix: np.ndarray, scale: Scale) -> dict[str, Any]:
    """Cohen's kappa for two raters, Fleiss' kappa for more; Krippendorff's alpha for any number >= 2."""
    raters = matrix.shape[0]
    if raters < 2:
        return {}
    ordinal = scale.level == "ordinal"
    result: dict[str, Any] = {}
    if raters == 2:
        both = ~np.isnan(matrix).any(axis=0)
        a, b = (matrix[r, both].astype(int).tolist() for r in (0, 1))
        result["cohen_kappa"] = cohen_kappa(a, b, ordinal=ordinal, labels=scale.codes)
        result["cohen_weights"] = "quadratic" if ordinal else "none"
        result["items"] = int(both.sum())
    else:
        table = fleiss_table(matrix, scale.codes)
        result["fleiss_kappa"] = fleiss_kappa(table) if len(table) else None
        result["items"] = len(table)
    result["krippendorff_alpha"] = krippendorff_alpha(matrix, level=scale.level, domain=scale.codes)
    result["krippendorff_level"] = scale.level
    return result


# ---------------------------------------------------------------- report


def _matrix(sheets: Sequence[RatedSheet], ids: Sequence[str], key: str) -> np.ndarray:
    def code(sheet: RatedSheet, sample_id: str) -> float:
        value = sheet.ratings.get(sample_id, {}).get(key)
        return np.nan if value is None else float(value)

    return np.array([[code(s, i) for i in ids] for s in sheets], dtype=float).reshape(len(sheets), len(ids))


def decisions(sheets: Sequence[RatedSheet], ids: Sequence[str]) -> dict[str, str]:
    """accepted when strictly more than half of the raters who answered `accept` said yes (a tie rejects)."""
    votes = _matrix(sheets, ids, ACCEPT.key)
    result: dict[str, str] = {}
    for column, sample_id in enumerate(ids):
        answered = votes[~np.isnan(votes[:, column]), column]
        result[sample_id] = "unrated" if not len(answered) else (
            "accepted" if answered.sum() * 2 > len(answered) else "rejected")
    return result


def _group_report(sheets: Sequence[RatedSheet], ids: Sequence[str]) -> dict[str, Any]:
    verdicts = Counter(decisions(sheets, ids).values())
    rated = verdicts["accepted"] + verdicts["rejected"]
    means: dict[str, float | None] = {}
    for scale in SCALES:
        if scale.level == "ordinal":
            values = _matrix(sheets, ids, scale.key)
            means[scale.key] = round(float(np.nanmean(values)), 4) if (~np.isnan(values)).any() else None
    return {
        "samples": len(ids),
        "rated": rated,
        "accepted": verdicts["accepted"],
        "acceptance_rate": round(verdicts["accepted"] / rated, 4) if rated else None,
        "mean": means,
        "agreement": {s.key: agreement(_matrix(sheets, ids, s.key), s) for s in SCALES},
    }


def build_report(sheets: Sequence[RatedSheet], manifest: dict[str, Any], manifest_file: Path) -> dict[str, Any]:
    ids = [s["id"] for s in manifest["samples"]]
    by_task: dict[str, list[str]] = defaultdict(list)
    for sample in manifest["samples"]:
        by_task[sample["task"]].append(sample["id"])
    return {
        "manifest": str(manifest_file),
        "source": manifest["source"],
        "source_sha256": manifest["source_sha256"],
        "seed": manifest["seed"],
        "raters": [{"sheet": str(s.path), "incomplete_rows": s.incomplete,
                    "accept_rate": _group_report([s], ids)["acceptance_rate"]} for s in sheets],
        "majority_rule": "accepted when more than half of the raters who answered `accept` said yes",
        "overall": _group_report(sheets, ids),
        "per_task": {task: _group_report(sheets, task_ids) for task, task_ids in sorted(by_task.items())},
        "decisions": decisions(sheets, ids),
    }


def import_round(paths: Sequence[Path], manifest_file: Path, *,
                 allow_incomplete: bool = False) -> tuple[list[RatedSheet], dict[str, Any]]:
    """Read every rater's sheet against the manifest and build the report."""
    manifest = load_manifest(manifest_file)
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValidationSheetError("the same sheet is passed twice; give one completed sheet per rater")
    if not paths:
        raise ValidationSheetError("no sheets given")
    expected = {s["id"]: s["task"] for s in manifest["samples"]}
    sheets = [read_sheet(p, expected, allow_incomplete=allow_incomplete) for p in paths]
    return sheets, build_report(sheets, manifest, manifest_file)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{round(value, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def report_markdown(report: dict[str, Any]) -> str:
    """A short human-readable view of the JSON report (for the data card or a paper appendix)."""
    groups = {"overall": report["overall"], **report["per_task"]}
    lines = [
        "# Human validation report", "",
        f"Source `{report['source']}` (SHA-256 `{report['source_sha256'][:16]}…`), seed {report['seed']}, "
        f"{len(report['raters'])} rater(s). {report['majority_rule'].capitalize()}.", "",
        "| group | samples | rated | accepted | acceptance | " + " | ".join(
            f"{s.key} mean" for s in SCALES if s.level == "ordinal") + " |",
        "|---" * (5 + sum(s.level == "ordinal" for s in SCALES)) + "|",
    ]
    for name, group in groups.items():
        means = " | ".join(_fmt(v) for v in group["mean"].values())
        lines.append(f"| {name} | {group['samples']} | {group['rated']} | {group['accepted']} | "
                     f"{_fmt(group['acceptance_rate'])} | {means} |")
    if len(report["raters"]) >= 2:
        lines += ["", "## Agreement", "", "| group | scale | items | kappa | Krippendorff's alpha |",
                  "|---|---|---|---|---|"]
        for name, group in groups.items():
            for key, result in group["agreement"].items():
                kappa = result.get("cohen_kappa", result.get("fleiss_kappa"))
                kind = "Cohen" if "cohen_kappa" in result else "Fleiss"
                lines.append(f"| {name} | {key} | {result['items']} | {_fmt(kappa)} ({kind}) | "
                             f"{_fmt(result['krippendorff_alpha'])} ({result['krippendorff_level']}) |")
    lines += ["", "| sheet | incomplete rows | accept rate |", "|---|---|---|"]
    lines += [f"| {r['sheet']} | {r['incomplete_rows']} | {_fmt(r['accept_rate'])} |" for r in report["raters"]]
    return "\n".join(lines) + "\n"


def apply_decisions(source: Path, manifest: dict[str, Any], verdicts: dict[str, str], out: Path) -> int:
    """Write only the accepted samples of the file the sheets were drawn from (checked by SHA-256)."""
    actual = sha256_file(source) if source.is_file() else "missing"
    if actual != manifest["source_sha256"]:
        raise ValidationSheetError(
            f"{source}: SHA-256 {actual[:16]}… differs from the manifest's {manifest['source_sha256'][:16]}… "
            f"({manifest['source']}); pass the file the sheets were exported from")
    accepted = {i for i, verdict in verdicts.items() if verdict == "accepted"}
    return write_jsonl(out, (row for row in load_chat_jsonl(source) if row["id"] in accepted))
