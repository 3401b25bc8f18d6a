"""Human validation of C-IMHI answers: rating sheets out, expert ratings and agreement in.

The teacher LLM writes the explanations, so they are only trusted after experts rate a sample
of them, as the MentalGLM paper did. This module makes that step reproducible: a seeded sample
stratified by task and gold label, one identical sheet per rater, a manifest that ties the
sheets to the exact source file, and a report with acceptance rates, scale means and
inter-rater agreement (Cohen's kappa for two raters; Fleiss' kappa and Krippendorff's alpha
for three or more). The scales are in rubric.py, the sheets and manifest in sheets.py, the agreement statistics
in agreement.py; this module reads a completed round into its report and applies its decisions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.files import sha256_file, write_jsonl
from mentalglm.instruct.agreement import agreement
from mentalglm.instruct.rubric import ACCEPT, SCALES
from mentalglm.instruct.sheets import (
    RatedSheet,
    ValidationSheetError,
    load_chat_jsonl,
    load_manifest,
    read_sheet,
)


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
