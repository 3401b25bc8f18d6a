"""The comparison report: every system's results JSON, side by side with published numbers.

The report is built once as a list of blocks (headings, tables, figures) and rendered twice: as
Markdown with PNG files beside it (for the repository) and as one self-contained HTML page with
the PNGs inlined as base64 (to mail or attach). Every number comes from a results JSON written by
`mentalglm evaluate`, so the report can be regenerated at any time without running a model.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentalglm.errors import ConfigError
from mentalglm.evaluate.figures import confusion_figure, per_label_figure
from mentalglm.evaluate.judge import CRITERIA
from mentalglm.evaluate.predict import now_iso
from mentalglm.files import atomic_write_text
from mentalglm.tasks.pathway import PATHWAY_TASK_ID, SEPARATOR, pathway_parents
from mentalglm.tasks.registry import get_task
from mentalglm.tasks.schema import Task

SUMMARY_KEYS = ("system", "task", "split", "metric", "value", "ci95", "invalid_rate", "posts_per_s", "peak_rss_mb",
                "machine", "date")
NOTICE = ("Scores of research models on public datasets; the outputs of these systems are decision support, "
          "not a diagnosis.")


FAITHFULNESS = "faithfulness"  # the ``kind`` of `mentalglm faithfulness` result files


def load_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Results payloads of `mentalglm evaluate` (and `mentalglm faithfulness`), each with its file name under
    ``"_path"``."""
    loaded = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read a results JSON ({error})") from error
        faithfulness = isinstance(payload, dict) and payload.get("kind") == FAITHFULNESS
        if not faithfulness and (not isinstance(payload, dict) or "headline" not in payload.get("metrics", {})):
            raise ConfigError(f"{path}: not a results file of `mentalglm evaluate` (no metrics.headline) nor of "
                              "`mentalglm faithfulness`; predictions (.jsonl) must be scored with `mentalglm evaluate` "
                              "first")
        loaded.append({**payload, "_path": str(path)})
    return loaded


