"""The backbone tier's model card: a Hugging Face ``README.md`` written beside the weights, from what was measured.

Every number on the card is read from a file a command wrote (``backbone.json`` and the run's ``run.json``,
the analyzer's test results, the speed benchmark, the explanation benchmark); a part that was not measured says so
and gives the command that measures it. Nothing is typed in by hand.

    mentalglm backbone card --backbone runs/backbone-l12/best --results-dir results
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task

CARD_FILE = "README.md"
RESULTS_NAME = "analyzer-backbone"  # the run name `analyze-train --backbone --results-dir` scores test under
BASE_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # the embedded GGUF's upstream (../shared/MODELS.md)

LIMITATIONS = (
    "Decision support for professionals, not a diagnosis; a post's labels say what its wording resembles in the "
    "training data, not what its author has.",
    "Trained on public Weibo datasets whose posters are mostly from clinical or help-seeking communities; the "
    "analyzer's screens (not the heads) decide whether an ordinary post shows anything at all.",
)
EXPLAINER_LIMITATION = ("The explaining layers are distilled from a 1.5B teacher's QC-passed explanations of a few "
                        "hundred posts; an explanation is shown only after the analyzer's QC and verifier, and is no "
                        "clinical reasoning.")
SMALL_VALIDATION = 200  # fewer validation posts than this: the card calls the task's validation metric rough


@dataclass(frozen=True)
class CardSources:
    """The files a card is written from; None where a part was not measured."""

    backbone: Path
    results_dir: Path | None = None
    bench: Path | None = None
    explanations: Path | None = None
    analyzer: Path | None = None
    results_name: str = RESULTS_NAME
    missing: list[str] = field(default_factory=list)


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _ci(interval: Any) -> str:
    return f"[{_f(interval[0])}, {_f(interval[1])}]" if interval else ""


def _front_matter() -> str:
    tags = ["mental-health", "chinese", "text-classification", "lora", "mentalglm", "weibo"]
    return "\n".join(["---", "language:", "- zh", "library_name: peft", f"base_model: {BASE_MODEL}",
                      "pipeline_tag: text-classification", "tags:", *[f"- {t}" for t in tags],
                      "---", ""])


def _recipe(meta: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    settings = run or {}  # run.json: the BackboneSettings the run was started with, flat
    rows = [("base", f"{meta['base']} ({BASE_MODEL}, dequantised to float32)"),
            ("layers read", str(meta.get("layers") or "all")),
            ("pooling", f"{meta.get('pooling', 'mean')} of the last hidden states after the final norm"),
            ("max tokens", str(meta.get("max_length", "–"))), ("checkpoint kept", f"step {meta.get('step', '–')}")]
    for key in ("lora_rank", "lora_alpha", "lora_dropout", "steps", "batch_size", "lr", "head_lr", "warmup_steps",
                "task_weights", "seed"):
        if key in settings:
            rows.append((key.replace("_", " "), str(settings[key])))
    start = meta.get("init_from") or settings.get("init_from")
    if start:
        kept = meta.get("step", meta.get("best_step"))
        rows.append(("trained on from", f"a saved backbone: adapter `{start['adapter_sha256'][:16]}…`, heads "
                                        f"`{start['heads_sha256'][:16]}…` "
                     + ("(the start was kept: no step of this run beat it on validation)" if kept == 0
                        else "(the steps above came after its own)")))
    lines = ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    if run is None:
        lines.append("\n(The run's `run.json` was not beside this copy: the training settings above are the "
                     "saved model's only.)")
    return lines


def _fingerprints(run: dict[str, Any] | None) -> list[str]:
    """The SHA-256 of each task's training and validation posts as the run read them (``run.json``)."""
    data = (run or {}).get("data") or {}
    if not data:
        return ["(No `run.json` beside this copy: the data's fingerprints are not known here.)"]
    return ["| task | training posts, SHA-256 | validation posts, SHA-256 |", "|---|---|---|",
            *[f"| {task} | `{parts.get('train', '–')[:16]}…` | `{parts.get('validation', '–')[:16]}…` |"
              for task, parts in data.items()]]


