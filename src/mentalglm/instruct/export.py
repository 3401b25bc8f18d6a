"""Write instruction samples as chat JSONL, Alpaca JSON and a Hugging Face ``datasets`` dataset.

Every text is PII-scrubbed on the way out (``data.pii``); counts of what was replaced are
returned so the dataset card can state them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mentalglm.data.instructions import Instruction
from mentalglm.data.pii import scrub
from mentalglm.files import atomic_write_text, write_jsonl
from mentalglm.instruct.grounding import without_change

FORMATS = ("chat", "alpaca", "hf")


def scrub_instruction(sample: Instruction, counts: Counter[str] | None = None) -> Instruction:
    """A copy of the sample with personal data replaced in every message and in the stored post."""
    counts = counts if counts is not None else Counter()

    def clean(text: str) -> str:
        result = scrub(text)
        counts.update(result.counts)
        return result.text

    messages = [{**m, "content": clean(m["content"]) if m["role"] != "system" else m["content"]}
                for m in sample.messages]
    meta = dict(sample.meta)
    if "post" in meta:  # the same text as in the user turn: scrub it, but count it once
        meta["post"] = scrub(meta["post"]).text
    explanation = clean(sample.explanation) if sample.explanation else sample.explanation
    return replace(sample, messages=messages, meta=meta, explanation=explanation)


def export_samples(samples: Sequence[Instruction], out_dir: Path, name: str,
                   formats: Sequence[str] = FORMATS, *, scrub_pii: bool = True) -> dict[str, Any]:
    """Export under ``out_dir`` as ``<name>.chat.jsonl``, ``<name>.alpaca.json`` and ``hf/<name>``."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    pii_counts: Counter[str] = Counter()
    if scrub_pii:
        samples = [scrub_instruction(s, pii_counts) for s in samples]
    written: dict[str, str] = {}
    if "chat" in formats:
        path = out_dir / f"{name}.chat.jsonl"
        write_jsonl(path, (s.to_chat() for s in samples))
        written["chat"] = str(path)
    if "alpaca" in formats:
        path = out_dir / f"{name}.alpaca.json"
        atomic_write_text(path, json.dumps([s.to_alpaca() for s in samples], ensure_ascii=False, indent=1))
        written["alpaca"] = str(path)
    if "hf" in formats:
        from datasets import Dataset

        path = out_dir / "hf" / name
        rows = [s.to_chat() for s in samples]
        for row in rows:  # Arrow needs one type per column: keep meta as a JSON string
            row["meta"] = json.dumps(row["meta"], ensure_ascii=False)
        Dataset.from_list(rows).save_to_disk(str(path))
        written["hf"] = str(path)
    return {"files": written, "rows": len(samples), "pii_replaced": dict(pii_counts)}


def export_explainer_rows(samples: Sequence[Instruction], prompts: dict[tuple[str, str], list[dict[str, str]]],
                          out_dir: Path, name: str) -> Path:
    """``<name>.explainer.jsonl``: for each accepted grounded sample, the prompt the hybrid engine sends for its post
    and gold labels, answered with the explanation the teacher wrote (QC-passed) up to its 如果-sentence, which the
    engine measures instead of asking. The rows an LLM is tuned on to explain as the teacher did (docs/backbone.md).
    ``prompts`` is keyed by (task, post id). Every turn but the system prompt is scrubbed here, as in the other
    formats, whether or not the teacher was sent a scrubbed post."""
    rows = []
    for sample in samples:
        prompt = prompts.get((sample.task, sample.id))
        if prompt is None or not sample.explanation:
            continue
        turns = [*prompt, {"role": "assistant", "content": without_change(sample.explanation)}]
        rows.append({"id": sample.id, "task": sample.task, "messages": [
            {**turn, "content": turn["content"] if turn["role"] == "system" else scrub(turn["content"]).text}
            for turn in turns]})
    path = out_dir / f"{name}.explainer.jsonl"
    write_jsonl(path, rows)
    return path