def machine_line(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "unknown"
    return f"{machine.get('cpu', '?')} ({machine.get('usable_cores') or machine.get('cores', '?')} cores)"


def summary_records(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per (system, task, split): the headline score and its cost."""
    records = []
    for r in results:
        if r.get("kind") == FAITHFULNESS:
            continue
        head, run = r["metrics"]["headline"], r["run"]
        records.append({
            "system": run["system"], "task": r["task"], "split": run["split"], "metric": head["metric"],
            "value": head["value"], "ci95": head["ci95"], "invalid_rate": head["invalid_rate"],
            "posts_per_s": r["metrics"].get("posts_per_s"), "peak_rss_mb": run.get("peak_rss_mb"),
            "machine": machine_line(run.get("machine")), "date": run.get("date"),
        })
    return records


# --- blocks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    kind: str  # heading | text | table | figure
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    png: bytes = b""
    name: str = ""


def _num(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: Sequence[float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _score_rows(task: Task, results: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in results:
        m, run = r["metrics"], r["run"]
        head, strict = m["headline"], m["strict"]
        invalid = f"{head['invalid_rate']:.3f} / {strict['n_invalid'] / m['n']:.3f}"
        n = f"{m['n']}" + (f" of {m['split_size']}" if m.get("split_size") and m["split_size"] != m["n"] else "")
        rows.append((run["system"], run["split"], n, _num(head["value"]) + _ci(head["ci95"]),
                     _num(strict[task.official_metric]), invalid, _num(m.get("posts_per_s"), 2),
                     _num(run.get("peak_rss_mb"), 0)))
    for published in task.published:
        rows.append((f"{published['system']} (published)", "test", "", _num(published["value"]), "", "", "", ""))
    return rows


_EXPLANATION_COLUMNS = (("n_explained", 0), ("mean_chars", 0), ("cjk_share", 3), ("quoting_share", 3),
                        ("grounded_share", 3), ("rouge_l_f", 4), ("bleu4", 4), ("bertscore_f1", 4),
                        ("label_consistency", 3), ("verifier_abstained", 0))


def _explanation_rows(results: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        scores = r["metrics"].get("explanations") or {}
        if scores.get("n_explained"):
            rows.append((r["run"]["system"], *(_num(scores.get(key), digits) for key, digits in _EXPLANATION_COLUMNS)))
    return rows


def _bertscore_note(results: Sequence[dict[str, Any]]) -> str:
    """Which encoder made bertscore_f1, or why a referenced run has none."""
    notes = set()
    for r in results:
        scores = r["metrics"].get("explanations") or {}
        if scores.get("bertscore_skipped"):
            notes.add(f"{r['run']['system']}: no bertscore_f1 ({scores['bertscore_skipped']})")
        elif scores.get("bertscore"):
            used = scores["bertscore"]
            notes.add(f"bertscore_f1: {used['model']}, layer {used['layer']}" + (", IDF" if used.get("idf") else "")
                      + (", rescaled" if used.get("baseline") else ""))
    return "; ".join(sorted(notes))


def _judge_rows(results: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        judged = r["metrics"].get("judge")
        if judged:
            rows.append((r["run"]["system"], f"{judged['spec']} (rubric v{judged['prompt_version']})",
                         f"{judged['n_valid']} / {judged['n_judged']}", _num(judged["invalid_rate"], 3),
                         *(_num(judged["mean"][c], 2) for c in CRITERIA), _num(judged["overall"], 2)))
    return rows


_LEVEL_COLUMNS = ("macro_f1", "parent_micro_f1", "parent_macro_f1", "child_micro_f1", "child_macro_f1")


def _files_check(result: dict[str, Any], pathway: dict[str, Any]) -> str:
    """Whether a results file was scored on the given test.txt and label.txt (by their SHA-256)."""
    recorded = result["run"].get("pathway_files_sha256") or {}
    if not recorded:
        return "not recorded"
    same = all(recorded.get(name) == pathway["files_sha256"].get(name) for name in ("test.txt", "label.txt"))
    return "these files" if same else "OTHER files"


def clinical_blocks(results: Sequence[dict[str, Any]], pathway: dict[str, Any]) -> list[Block]:
    """The clinical generalisation section: the user's pathway files, every pathway system at each level of the
    hierarchy beside the published number, and F1 per label."""
    task = get_task(PATHWAY_TASK_ID)
    parents = pathway_parents()
    digest = {name: value[:12] for name, value in pathway["files_sha256"].items()}
    blocks = [Block("heading", f"Clinical generalisation: {task.name_en} ({task.id}, {task.source})"),
              Block("text", "Beyond the Weibo tasks: sentences of posts labelled with the parts of a CBT cognitive "
                    f"pathway ({', '.join(parents)}) and {pathway['children']} children from the user's label.txt. "
                    f"Files: {pathway['dir']} (the user's copy; SHA-256 test.txt {digest.get('test.txt')}, label.txt "
                    f"{digest.get('label.txt')}). micro-F1 is flat over all labels with parents implied, the dataset "
                    "paper's headline; parent and child levels are scored apart. INVALID answers count as wrong; 95% "
                    "CIs: percentile bootstrap over sentences. " + NOTICE)]
    blocks.append(Block("table", header=("part", "sentences", *parents, "children used"), rows=tuple(
        (part["part"], str(part["rows"]), *(str(part["labels"][p]) for p in parents),
         str(sum(1 for label, n in part["labels"].items() if SEPARATOR in label and n)))
        for part in pathway["parts"])))
    rows: list[tuple[str, ...]] = []
    for r in results:
        m, run = r["metrics"], r["run"]
        head, strict = m["headline"], m["strict"]
        n = f"{m['n']}" + (f" of {m['split_size']}" if m.get("split_size") and m["split_size"] != m["n"] else "")
        rows.append((run["system"], n, _num(head["value"]) + _ci(head["ci95"]), _num(strict["micro_f1"]),
                     *(_num(m[head["mode"]].get(key)) for key in _LEVEL_COLUMNS),
                     f"{head['invalid_rate']:.3f} / {strict['n_invalid'] / m['n']:.3f}", _files_check(r, pathway)))
    for published in task.published:
        rows.append((f"{published['system']} (published)", "", _num(published["value"]), "", *[""] * 6, ""))
    blocks.append(Block("table", header=("system", "n", "micro-F1 (flexible) [95% CI]", "micro-F1 (strict)",
                                         *_LEVEL_COLUMNS, "invalid (flex / strict)", "scored on"),
                        rows=tuple(rows)))
    if task.citation:
        blocks.append(Block("text", f"Published numbers: {task.citation}"))
    if not results:
        blocks.append(Block("text", "No pathway system has been scored yet: `mentalglm pathway train --pathway-dir "
                            "DIR --out MODEL_DIR --results-dir results`, or `mentalglm pathway predict` then "
                            "`mentalglm pathway evaluate` (docs/pathway.md)."))
        return blocks
    labels = list(pathway["parts"][0]["labels"])
    per_system = []
    for r in results:
        per = r["metrics"][r["metrics"]["headline"]["mode"]]["per_label"]
        per_system.append({**per.get("parent", {}), **per.get("child", {})})
    blocks.append(Block("table", header=("label (F1, flexible)", *(r["run"]["system"] for r in results)), rows=tuple(
        (label, *(_num(per[label]["f1"]) if label in per else "–" for per in per_system)) for label in labels)))
    return blocks


def _ci_cell(block: dict[str, Any]) -> str:
    return "–" if block["mean"] is None else f"{block['mean']:.3f}{_ci(block['ci95'])}"


def _faithfulness_rows(faithful: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in faithful:
        c, s = r["comprehensiveness"], r["sufficiency"]
        rows.append((r["engine"], r.get("split", "?"), f"{r['n_scored']} / {r['n_posts']}", _ci_cell(c["evidence"]),
                     _ci_cell(c["random_clauses"]), _ci_cell(c["evidence_minus_random"]), _ci_cell(s["evidence"]),
                     _ci_cell(s["random_clauses"]), _num(r["quotes_found_in_post"]["mean"], 3),
                     _num(r["verifier_agrees"]["rate"], 3)))
    return rows


def report_blocks(results: Sequence[dict[str, Any]], pathway: dict[str, Any] | None = None) -> list[Block]:
    """``pathway`` (evaluate/pathway.py ``report_context``) adds the clinical generalisation section, which then
    holds the cognitive pathway results."""
    n_files = len(results)
    faithful: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r.get("kind") == FAITHFULNESS:
            faithful[r["task"]].append(r)
    results = [r for r in results if r.get("kind") != FAITHFULNESS]
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_task[r["task"]].append(r)
    clinical = by_task.pop(PATHWAY_TASK_ID, []) if pathway is not None else []
    for task_id in faithful:
        by_task.setdefault(task_id, [])
    blocks = [Block("heading", "MentalGLM evaluation report"),
              Block("text", f"Generated {now_iso()} from {n_files} results file(s). {NOTICE} Headline scores "
                    "read answers with the flexible parser; strict (format compliance included) is shown beside "
                    "them. INVALID answers count as wrong. 95% CIs: percentile bootstrap over posts.")]
    for task_id, task_results in by_task.items():
        task = get_task(task_id)
        metric = task.official_metric
        blocks.append(Block("heading", f"{task.name_en} ({task.id}, {task.source})"))
        if task_results:
            blocks.append(Block("table", header=("system", "split", "n", f"{metric} (flexible) [95% CI]",
                                                 f"{metric} (strict)", "invalid (flex / strict)", "posts/s",
                                                 "peak RSS MB"), rows=tuple(_score_rows(task, task_results))))
        if task.published and task.citation:
            blocks.append(Block("text", f"Published numbers: {task.citation}"))
        explained = _explanation_rows(task_results)
        if explained:
            blocks.append(Block("table", header=("system", *(key for key, _ in _EXPLANATION_COLUMNS)),
                                rows=tuple(explained)))
            if _bertscore_note(task_results):
                blocks.append(Block("text", _bertscore_note(task_results) + "."))
        if faithful.get(task_id):
            blocks.append(Block("text", "Faithfulness of the quoted evidence (ERASER, DeYoung et al. 2020): "
                                "comprehensiveness = drop of the decided label's probability when the evidence is "
                                "removed (higher: the decision rests on it), sufficiency = drop when only the evidence "
                                "is kept (lower: it is enough), each against random clauses of about the same length; "
                                "mean [95% bootstrap CI] over posts with a decided label and evidence."))
            blocks.append(Block("table", header=("engine", "split", "scored / posts", "comprehensiveness",
                                                 "random clauses", "difference", "sufficiency", "random clauses",
                                                 "quotes found", "verifier agrees"),
                                rows=tuple(_faithfulness_rows(faithful[task_id]))))
        judged = _judge_rows(task_results)
        if judged:
            blocks.append(Block("text", "LLM judge of the explanations: means (1-5) over its valid answers; an "
                                "answer without four integer scores in range is invalid. Judge scores are a "
                                "model's opinion, not an expert rating."))
            blocks.append(Block("table", header=("system", "judge", "valid / judged", "invalid rate", *CRITERIA,
                                                 "overall"), rows=tuple(judged)))
        if task_results:
            blocks.append(Block("figure", f"{task.id}: per-label F1", png=per_label_figure(task, task_results),
                                name=f"{task.id}-per-label-f1.png"))
        if not task.is_multi_label:
            for i, r in enumerate(task_results):
                blocks.append(Block("figure", f"{task.id} · {r['run']['system']}: confusion matrix",
                                    png=confusion_figure(task, r), name=f"{task.id}-confusion-{i}.png"))
    if pathway is not None:
        blocks.extend(clinical_blocks(clinical, pathway))
    blocks.append(Block("heading", "Run metadata"))
    blocks.append(Block("table", header=("system", "task", "date", "machine", "config sha256", "data sha256",
                                         "predictions sha256", "mentalglm"),
                        rows=tuple((r["run"]["system"], r["task"], str(r["run"].get("date")),
                                    machine_line(r["run"].get("machine")),
                                    (r["run"].get("config_sha256") or "–")[:12], (r["run"].get("data_sha256") or "–")[:12],
                                    (r["run"].get("predictions_sha256") or "–")[:12], str(r.get("mentalglm_version")))
                                   for r in results)))
    return blocks


# --- rendering -------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], figure_dir: str = "figures") -> str:
    lines: list[str] = []
    first = True
    for block in blocks:
        if block.kind == "heading":
            lines += [("# " if first else "## ") + block.text, ""]
            first = False
        elif block.kind == "text":
            lines += [block.text, ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "figure":
            lines += [f"![{block.text}]({figure_dir}/{block.name})", ""]
    return "\n".join(lines)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
          "th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}")


def to_html(blocks: Sequence[Block]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>MentalGLM report</title>"
             f"<style>{_STYLE}</style></head><body>"]
    first = True
    for block in blocks:
        if block.kind == "heading":
            tag = "h1" if first else "h2"
            parts.append(f"<{tag}>{html.escape(block.text)}</{tag}>")
            first = False
        elif block.kind == "text":
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.text)}">'
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: Sequence[dict[str, Any]], out_dir: Path,
                 pathway: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``out_dir/report.md`` with ``figures/*.png`` beside it, and the self-contained ``report.html``."""
    if not results:
        raise ConfigError("no results to report: pass results JSON files written by `mentalglm evaluate`")
    blocks = report_blocks(results, pathway)
    for block in blocks:
        if block.kind == "figure":
            target = out_dir / "figures" / block.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(block.png)
    markdown = atomic_write_text(out_dir / "report.md", to_markdown(blocks))
    page = atomic_write_text(out_dir / "report.html", to_html(blocks))
    return markdown, page