def _validation(meta: dict[str, Any]) -> list[str]:
    lines = ["| task | metric | validation | posts |", "|---|---|---|---|"]
    for task_id, record in meta.get("validation", {}).items():
        if task_id == "mean" or not isinstance(record, dict):
            continue
        lines.append(f"| {task_id} | {get_task(task_id).official_metric} | {_f(record.get('value'))} | "
                     f"{record.get('posts', '–')} |")
    return lines


def _test(meta: dict[str, Any], sources: CardSources) -> list[str]:
    if sources.results_dir is None:
        return ["Not scored here: `mentalglm analyze-train --backbone DIR --out ARTIFACTS --results-dir results` "
                "scores test once, then `--results-dir results` writes it on this card."]
    lines = ["| task | metric | test, through the analyzer (95 % CI) | posts | head kept by the analyzer | published |",
             "|---|---|---|---|---|---|"]
    for task_id in meta["tasks"]:
        task = get_task(task_id)
        result = _read_json(sources.results_dir / f"{task_id}.test.{sources.results_name}.results.json")
        published = "; ".join(f"{p['value']:.3f} ({p['system']})" for p in task.published
                              if p.get("metric") == task.official_metric) or "–"
        if result is None:
            sources.missing.append(f"{task_id} test results")
            lines.append(f"| {task_id} | {task.official_metric} | not scored | – | {_kept(task_id, sources)} | "
                         f"{published} |")
            continue
        headline = result["metrics"]["headline"]
        posts = result["metrics"].get("strict", {}).get("n", "–")
        lines.append(f"| {task_id} | {task.official_metric} | {_f(headline['value'])} {_ci(headline.get('ci95'))} | "
                     f"{posts} | {_kept(task_id, sources)} | {published} |")
    lines.append("\nEach head is averaged with the task's TF-IDF model, and the average is kept only where it beats "
                 "the tier chosen before it on >= 95 % of paired validation resamples; a task whose head was not kept "
                 "is scored with the tier that was (`--analyzer ARTIFACTS` fills the column from its model cards).")
    return lines


def _kept(task_id: str, sources: CardSources) -> str:
    """Whether the analyzer kept the task's head (its model card: ``backbone`` or ``backbone_rejected``)."""
    card = _read_json(sources.analyzer / f"{task_id}.card.json") if sources.analyzer else None
    if card is None:
        return "–"
    if card.get("backbone"):
        return f"yes (weight {card['backbone'].get('weight_on_tfidf')} on TF-IDF)"
    return "no: scored with the tier chosen before it" if card.get("backbone_rejected") else "–"


def _limitations(meta: dict[str, Any], explains: bool) -> list[str]:
    lines = [*LIMITATIONS, f"The heads read the first {meta.get('max_length', '?')} tokens of a post; longer posts "
                           "are cut."]
    for task_id, record in meta.get("validation", {}).items():
        if isinstance(record, dict) and record.get("posts", SMALL_VALIDATION) < SMALL_VALIDATION:
            lines.append(f"{task_id}'s validation metric rests on {record['posts']} posts: read it as rough.")
    if explains:
        lines.append(EXPLAINER_LIMITATION)
    return [f"- {line}" for line in lines]


def _engines(meta: dict[str, Any], bench: dict[str, Any] | None) -> list[str]:
    lines = ["| engine | pooled cosine to float32, min | identical labels |", "|---|---|---|"]
    checks = [("torch int8 (gate, up)", meta.get("int8"))] + [(f"llama.cpp {name}", record) for name, record in
                                                              (meta.get("gguf") or {}).items()]
    for name, record in checks:
        if record:
            lines.append(f"| {name} | {_f(record['cosine_min'], 4)} | {record['same_labels']:.1%} |")
    if bench is None:
        lines.append("\nSpeed not measured for this copy: `python benchmarks/bench_backbone.py --backbone DIR`.")
        return lines
    machine = bench.get("machine", {})
    lines += ["", f"Speed (`benchmarks/bench_backbone.py`, {machine.get('cpu', '?')}, "
                  f"{machine.get('usable_cores', machine.get('cores', '?'))} usable cores, {bench.get('threads') or '?'} threads, {bench.get('when', '?')[:10]}, median of passes):", "",
              "| engine | cold start (s) | posts/s, all heads | peak RSS (GB) |", "|---|---|---|---|"]
    for engine in bench.get("engines", []):
        lines.append(f"| {engine['engine']} | {engine['cold_start_s']} | {engine['posts_per_s']} | "
                     f"{engine['peak_rss_gb']} |")
    return lines


def _explanations(record: dict[str, Any] | None, meta: dict[str, Any]) -> list[str]:
    attached = meta.get("explainer")
    status = [f"Attached: `{attached['file']}` (backbone.json `explainer`); an analyzer on this backbone explains with it "
              "where the backend is left at llamacpp:default." if attached else
              "No explainer attached to this copy: an analyzer on it explains with the untuned embedded 0.5B "
              "(`mentalglm backbone explainer` attaches one).", ""]
    if record is None:
        return [*status, "Not measured for this copy: `python benchmarks/hybrid_explanations.py --backend llamacpp:GGUF "
                "--artifacts-dir ARTIFACTS --out FILE`, then `--explanations FILE` here."]
    lines = [*status, f"`benchmarks/hybrid_explanations.py`, backend `{record.get('backend')}`, {record.get('per_task')} "
             f"{record.get('split', 'validation')} posts a task, {record.get('regenerate')} redraws allowed:", "",
             "| task | first draws passing QC and verifier | kept after redraws | verifier agrees (kept) | "
             "quotes found | median s |", "|---|---|---|---|---|---|"]
    for task_id, row in record.get("results", {}).items():
        first = (row.get("kept_within_attempts") or {}).get("1", (row.get("kept_within_attempts") or {}).get(1))
        lines.append(f"| {task_id} | {_pct(first)} | {_pct(row.get('llm_kept'))} | "
                     f"{_pct(row.get('kept_verifier_agrees_of_all'))} | {_pct(row.get('shown_quotes_found'))} | "
                     f"{row.get('seconds_median', '–')} |")
    return lines


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def render_card(sources: CardSources) -> str:
    """The card's Markdown (front matter included)."""
    from mentalglm.train.backbone_model import read_backbone_meta

    sources.missing.clear()  # what this rendering could not find
    meta = read_backbone_meta(sources.backbone)
    explained = _read_json(sources.explanations)
    run = _read_json(sources.backbone.parent / "run.json")
    heads = ", ".join(f"{task} ({len(spec['classes'])} {'sigmoid' if spec['multi_label'] else 'softmax'} outputs)"
                      for task, spec in meta["tasks"].items())
    parts = [_front_matter(), "# MentalGLM backbone tier (Qwen2.5-Coder-0.5B + LoRA, one head per task)", "",
             "One LoRA adapter on the embedded Qwen2.5-Coder-0.5B-Instruct shared by every task, and one linear head "
             f"per task over the mean-pooled hidden state: {heads}. A post is read once for all heads. Part of "
             "MentalGLM, explainable mental-health analysis of Chinese social-media posts; it labels, the analyzer "
             "screens, calibrates and explains.", "",
             "## Intended use", "",
             "Research on Chinese social-media posts and decision support for the clinicians and platform analysts "
             "who work with researchers: `mentalglm analyze --artifacts-dir ARTIFACTS` with the analyzer trained "
             "on this backbone. Not for diagnosis, not for decisions about a person without a professional.", "",
             "## Data and decontamination", "",
             "Each task's training pool from the public datasets the task declares (`mentalglm tasks show TASK`), "
             "with every post that also occurs in a validation or test split removed (docs/data.md, "
             "`canonical_splits`); suicide risk adds the invented low / high screen posts. Validation chose the "
             "checkpoint and thresholds; test was scored once.", "", *_fingerprints(run), "",
             "## Recipe", "", *_recipe(meta, run), "",
             "## Validation (the run's own, heads alone)", "", *_validation(meta), "",
             "## Test", "", *_test(meta, sources), "",
             "## Engines and speed", "", *_engines(meta, _read_json(sources.bench)), "",
             "## Explanations", "", *_explanations(explained, meta), "",
             "## Limitations", "", *_limitations(meta, bool(meta.get("explainer"))), ""]
    return "\n".join(parts)


def write_card(sources: CardSources) -> Path:
    """Write ``README.md`` into the backbone directory and return its path."""
    path = sources.backbone / CARD_FILE
    atomic_write_text(path, render_card(sources))
    return path
